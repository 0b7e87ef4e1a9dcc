"""Why Table 7's accuracy falls with depth for our network (issue #14): Table 7 on the snapshots of
the one `default` run, one fold at 30 per class, with each layer's effective dimension.

Hypothesis: a network trained on Imagenette's 10 classes specialises its upper layers to those
classes, so on Caltech-101 their features spread over only a few directions and a 101-way linear
classifier on them gets worse as training goes on, while the lower layers' generic features get
better. Refuted if fc6/fc7's accuracy does not fall (or their effective dimension does not shrink)
from early snapshots to the final one, or if the lower layers fall alike.

Per snapshot and layer: SVM and softmax mean per-class accuracy on fold 0 (``zfrepro.transfer``'s
own features, folds and classifiers, the plan's C) and the participation ratio of the standardised
features of that fold's training images (``transfer.effective_dimension``). Needs ``ZFREPRO_CALTECH``
and the trained `default` run (``runs/``); about 2 min per snapshot on 2 cores.

    python benchmarks/table7_over_training.py [--epochs 1,5,10,22]
    python benchmarks/table7_over_training.py --table
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows, snapshot_epochs  # noqa: E402

from zfrepro import transfer  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("table7_over_training.jsonl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--epochs", default="", help="snapshots of the profile's run (comma-separated; default: every snapshot)")
    ap.add_argument("--table", action="store_true", help="print the rows as the README's Markdown table")
    a = ap.parse_args(argv)
    if a.table:
        rows = read_rows(OUT)
        layers = list(rows[0]["dimension"])
        print("| epoch | " + " | ".join(layers) + " |\n| --- |" + " --- |" * len(layers))
        for what in ("svm", "softmax", "dimension"):
            for r in rows:
                vals = r[what]
                print(f"| {r['epoch']} of {r['run_epochs']} ({what}) | " + " | ".join(f"{vals[n]:.1f}" for n in layers) + " |")
        return 0
    root = transfer.resolve_caltech_root()
    cats = transfer.caltech_categories(root)
    caltech = transfer.decode_caltech(root, transfer.caltech_inputs_size(a.profile), cats, progress=False)
    inputs = transfer.caltech_inputs(caltech, a.profile)
    split = transfer.caltech_splits(root, 30, folds=1, seed=0, categories=cats)
    index = {p: i for i, p in enumerate(caltech.paths)}
    train_rows = np.array([index[p] for p in split[0][0]])
    C = transfer.transfer_plan(a.profile).C
    for epoch in snapshot_epochs(a.profile, a.epochs):
        t0 = time.monotonic()
        model = load_trained(a.profile, epoch=epoch)
        feats = transfer.layer_features(model, inputs, progress=False)
        scored = transfer.evaluate_layers(feats, caltech.labels, caltech.paths, split, C=C, progress=False)
        row = {"profile": a.profile, "run_epochs": resolve_profile(a.profile)[0].epochs, "epoch": epoch, "fold": 0, "per_class": 30,
               **{k: {r["layer"]: round(r["mean"], 2) for r in scored if r["kind"] == k} for k in ("svm", "softmax")},
               "dimension": transfer.layer_dimensions(feats, rows=train_rows),
               "seconds": round(time.monotonic() - t0)}
        append_row(OUT, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
