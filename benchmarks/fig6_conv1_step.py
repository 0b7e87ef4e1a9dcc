"""Why Fig. 6's renormalisation and dead-filter claims fail at our input scale (issue #14): the Fig. 6
trio (ZFNet, ZFNet without renormalisation, the AlexNet replica) of notebook 01, trained with the
package's own trainer for the same budget, at conv1 learning-rate multipliers that put conv1's step
at different ratios to the renormalisation radius.

Hypothesis: with inputs divided by ``pixel_scale`` = 64 and the paper's absolute start (N(0, 10⁻²)) and
radius (0.1), a conv1 step of the same size *relative to the radius* as the paper's needs the
learning rate times ``pixel_scale`` (the gradient of a first-layer weight is proportional to the input:
``η_ours / 64 = η_paper``, i.e. 0.64 at the peak, ``first_lr_mult`` 32 on `default`'s 0.02). `default`
uses ×3 (0.06): its conv1 filters reach the radius only at the end of a 5-epoch run, so
renormalisation never clips and (a) cannot show. If the hypothesis holds, ×32 makes renormalisation
bind, and without it a few filters outgrow the rest (Fig. 6a).

Each row: the multiplier, every network's Fig. 6 measures (``zfrepro.aliasing.fig6_measures``: val
top-1, dead conv1 filters, top-5 % energy, largest filter RMS, high-frequency shares) and the four
Fig. 6 claims (``fig6_claims``). Runs go to the profile's runs folder (keyed by their settings: the ×3
trio is notebook 01's own).

    ZFREPRO_DATA=/path/to/imagenette python benchmarks/fig6_conv1_step.py [--mults 3,32] [--epochs 5]
    python benchmarks/fig6_conv1_step.py --table
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl_rows import append_row, read_rows  # noqa: E402

from zfrepro.aliasing import fig6_claims, fig6_measures  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.deconv import DeconvNet  # noqa: E402
from zfrepro.runs import read_metrics, run_dir_for  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402
from zfrepro.top_units import choose_maps, project_top_units  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("fig6_conv1_step.jsonl")
RUNS = {"ZFNet": dict(arch="zfnet"), "ZFNet, no renormalisation": dict(arch="zfnet", renorm=False),
        "AlexNet replica": dict(arch="alexnet")}


def measure(profile: str, mult: float, epochs: int) -> dict:
    """Train (or load) the trio at conv1 multiplier ``mult`` and measure it as notebook 01 does."""
    short = dict(epochs=epochs, eval_crops=1, first_lr_mult=mult)
    t0 = time.monotonic()
    nets = {n: load_trained(profile, **short, **kw) for n, kw in RUNS.items()}
    top1 = {n: float(read_metrics(run_dir_for(profile, **short, **kw)).val_top1.iloc[-1]) for n, kw in RUNS.items()}
    val = load_split(profile, "val", progress=False)
    proj = {}
    for name in ["AlexNet replica", "ZFNet"]:
        tops = top_activations(nets[name], val, layers=["conv2"], k=9, progress=False)["conv2"]
        alive = choose_maps(tops, tops.values.shape[0], seed=0)
        proj[name] = project_top_units(nets[name], val, tops, alive, deconv=DeconvNet(nets[name])).projections
    images = val.batch(list(range(0, len(val), max(1, len(val) // 64))))  # ~64 val images, as notebook 01
    table = fig6_measures(nets, top1, proj, images=images)
    claims = fig6_claims(table)
    return {"profile": profile, "first_lr_mult": mult, "epochs": epochs,
            "table": {n: {k: round(float(v), 4) for k, v in row.items() if v == v}
                      for n, row in table.to_dict(orient="index").items()},
            "claims": {c.name: c.holds for c in claims}, "seconds": round(time.monotonic() - t0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--mults", default="3,32", help="conv1 learning-rate multipliers (comma-separated)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--table", action="store_true", help="print the rows as the README's Markdown table")
    a = ap.parse_args(argv)
    if a.table:
        rows = read_rows(OUT)
        print("| conv1 lr × | network | val top-1 | dead conv1 | top-5% energy | max filter RMS | HF conv1 | HF conv2 proj. |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            for n, m in r["table"].items():
                print(f"| {r['first_lr_mult']:g} | {n} | {m['val top-1']:.3f} | {m['dead conv1 filters']:.3f} | "
                      f"{m['top-5% energy']:.3f} | {m['max filter RMS']:.4f} | {m['HF share conv1 filters']:.3f} | "
                      f"{m.get('HF share conv2 projections', float('nan')):.3f} |")
            print(f"| {r['first_lr_mult']:g} | claims | " + "; ".join(f"{k}: {'yes' if v else 'no'}"
                                                              for k, v in r["claims"].items()) + " | | | | | |")
        return 0
    for mult in [float(m) for m in a.mults.split(",")]:
        row = measure(a.profile, mult, a.epochs)
        append_row(OUT, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
