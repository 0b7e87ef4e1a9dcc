"""How the §5.2 classifiers' regularisation ``C`` was chosen (issue #15), on training images only.

The test folds of Tables 4 and 7 must not choose the classifiers' constants. This script takes the
training images of fold 0 at 30 per class (``zfrepro.transfer.caltech_splits``), splits them again
into 20 fitting and 10 validation images per class (two inner folds, seeded), and scores each
classifier with each ``C`` on a few layers' features of the profile's pretrained network
(``zfrepro.transfer.layer_features``) by mean per-class accuracy — the package's own functions
throughout. One JSON row per (classifier, layer, C) is appended to ``benchmarks/transfer_c.jsonl``;
``--table`` prints the file as a Markdown table. The plan's ``C_svm`` / ``C_softmax`` are the values
with the best mean over the layers.

    ZFREPRO_DATA=... ZFREPRO_CALTECH=... python benchmarks/transfer_c.py [--profile default] [--layers conv3,conv5,fc7]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows  # noqa: E402

import numpy as np  # noqa: E402

from zfrepro import transfer  # noqa: E402
from zfrepro.loading import load_model  # noqa: E402

OUT = Path(__file__).with_name("transfer_c.jsonl")
GRID = {"svm": (1e-4, 1e-3, 1e-2), "softmax": (1e-3, 1e-2, 1e-1)}


def inner_splits(train: list[str], fit_per_class: int, seed: int, folds: int = 2) -> list[tuple[list[str], list[str]]]:
    """Split one fold's training paths again: ``fit_per_class`` per category to fit, the rest to validate."""
    by_cat: dict[str, list[str]] = {}
    for p in train:
        by_cat.setdefault(p.split("/")[0], []).append(p)
    out = []
    for f in range(folds):
        rng = np.random.default_rng([seed, 1000 + f])
        fit, val = [], []
        for c in sorted(by_cat):
            order = [by_cat[c][i] for i in rng.permutation(len(by_cat[c]))]
            fit += order[:fit_per_class]
            val += order[fit_per_class:]
        out.append((sorted(fit), sorted(val)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--layers", default="conv3,conv5,fc7")
    ap.add_argument("--kinds", default="svm,softmax", help="classifiers to score (comma-separated)")
    ap.add_argument("--table", action="store_true", help="print benchmarks/transfer_c.jsonl as a table and exit")
    args = ap.parse_args(argv)
    if args.table:
        rows = read_rows(OUT)
        print("| classifier | layer | C | inner-fold accuracy % | network |\n| --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['kind']} | {r['layer']} | {r['C']:g} | {r['mean']:.1f} ± {r['std']:.1f} | "
                  f"{r.get('network', 'earlier')} |")
        return 0
    t0 = time.monotonic()
    model = load_model(args.profile, device="cpu")
    # which trained network scored these rows (rows without it: an earlier network, scikit-learn's solvers)
    network = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
    root = transfer.resolve_caltech_root()
    cats = transfer.caltech_categories(root)
    caltech = transfer.decode_caltech(root, transfer.caltech_inputs_size(args.profile), cats)
    feats = transfer.layer_features(model, transfer.caltech_inputs(caltech, args.profile), args.layers.split(","))
    train, _ = transfer.caltech_splits(root, 30, folds=1, seed=0, categories=cats)[0]
    splits = inner_splits(train, 20, seed=0)
    for kind, cs in ((k, GRID[k]) for k in args.kinds.split(",")):
        for C in cs:
            for r in transfer.evaluate_layers(feats, caltech.labels, caltech.paths, splits, kinds=(kind,),
                                              C={kind: C}, progress=False):
                append_row(OUT, {"profile": args.profile, "kind": kind, "layer": r["layer"], "C": C, "mean": r["mean"],
                                 "std": r["std"], "inner_folds": len(splits), "solver": "zfrepro.linear",
                                 "network": network})
    print(f"done in {time.monotonic() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
