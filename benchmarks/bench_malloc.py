"""Training images/s with freed memory kept for reuse (what ``zfrepro train`` does) vs glibc's defaults.

:func:`zfrepro.devices.keep_freed_memory` sets ``mallopt(M_MMAP_MAX, 0)`` and a huge
``M_TRIM_THRESHOLD`` so that the step's large buffers are reused instead of being unmapped and
re-faulted every batch. The setting is process-wide and cannot be undone cleanly, so each side runs
in its own child process (``ZFREPRO_MALLOC=system`` turns it off there); the children run the exact
training step (:class:`zfrepro.train.Trainer`) on the real data pipeline, and the two sides alternate
(kept, system, kept, system, ...) so that other load on a shared machine hits both alike. Each child
also reports minor page faults per second, the share of its CPU time spent in the kernel and its
peak resident memory.
Goal: keeping freed memory makes training at least 5 % faster (ratio kept/system ≥ 1.05).
Needs ``ZFREPRO_DATA`` (or ``--data-root``); Linux with glibc.

    python benchmarks/bench_malloc.py [--quick] [--steps N] [--rounds N] [--profile default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 1.05


def child(steps: int, warmup: int, profile: str, arch: str, data_root: str | None) -> dict[str, Any]:
    """One side, in this process: ``warmup`` then ``steps`` timed training steps (real pipeline)."""
    import itertools
    import resource
    import time

    import torch

    from bench_pipeline import build_trainer
    from zfrepro import data as zdata
    from zfrepro.devices import keep_freed_memory

    kept = keep_freed_memory()
    prof, d, tr = build_trainer(profile, arch, data_root, torch.device("cpu"))
    it = zdata.iterate_batches(d.train, d.mean, prof, train=True, generator=torch.Generator().manual_seed(0))
    for x, y in itertools.islice(it, warmup):
        tr.step(x, y)
    r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    for x, y in itertools.islice(it, steps):
        tr.step(x, y)
        n += len(y)
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    sys_s, user_s = r1.ru_stime - r0.ru_stime, r1.ru_utime - r0.ru_utime
    return {"kept": kept, "images": n, "seconds": dt, "faults_per_s": (r1.ru_minflt - r0.ru_minflt) / dt,
            "kernel_share": sys_s / max(1e-9, sys_s + user_s), "peak_rss_mb": r1.ru_maxrss / 1024}


def _spawn(keep: bool, steps: int, warmup: int, profile: str, arch: str, data_root: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["ZFREPRO_MALLOC"] = "keep" if keep else "system"
    code = ("import json, sys; sys.path.insert(0, %r); from bench_malloc import child; "
            "print('RESULT', json.dumps(child(%d, %d, %r, %r, %r)))"
            % (str(Path(__file__).resolve().parent), steps, warmup, profile, arch, data_root))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if res["kept"] != keep:
        raise RuntimeError("keep_freed_memory() did not take effect in the child (not glibc?)")
    return res


def run(quick: bool = False, *, steps: int | None = None, rounds: int | None = None, warmup: int = 3,
        profile: str = "default", arch: str = "zfnet", data_root: str | None = None,
        verbose: bool = True) -> list[dict]:
    """``rounds`` alternating pairs of child processes (default 2, quick 1), ``steps`` timed
    training steps each (default 24, quick 8). Returns one row."""
    steps = steps or (8 if quick else 24)
    rounds = rounds or (1 if quick else 2)
    from zfrepro.config import get_profile

    prof = get_profile(profile)
    side: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for r in range(rounds):
        for keep in ((True, False) if r % 2 == 0 else (False, True)):
            res = _spawn(keep, steps, warmup, profile, arch, data_root)
            side[keep].append(res)
            if verbose:
                print(f"round {r + 1} {'kept  ' if keep else 'system'}: {res['images'] / res['seconds']:.1f} images/s, "
                      f"{res['faults_per_s']:.0f} faults/s, kernel {100 * res['kernel_share']:.1f} %, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)

    def ips(rows: list[dict[str, Any]]) -> float:
        return sum(r["images"] for r in rows) / sum(r["seconds"] for r in rows)

    def mean(rows: list[dict[str, Any]], k: str) -> float:
        return sum(r[k] for r in rows) / len(rows)

    kept, system = ips(side[True]), ips(side[False])
    ratio = kept / system
    what = (f"{arch} {profile} training step, real pipeline, batch {prof.batch_size}: faults/s "
            f"{mean(side[True], 'faults_per_s'):.0f} vs {mean(side[False], 'faults_per_s'):.0f}, kernel time "
            f"{100 * mean(side[True], 'kernel_share'):.1f} % vs {100 * mean(side[False], 'kernel_share'):.1f} %, peak RSS "
            f"{max(r['peak_rss_mb'] for r in side[True]):.0f} vs {max(r['peak_rss_mb'] for r in side[False]):.0f} MB")
    return [{"what": what, "images_per_s_kept": round(kept, 2), "images_per_s_system": round(system, 2),
             "ratio": round(ratio, 3), "goal": f">= {GOAL}", "pass": bool(ratio >= GOAL), "steps": steps,
             "rounds": rounds}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one pair of 8-step children")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per child (default 24)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating pairs of children (default 2)")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--arch", default="zfnet")
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args(argv)
    rows = run(a.quick, steps=a.steps, rounds=a.rounds, profile=a.profile, arch=a.arch, data_root=a.data_root)
    for r in rows:
        print(f"{r['what']}\nkept {r['images_per_s_kept']} images/s, system {r['images_per_s_system']} images/s, "
              f"ratio {r['ratio']} (goal {r['goal']}): {'pass' if r['pass'] else 'FAIL'}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
