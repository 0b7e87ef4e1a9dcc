"""Training throughput with the real data pipeline vs. the same loop on in-memory tensors.

The real loop is :class:`zfrepro.train.Trainer` (forward, backward, SGD, renormalisation: the
exact step of ``zfrepro train``) fed by :func:`zfrepro.data.iterate_batches` (decoded cache,
per-pixel mean, random-resized crops and flips, prefetch thread). The synthetic loop runs the
same step on random tensors of the same shape, with no data pipeline. Goal: the pipeline costs
under 15 % (real/synthetic ≥ 0.87).

Measurement alternates real and synthetic blocks (each preceded by unmeasured steps) so that
other load on a shared machine hits both alike. Needs ``ZFREPRO_DATA`` (or ``--data-root``).

    python benchmarks/bench_pipeline.py [--quick] [--steps N] [--warmup N] [--profile default]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro import data as zdata  # noqa: E402
from zfrepro import train as ztrain  # noqa: E402
from zfrepro.config import get_profile  # noqa: E402

GOAL = 0.87


def _time_steps(step: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t0


def build_trainer(profile: str, arch: str, data_root: str | None, device: torch.device,
                  verbose: bool = False) -> tuple[Any, Any, Any]:
    """``(profile, data, trainer)``: the exact training step of ``zfrepro train`` on the decoded split,
    seeded as a run is. Shared with ``bench_malloc``."""
    prof = get_profile(profile)
    d = ztrain.prepare_data(prof, data_root, verbose)
    torch.manual_seed(prof.seed)
    tr = ztrain.Trainer(prof, arch, len(d.classes), device, steps=ztrain.steps_per_epoch(len(d.train), prof.batch_size))
    return prof, d, tr


def run(quick: bool = False, *, steps: int | None = None, warmup: int | None = None, rounds: int = 2,
        profile: str = "default", arch: str = "zfnet", data_root: str | None = None,
        device: str = "cpu", augment_in_main_thread: bool = False, verbose: bool = True) -> list[dict]:
    """Measure images/s of the training step with the real pipeline and with synthetic tensors.

    ``steps`` measured steps per variant (default 20, quick 4), split over ``rounds`` alternating
    blocks; ``warmup`` unmeasured steps per variant first (default 3, quick 1).
    ``augment_in_main_thread`` builds each batch in the main thread (``prefetch=0``) instead of
    the prefetch thread, for comparison. Returns one row (a dict) per measurement.
    """
    steps = steps or (4 if quick else 20)
    warmup = warmup if warmup is not None else (1 if quick else 3)
    rounds = max(1, min(rounds, steps))
    dev = ztrain.resolve_device(device)
    prof, d, tr = build_trainer(profile, arch, data_root, dev, verbose)
    bs, size = prof.batch_size, prof.input_size
    g = torch.Generator().manual_seed(0)
    synth = [(torch.randn(bs, 3, size, size, generator=g).to(dev), torch.randint(0, len(d.classes), (bs,), generator=g).to(dev))
             for _ in range(2)]

    def batches() -> Any:
        while True:  # epochs back to back
            yield from zdata.iterate_batches(d.train, d.mean, prof, train=True, generator=g, device=dev,
                                             prefetch=0 if augment_in_main_thread else 2)

    real_it = batches()
    k = [0]

    def real_step() -> None:
        x, y = next(real_it)
        tr.step(x, y)

    def synth_step() -> None:
        x, y = synth[k[0] % 2]
        k[0] += 1
        tr.step(x, y)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    _time_steps(real_step, warmup)
    _time_steps(synth_step, warmup)
    sync()
    per = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    t_real = t_syn = 0.0
    for m in per:
        _time_steps(real_step, 1)          # settle the prefetch queue before timing
        sync()
        t0 = time.perf_counter()
        _time_steps(real_step, m)
        sync()
        t_real += time.perf_counter() - t0
        _time_steps(synth_step, 1)
        sync()
        t0 = time.perf_counter()
        _time_steps(synth_step, m)
        sync()
        t_syn += time.perf_counter() - t0
    real_it.close()
    ips_real, ips_syn = steps * bs / t_real, steps * bs / t_syn
    ratio = ips_real / ips_syn
    what = (f"{arch} {profile} ({size}px, fc {prof.fc_width}, batch {bs}, {prof.augment}, "
            f"{'main-thread' if augment_in_main_thread else 'prefetch-thread'} batches, {dev.type}, "
            f"{torch.get_num_threads()} threads)")
    row = {"what": what, "images_per_s_real": round(ips_real, 2), "images_per_s_synthetic": round(ips_syn, 2),
           "ratio": round(ratio, 3), "goal": f">= {GOAL}", "pass": bool(ratio >= GOAL),
           "steps": steps, "warmup": warmup, "sec_per_step_real": round(t_real / steps, 3),
           "sec_per_step_synthetic": round(t_syn / steps, 3)}
    return [row]


def _print_table(rows: list[dict]) -> None:
    cols = ["what", "images_per_s_real", "images_per_s_synthetic", "ratio", "goal", "pass"]
    heads = ["what", "images/s real", "images/s synthetic", "ratio", "goal", "pass"]
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    print(line(heads))
    print(line(["-" * w for w in widths]))
    for c in cells:
        print(line(c))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (4 measured, 1 warm-up)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per variant (default 20)")
    ap.add_argument("--warmup", type=int, default=None, help="unmeasured steps per variant first (default 3)")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--arch", default="zfnet")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--main-thread", action="store_true",
                    help="also measure with batches built in the main thread (no prefetch thread)")
    a = ap.parse_args(argv)
    kw = dict(steps=a.steps, warmup=a.warmup, profile=a.profile, arch=a.arch, data_root=a.data_root, device=a.device)
    rows = run(a.quick, **kw)
    if a.main_thread:
        rows += run(a.quick, augment_in_main_thread=True, verbose=False, **kw)
    _print_table(rows)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
