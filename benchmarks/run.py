"""Every benchmark in one run, one table: what is compared, the two figures, the ratio, the goal,
pass/fail. Writes ``benchmarks/RESULTS.md``.

    python benchmarks/run.py [--quick] [--only deconv,occlusion]
    python -m benchmarks [--quick]

Ratios, not absolute times: each benchmark runs its two sides alternately in one process, so that
other load on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# name: (module, what the two figures are, the two keys)
BENCHMARKS: dict[str, tuple[str, str, str, str]] = {
    "deconv": ("bench_deconv", "projections/s: captum NeuronDeconvolution vs ours", "captum_proj_s", "ours_proj_s"),
    "pipeline": ("bench_pipeline", "images/s, real data pipeline vs in-memory tensors", "images_per_s_real",
                 "images_per_s_synthetic"),
    "malloc": ("bench_malloc", "training images/s, freed memory kept vs glibc defaults", "images_per_s_kept",
               "images_per_s_system"),
    "scan": ("bench_scan", "top-9 scan s vs plain no-grad forward s", "scan_s", "forward_s"),
    "occlusion": ("bench_occlusion", "captum Occlusion s vs ours (incremental) s", "captum_s", "ours_s"),
    "train_step": ("bench_train_step", "training images/s: ours (channels-last, CrossChannelLRN) vs the eager step",
                   "images_per_s_ours", "images_per_s_eager"),
    "transfer_fit": ("bench_transfer_fit", "notebook 08's classifier fits: scikit-learn s vs zfrepro.linear s",
                     "sklearn_s", "ours_s"),
}


def _goal(goal: Any) -> str:
    """A bare number is a lower bound (bench_deconv's ratio goal)."""
    return f">= {goal}" if isinstance(goal, (int, float)) and not isinstance(goal, bool) else str(goal)


def _what(name: str, row: dict[str, Any]) -> str:
    if "what" in row:
        return str(row["what"])
    return f"{row.get('layer', '')} at {row.get('size', '')} px, batch {row.get('batch', '')}"


def run(quick: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected benchmarks; one summary row per measured case."""
    rows = []
    for name, (module, what, a, b) in BENCHMARKS.items():
        if only and name not in only:
            continue
        mod = importlib.import_module(module)
        t = time.monotonic()
        for r in mod.run(quick, verbose=False):
            rows.append({"benchmark": name, "case": _what(name, r), "compared": r.get("compared", what), "a": r.get(a), "b": r.get(b),
                         "ratio": r.get("ratio"), "goal": _goal(r.get("goal")), "pass": bool(r.get("pass")),
                         "seconds": round(time.monotonic() - t, 1)})
    return rows


def to_markdown(rows: list[dict[str, Any]], quick: bool) -> str:
    lines = ["# Benchmarks", "",
             f"`python benchmarks/run.py{' --quick' if quick else ''}` on {platform.machine()} / Python "
             f"{platform.python_version()}; each ratio from its two sides measured alternately in one run (malloc: "
             "alternating child processes, since the allocator setting is process-wide).", "",
             "| benchmark | case | compared (a vs b) | a | b | ratio | goal | pass |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| {r['benchmark']} | {r['case']} | {r['compared']} | {fmt(r['a'])} | {fmt(r['b'])} | "
                     f"{fmt(r['ratio'])} | {r['goal'].replace('>=', '≥').replace('<=', '≤')} | "
                     f"{'yes' if r['pass'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases (minutes)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to write")
    a = ap.parse_args(argv)
    only = [s.strip() for s in a.only.split(",")] if a.only else None
    unknown = sorted(set(only or []) - set(BENCHMARKS))
    if unknown:
        ap.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    rows = run(a.quick, only)
    text = to_markdown(rows, a.quick)
    if only and Path(a.out).is_file():  # a subset: replace its rows in the existing table, keep the others
        def is_row(line: str) -> bool:
            return line.startswith("| ") and not line.startswith(("| benchmark", "| ---"))

        def name(line: str) -> str:
            return line.split("|")[1].strip()

        kept = [ln for ln in Path(a.out).read_text().splitlines() if is_row(ln) and name(ln) not in only]
        lines = text.splitlines()
        order = list(BENCHMARKS)
        body = sorted(kept + [ln for ln in lines if is_row(ln)],
                      key=lambda ln: order.index(name(ln)) if name(ln) in order else len(order))
        text = "\n".join([ln for ln in lines if not is_row(ln)] + body) + "\n"
    print(text)
    from zfrepro.io import atomic_write_text

    atomic_write_text(text, a.out)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
