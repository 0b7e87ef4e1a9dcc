"""Dataset scan (Fig. 2's top-9 search over every conv layer) vs. a plain no-grad forward pass
through the same convolutional stack.

Both run over the same model-ready validation images, in the same batches, side by side in one run
(alternating blocks so that other load on a shared machine hits both alike). The scan does one forward
per batch for all five layers and keeps a running top-k per feature map. Goal: the scan costs at most
15 % over inference (ratio scan / forward ≤ 1.15).

    python benchmarks/bench_scan.py [--quick] [--profile default] [--images N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro.config import get_profile  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.models import init_weights, zfnet  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402

GOAL = 1.15


def run(quick: bool = False, *, profile: str = "default", images: int | None = None, batch_size: int = 64,
        rounds: int = 2, data_root: str | None = None, verbose: bool = True) -> list[dict]:
    """Seconds for the scan (k=9, conv1-conv5) and for a plain forward over the same images."""
    prof = get_profile(profile)
    val = load_split(prof, "val", data_root, progress=False)
    n = images or (256 if quick else 1024)
    data = Subset(val, range(min(n, len(val))))
    torch.manual_seed(0)
    model = init_weights(zfnet(len(val.classes), prof.input_size, prof.width, prof.fc_width), "kaiming").eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    batches = [x for x, _ in loader]  # decode/normalise once: both sides get identical tensors

    def forward() -> float:
        # inference through the convolutional stack (the scan needs nothing past conv5 and stops there,
        # so comparing with the whole network, fc layers included, would flatter it)
        t = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                model.features(x)
        return time.perf_counter() - t

    def scan() -> float:
        t = time.perf_counter()
        top_activations(model, [(x, None) for x in batches], layers=[f"conv{i}" for i in range(1, 6)], k=9,
                        progress=False)
        return time.perf_counter() - t

    forward(), scan()  # warm up
    f = s = 0.0
    for _ in range(rounds):
        f += forward()
        s += scan()
    ratio = s / f
    row = {"what": f"scan conv1-5, k=9, {len(data)} images at {prof.input_size}px", "scan_s": round(s / rounds, 3),
           "forward_s": round(f / rounds, 3), "ratio": round(ratio, 3), "goal": f"<= {GOAL}", "pass": ratio <= GOAL}
    if verbose:
        print(f"{'what':45s} {'scan s':>8s} {'forward s':>10s} {'ratio':>6s} {'goal':>7s} pass")
        print(f"{row['what']:45s} {row['scan_s']:8.3f} {row['forward_s']:10.3f} {row['ratio']:6.3f} "
              f"{row['goal']:>7s} {row['pass']}")
    return [row]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args()
    run(a.quick, profile=a.profile, images=a.images, data_root=a.data_root)
