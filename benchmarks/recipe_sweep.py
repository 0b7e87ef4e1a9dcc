"""The recipe search behind the `default` profile (issue #3), run through the package's own trainer.

Each configuration is the profile *as it was before the search* (``BASE``: He init everywhere, conv1 lr ×10,
batch 128, random-resized crops, dropout 0.5) with some fields overridden. It is trained by
:func:`zfrepro.train.train` — the same step, schedule, renormalisation and data pipeline that ``zfrepro train``
ships, on whatever device ``--device`` names — into its own run directory under ``RUNS``, and measured by
:func:`zfrepro.evaluation.evaluate`: val top-1 with the centre crop after each snapshot epoch, and at the end with
the paper's 10 crops. So the recipe that ships is chosen by the code that ships it.

    ZFREPRO_DATA=... python benchmarks/recipe_sweep.py RUNS OUT.jsonl [--device cuda] [--epochs N] CFG [CFG ...]

CFG indexes ``CONFIGS`` (profile-field overrides of ``BASE``). ``benchmarks/recipe_sweep.jsonl`` holds the rows
of the search made on 2026-11-28 (one H200) by an earlier, standalone version of this script whose keys
(``mult``, ``bs``, ``aug``, ...) name the same fields; its findings are the README's recipe table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zfrepro.config import get_profile  # noqa: E402
from zfrepro.evaluation import evaluate  # noqa: E402
from zfrepro.models import load_checkpoint  # noqa: E402
from zfrepro.runs import list_snapshots  # noqa: E402
from zfrepro.train import train  # noqa: E402

#: The `default` recipe before the search, as overrides of today's `default` profile.
BASE: dict[str, object] = dict(init="kaiming", first_lr_mult=10.0, batch_size=128, augment="rrc-flip", dropout=0.5)
#: The configurations of the search (profile fields on top of BASE); the last ones are today's `default`.
CONFIGS: list[dict[str, object]] = [
    {}, {"seed": 1}, {"first_lr_mult": 1.0}, {"batch_size": 64}, {"batch_size": 64, "lr": 0.01},
    {"batch_size": 32, "lr": 0.01}, {"lr": 0.04}, {"lr": 0.01}, {"weight_decay": 1e-4}, {"weight_decay": 1e-3},
    {"augment": "crop-flip"}, {"label_smoothing": 0.0}, {"epochs": 30}, {"first_lr_mult": 3.0},
    {"width": 0.75, "epochs": 12}, {"fc_width": 2048}, {"dropout": 0.3}, {"renorm": False},
    {"batch_size": 64, "first_lr_mult": 3.0, "augment": "crop-flip"},
    {"batch_size": 64, "first_lr_mult": 3.0, "augment": "crop-flip", "dropout": 0.3},
    {"batch_size": 64, "first_lr_mult": 3.0, "augment": "crop-flip", "dropout": 0.3, "seed": 1},
]


def run(runs: Path, ci: int, device: str, epochs: int | None) -> dict[str, object]:
    """Train configuration ``ci`` (resuming a run already there) and measure it."""
    over = dict(BASE, **CONFIGS[ci])
    if epochs is not None:
        over["epochs"] = epochs
    prof = get_profile("default", **over)
    t0 = time.time()
    run_dir = train(prof, out_dir=runs / f"cfg{ci:02d}", device=device, progress=False)
    snaps = list_snapshots(run_dir)
    val = [(e, round(evaluate(load_checkpoint(p), prof, crops=1, device=device)["top1"], 4)) for e, p in snaps.items()]
    final = load_checkpoint(snaps[prof.epochs])
    return {"cfg": ci, "overrides": CONFIGS[ci], "epochs": prof.epochs, "val_center": val,
            "final_10crop": round(evaluate(final, prof, crops=10, device=device)["top1"], 4),
            "seconds": round(time.time() - t0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="a folder for the runs (one per configuration)")
    ap.add_argument("out", type=Path, help="JSON lines file to append the rows to")
    ap.add_argument("cfgs", nargs="+", type=int, help=f"indices into CONFIGS (0-{len(CONFIGS) - 1})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None, help="override every configuration's epochs (a quick check)")
    a = ap.parse_args(argv)
    bad = [c for c in a.cfgs if not 0 <= c < len(CONFIGS)]
    if bad:
        ap.error(f"no configuration {bad}: use 0-{len(CONFIGS) - 1}")
    for ci in a.cfgs:
        row = run(a.runs, ci, a.device, a.epochs)
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
