"""Why the `default` network's layer-1 filters stay noisy (issue #14): proxy runs, one per hypothesis.

Each recipe is the `default` profile with a few fields overridden, trained with the package's own
``zfrepro.train.train`` for a short, equal budget (``--epochs``, the one-cycle schedule compressed to it),
then measured on the validation split with the package's own measures:

- conv1 structure: median R² of the Gabor/blob fit of each filter's dominant colour pattern, and the
  share of filters with R² ≥ 0.6 (``zfrepro.structure.summarize_structure``);
- conv1 filter RMS (median; the renormalisation radius is 0.1);
- projection noise per layer: median over 6 maps × 9 top activations of the projection's
  high-frequency share over its patch's (``zfrepro.structure.projection_noise``; ~1 = as smooth as the image);
- val top-1 (centre crop) of the final network and the median seconds per epoch (training + centre-crop
  validation; the last epoch, which runs the final evaluation, left out).

    ZFREPRO_DATA=/path/to/imagenette python benchmarks/conv1_recipes.py RUNS_DIR [--epochs 4] [--eval-crops 1] NAME [NAME ...]

Runs are resumable (a finished one is only measured). One JSON row per recipe is appended to
``benchmarks/conv1_recipes.jsonl``; ``--table`` prints that file as the Markdown table in the README.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from zfrepro.config import get_profile  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.models import get_layer, load_checkpoint  # noqa: E402
from zfrepro.aliasing import filter_rms  # noqa: E402
from zfrepro.structure import summarize_structure  # noqa: E402
from zfrepro.top_units import median_projection_noise  # noqa: E402
from zfrepro.evaluation import evaluate  # noqa: E402
from zfrepro.runs import list_snapshots  # noqa: E402
from zfrepro.train import train  # noqa: E402

#: Recipes: the `default` profile's fields that each hypothesis changes.
RECIPES: dict[str, dict[str, object]] = {
    "base": {"init": "kaiming"},                           # the `default` recipe before issue #14 (He conv1)
    "start-small": {"init": "hybrid"},                     # conv1 N(0, 1e-2): start : radius = 1 : 10 (the paper's)
    "decay-conv1": {"first_decay_mult": 50.0},             # conv1 weight decay 2.5e-2: the random start decays
    "start-small-lr10": {"init": "hybrid", "first_lr_mult": 10.0},
    "start-small-decay": {"init": "hybrid", "first_decay_mult": 50.0},
    "lr10": {"first_lr_mult": 10.0},
    "radius-x4": {"renorm_radius": 0.4},                   # radius far above the He start (0.117)
    "batch32": {"batch_size": 32, "lr": 0.01},             # twice the updates in the same epochs
    # conv2-5 speckle (on the current default, conv1 already N(0, 1e-2)):
    "default": {},                                         # the `default` recipe as committed now
    "conv-start-x0.25": {"conv_init_mult": 0.25},          # conv2-5 start 1/4 of He: less random start left
    "conv-lr-x3": {"conv_lr_mult": 3.0},                   # conv2-5 learn 3x faster: more learned energy
    "conv-decay-x20": {"conv_decay_mult": 20.0},           # conv2-5 weight decay 1e-2: the start decays faster
    "conv1-decay-x20": {"first_decay_mult": 20.0},         # a cleaner conv1 (its non-Gabor residue decays): 22 epochs
}
OUT = Path(__file__).with_name("conv1_recipes.jsonl")


def measure(run_dir: Path, name: str, epochs: int) -> dict[str, object]:
    """The row of one finished proxy run."""
    prof = get_profile("default", epochs=epochs, eval_crops=1, **RECIPES[name])
    model = load_checkpoint(list_snapshots(run_dir)[epochs]).eval()
    struct = summarize_structure(get_layer(model, "conv1").weight)
    val = load_split(prof, "val", progress=False)
    noise = median_projection_noise(model, val, maps_per_layer=6, k=9, seed=0)
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {"recipe": name, "overrides": RECIPES[name], "epochs": epochs,
            "conv1_median_r2": round(struct["median_r2"], 3), "conv1_share_r2_0.6": round(struct["share_structured"], 3),
            "conv1_rms": round(float(filter_rms(get_layer(model, "conv1").weight).median()), 4),
            "projection_noise": noise, "val_top1": round(evaluate(model, prof, crops=1)["top1"], 4),
            "s_per_epoch": round(statistics.median(float(r["seconds"]) for r in rows[:-1] or rows), 1)}


def table(path: Path = OUT) -> str:
    """The Markdown table of every row in ``path``."""
    lines = ["| recipe | changes | epochs | conv1 median R² | conv1 R² ≥ 0.6 | conv1 RMS | projection noise conv1-5 "
             "| val top-1 | s/epoch |", "|---|---|---|---|---|---|---|---|---|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ch = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "—"
        pn = " / ".join(f"{v:.2f}" for v in r["projection_noise"].values())
        lines.append(f"| {r['recipe']} | {ch} | {r['epochs']} | {r['conv1_median_r2']:.2f} | "
                     f"{100 * r['conv1_share_r2_0.6']:.0f} % | {r['conv1_rms']:.3f} | {pn} | "
                     f"{100 * r['val_top1']:.1f} % | {r['s_per_epoch']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="?", type=Path)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--eval-crops", type=int, default=1, help="crops of the run's own final evaluation (1 or 10)")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args(argv)
    if a.table:
        print(table())
        return 0
    for name in a.names:
        if name not in RECIPES:
            ap.error(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
        run_dir = a.runs / name
        train("default", out_dir=run_dir, progress=False, epochs=a.epochs, snapshot_epochs=(a.epochs,),
              eval_crops=a.eval_crops, **RECIPES[name])
        row = measure(run_dir, name, a.epochs)
        print(json.dumps(row), flush=True)
        with open(OUT, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
