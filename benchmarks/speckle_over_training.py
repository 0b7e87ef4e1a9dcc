"""Does the conv2-5 speckle fade with training? (issue #14; the committed run's own snapshots, no training)

For each snapshot of a finished run (``default``: its snapshot epochs), the projection noise per layer
(median over 6 maps x 9 top activations on the validation split of the projection's high-frequency share
over its patch's; ``zfrepro.structure.projection_noise``, ~1 = as smooth as its patch) and the share of each
conv layer's weight energy still along its random start, (<W, W0>/|W0|)^2 / |W|^2.

    ZFREPRO_DATA=... python benchmarks/speckle_over_training.py [PROFILE]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from zfrepro.data import load_split  # noqa: E402
from zfrepro.models import get_layer, load_checkpoint  # noqa: E402
from zfrepro.top_units import median_projection_noise  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.runs import list_snapshots, run_dir_for  # noqa: E402
from zfrepro.train import build_network  # noqa: E402

OUT = Path(__file__).with_name("speckle_over_training.jsonl")


def start_share(model: torch.nn.Module, start: torch.nn.Module, name: str) -> float:
    w, w0 = get_layer(model, name).weight.detach().double(), get_layer(start, name).weight.detach().double()
    return float(((w * w0).sum() / w0.norm()) ** 2 / w.pow(2).sum())


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    prof, arch = resolve_profile(profile)
    snaps = list_snapshots(run_dir_for(prof, arch))
    val = load_split(prof, "val", progress=False)
    for epoch, path in sorted(snaps.items()):
        model = load_checkpoint(path).eval()
        torch.manual_seed(prof.seed)
        start = build_network(prof, arch, model.spec["num_classes"])
        noise = median_projection_noise(model, val, maps_per_layer=6, k=9, seed=0)
        row = {"profile": profile, "run_epochs": prof.epochs, "epoch": epoch, "projection_noise": noise,
               "start_energy_share": {n: round(start_share(model, start, n), 3) for n in noise}}
        print(json.dumps(row), flush=True)
        with open(OUT, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
