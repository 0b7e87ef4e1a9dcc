"""Why Table 1's part correspondence does not show for our network (issue #14): Table 1 on the
snapshots of the one `default` run, with notebook 07's faces, layers, draws and seed.

Hypothesis: part correspondence (masking the same part of different faces changes the feature
signs more consistently than a random mask: Δ_part < Δ_random) is something the network learns, so
it should appear, or grow, as training goes on. Refuted if the gap Δ_random − Δ_part at conv5 and
fc7 does not grow from the early snapshots to the final one.

Per snapshot and layer: each part's Δ (``zfrepro.correspondence.correspondence_table``: mean over
20 draws of 5 faces), the random control's, and the gap random − mean of the parts (positive = the
paper's effect). Needs the trained `default` run (``runs/``) and the Imagenette val images of
``data/springer_faces.csv``; a few seconds per snapshot.

    ZFREPRO_DATA=/path/to/imagenette python benchmarks/table1_over_training.py [--epochs 1,2,5,10,20,22]
    python benchmarks/table1_over_training.py --table
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows, snapshot_epochs  # noqa: E402

from zfrepro.correspondence import PARTS, correspondence_table, faces_for_dataset  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("table1_over_training.jsonl")
LAYERS = ("conv5", "fc7")


def measure(profile: str, epoch: int) -> dict:
    """Table 1 of the `profile` run's snapshot at ``epoch``, as notebook 07 computes it."""
    t0 = time.monotonic()
    faces, skipped = faces_for_dataset(None, profile)
    if faces is None:
        raise SystemExit(f"table1_over_training: {skipped}")
    model = load_trained(profile, epoch=epoch)
    table = correspondence_table(model, faces, LAYERS, n=5, draws=20, random_per_draw=5, seed=0)
    row: dict = {"profile": profile, "run_epochs": resolve_profile(profile)[0].epochs, "epoch": epoch, "layers": {}}
    for layer in LAYERS:
        means = table[table.layer == layer].set_index("part")["mean"]
        parts = {p: round(float(means[p]), 4) for p in PARTS}
        row["layers"][layer] = {**parts, "random": round(float(means["random"]), 4),
                                "gap": round(float(means["random"]) - sum(parts.values()) / len(parts), 4)}
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--epochs", default="", help="snapshot epochs (comma-separated; default: every snapshot of the run)")
    ap.add_argument("--table", action="store_true", help="print the rows as the README's Markdown table")
    a = ap.parse_args(argv)
    if a.table:
        rows = read_rows(OUT)
        print("| epoch | layer | " + " | ".join(PARTS) + " | random | gap (random − parts) |\n"
              "| --- | --- | " + " | ".join("---" for _ in PARTS) + " | --- | --- |")
        for r in rows:
            for layer, m in r["layers"].items():
                print(f"| {r['epoch']} of {r['run_epochs']} | {layer} | " + " | ".join(f"{m[p]:.3f}" for p in PARTS)
                      + f" | {m['random']:.3f} | {m['gap']:+.3f} |")
        return 0
    for epoch in snapshot_epochs(a.profile, a.epochs):
        row = measure(a.profile, epoch)
        append_row(OUT, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
