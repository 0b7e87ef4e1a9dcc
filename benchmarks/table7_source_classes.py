"""Does Table 7's fall with depth come from the 10 source classes? (issue #14): two `default` networks
trained on the same number of Imagenette images — 5 of its classes with all their images, or all 10
classes with half of each class's — and Table 7 (one fold, 30 Caltech-101 images per class) on each.

Hypothesis (stated before the run): the upper layers' features specialise to the classes the network
was trained on, so the fewer the source classes, the more transfer accuracy falls above the lower
layers; the paper's rise up to layers 5-7 is what 1,000 classes give. Prediction: at equal images and
updates, the 10-class network's upper layers lose less against its best lower layer than the 5-class
network's (the "top − best conv1-3" gap below is higher for 10 classes), for both the SVM and softmax.
Refuted if the gap is no higher with 10 classes.

The 5-class view is a folder of symlinks (classes drawn with ``--seed``) under the package cache; both
runs go through the package's own ``train()`` with the `default` recipe at ``--epochs`` (each in its
own run directory) and Table 7 through ``zfrepro.transfer``'s features, folds, classifiers and C. About
10 min per training at 22 epochs and 2 min per Table 7 on 2 free cores.

    ZFREPRO_DATA=/path/to/imagenette ZFREPRO_CALTECH=/path python benchmarks/table7_source_classes.py [--epochs 22]
    python benchmarks/table7_source_classes.py --table
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows  # noqa: E402

from zfrepro import transfer  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.datasets import resolve_root  # noqa: E402
from zfrepro.io import cache_dir  # noqa: E402
from zfrepro.train import load_trained, train  # noqa: E402

OUT = Path(__file__).with_name("table7_source_classes.jsonl")
LOWER = ("conv1", "conv2", "conv3")
UPPER = ("conv5", "fc6", "fc7")


def class_view(root: Path, classes: int, seed: int) -> tuple[Path, int]:
    """A folder of ``classes`` of ``root``'s classes (train/ and val/, symlinked; drawn with ``seed``) and
    its number of training images."""
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    g = torch.Generator().manual_seed(seed)
    keep = sorted(names[i] for i in torch.randperm(len(names), generator=g)[:classes].tolist())
    view = cache_dir() / "class-views" / f"{root.name}-{classes}-of-{len(names)}-seed{seed}"
    for split in ("train", "val"):
        (view / split).mkdir(parents=True, exist_ok=True)
        for name in keep:
            link = view / split / name
            if not link.exists():
                os.symlink(root / split / name, link)
    images = sum(len(list((view / "train" / n).iterdir())) for n in keep)
    return view, images


def table7(profile, data_root, caltech, split, train_rows) -> dict:
    """Table 7 (fold 0) of the finished run of ``profile`` on ``data_root``."""
    model = load_trained(profile, data_root=data_root)
    inputs = transfer.caltech_inputs(caltech, profile, data_root=data_root, progress=False)
    feats = transfer.layer_features(model, inputs, progress=False)
    scored = transfer.evaluate_layers(feats, caltech.labels, caltech.paths, split, C=transfer.transfer_plan("default").C,
                                      progress=False)
    out = {k: {r["layer"]: round(r["mean"], 2) for r in scored if r["kind"] == k} for k in ("svm", "softmax")}
    out["dimension"] = transfer.layer_dimensions(feats, rows=train_rows)
    for k in ("svm", "softmax"):
        out[f"{k}_top_minus_lower"] = round(max(out[k][n] for n in UPPER) - max(out[k][n] for n in LOWER), 2)
        out[f"{k}_peak"] = max(out[k], key=out[k].get)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=22)
    ap.add_argument("--classes", type=int, default=5, help="source classes of the smaller-class network")
    ap.add_argument("--seed", type=int, default=0, help="seed of the drawn classes")
    ap.add_argument("--table", action="store_true", help="print the rows as the README's Markdown table")
    a = ap.parse_args(argv)
    if a.table:
        rows = read_rows(OUT)
        layers = list(rows[0]["svm"])
        print("| source | train images | epochs | classifier | " + " | ".join(layers) + " | best of conv5-fc7 − best of conv1-3 |\n"
              "| --- | --- | --- | --- |" + " --- |" * (len(layers) + 1))
        for r in rows:
            for k in ("svm", "softmax"):
                print(f"| {r['variant']} | {r['train_images']} | {r['epochs']} | {k} | "
                      + " | ".join(f"{r[k][n]:.1f}" for n in layers) + f" | {r[k + '_top_minus_lower']:+.1f} |")
        return 0
    root = resolve_root(None)
    view, images = class_view(root, a.classes, a.seed)
    all_classes = len([p for p in (root / "train").iterdir() if p.is_dir()])
    per_class = round(images / all_classes)
    variants = [(f"{a.classes} classes, all their images", view, {}),
                (f"{all_classes} classes, {per_class} images each", None, {"train_per_class": per_class})]
    trained = {}
    for name, data_root, over in variants:  # both trainings first, then Table 7 on each
        t0 = time.monotonic()
        prof, _ = resolve_profile("default", epochs=a.epochs, **over)
        train(prof, data_root=data_root, progress=False)
        trained[name] = (prof, round(time.monotonic() - t0))
    croot = transfer.resolve_caltech_root()
    cats = transfer.caltech_categories(croot)
    caltech = transfer.decode_caltech(croot, transfer.caltech_inputs_size("default"), cats, progress=False)
    split = transfer.caltech_splits(croot, 30, folds=1, seed=0, categories=cats)
    index = {p: i for i, p in enumerate(caltech.paths)}
    train_rows = np.array([index[p] for p in split[0][0]])
    for name, data_root, _ in variants:
        t0 = time.monotonic()
        prof, seconds = trained[name]
        row = {"variant": name, "classes": a.classes if data_root else all_classes, "class_seed": a.seed,
               "train_images": images if data_root else per_class * all_classes, "epochs": a.epochs,
               **table7(prof, data_root, caltech, split, train_rows), "fold": 0, "per_class": 30,
               "train_seconds": seconds, "table7_seconds": round(time.monotonic() - t0)}
        append_row(OUT, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
