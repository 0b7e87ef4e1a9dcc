"""Which vector is Table 1's "layer 5"? (issue #14): Table 1 on conv5's whole map against conv5 pooled to
the grid fc6 reads (pool5's output), with notebook 07's faces, draws and seed.

Hypothesis (stated before the run): the paper's layer-5 feature is the output of its layer-5 block —
conv, rectification and 3×3 max pooling, "6·6·256 = 9216 dimensions", the vector fc6 and Table 7's
classifiers read — not conv5's unpooled map. On the whole map a mask over the same part of different
faces, which sit at different places in their images, changes *different* coordinates, while the random
control masks the same pixels of every face and so changes the same ones: the unpooled map favours the
control. Pooled over pool5's cells, nearby changes land in the same cell. Refuted if at pool5 the
parts' Δ is not below the random masks' (gap random − mean of parts ≤ its draw spread).

Per snapshot (default: the last) and layer variant: each part's Δ and its std over the 20 draws of 5
faces (``zfrepro.correspondence.correspondence_table``), the random control's, the gap, and the parts'
lead (``part_margins``: the gap as a share of random's Δ). A few seconds per snapshot.

    ZFREPRO_DATA=/path/to/imagenette python benchmarks/table1_layer5.py [--epochs 44]
    python benchmarks/table1_layer5.py --table
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows, snapshot_epochs  # noqa: E402

from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.correspondence import PARTS, correspondence_table, faces_for_dataset, part_margins  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("table1_layer5.jsonl")
#: (name in the rows, layer, grid of correspondence.layer_features): None = the whole map, 0 = fc6's grid
VARIANTS = (("conv5 (whole map)", "conv5", None), ("pool5 (conv5 on fc6's grid)", "conv5", 0), ("fc7", "fc7", None))


def measure(profile: str, epoch: int) -> dict:
    """Table 1 of the ``profile`` run's snapshot at ``epoch`` for each of :data:`VARIANTS`."""
    t0 = time.monotonic()
    faces, skipped = faces_for_dataset(None, profile)
    if faces is None:
        raise SystemExit(f"table1_layer5: {skipped}")
    model = load_trained(profile, epoch=epoch)
    row: dict = {"profile": profile, "run_epochs": resolve_profile(profile)[0].epochs, "epoch": epoch,
                 "faces": len(faces), "variants": {}}
    for name, layer, grid in VARIANTS:
        table = correspondence_table(model, faces, [layer], n=5, draws=20, random_per_draw=5, seed=0, grid=grid)
        t = table.set_index("part")
        parts = {p: [round(float(t.loc[p, "mean"]), 4), round(float(t.loc[p, "std"]), 4)] for p in (*PARTS, "random")}
        gap = float(t.loc["random", "mean"]) - sum(float(t.loc[p, "mean"]) for p in PARTS) / len(PARTS)
        row["variants"][name] = {"delta": parts, "gap": round(gap, 4),
                                 "lead": round(part_margins(table, [layer])[layer], 4),
                                 "parts_below_random": sum(float(t.loc[p, "mean"]) < float(t.loc["random", "mean"])
                                                           for p in PARTS)}
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--epochs", default="", help="snapshot epochs (comma-separated; default: the run's last)")
    ap.add_argument("--table", action="store_true", help="print the rows as the README's Markdown table")
    a = ap.parse_args(argv)
    if a.table:
        print("| snapshot | layer-5 vector | " + " | ".join(PARTS) + " | random | lead | parts below random |\n"
              "| --- | --- | " + " | ".join("---" for _ in PARTS) + " | --- | --- | --- |")
        for r in read_rows(OUT):
            for name, v in r["variants"].items():
                d = v["delta"]
                print(f"| {r['epoch']} of {r['run_epochs']} | {name} | "
                      + " | ".join(f"{d[p][0]:.3f} ± {d[p][1]:.3f}" for p in (*PARTS, "random"))
                      + f" | {v['lead']:+.3f} | {v['parts_below_random']} of {len(PARTS)} |")
        return 0
    epochs = snapshot_epochs(a.profile, a.epochs)
    for epoch in (epochs if a.epochs else epochs[-1:]):
        append_row(OUT, measure(a.profile, epoch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
