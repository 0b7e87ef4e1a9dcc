"""Training images/s: the trainer's step (issue #18) vs the eager step it replaced, side by side.

Both sides are :class:`zfrepro.train.Trainer` on the same network, seed and batches (drawn once from the
real data pipeline, :func:`zfrepro.data.iterate_batches`, and cycled), with SGD, weight decay and the
renormalisation of every conv filter:

- **eager** — the step as it was: NCHW tensors and ``nn.LocalResponseNorm`` (PyTorch's padded
  ``avg_pool3d`` forward and its autograd backward);
- **ours** — what ``zfrepro train`` runs now: channels-last tensors (on CPU max pooling with switches is
  several times faster in that layout) and :class:`zfrepro.lrn.CrossChannelLRN` (the same forward bit for
  bit, a hand-written backward);
- optionally **ours + torch.compile** (``--compile``; inductor, C++ on CPU): its compile time is reported
  and counted.

Sides alternate in blocks, each block preceded by an unmeasured step, so other load on a shared machine
hits all alike. ``--ops FILE`` also writes the torch.profiler breakdown of one step of each side (self CPU
time per operator) as Markdown. Goal: ours ≥ 1.4× eager on ``default``. Needs ``ZFREPRO_DATA``.

    python benchmarks/bench_train_step.py [--quick] [--profile default|paper] [--steps N] [--compile] [--ops FILE]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro import data as zdata  # noqa: E402
from zfrepro import train as ztrain  # noqa: E402
from zfrepro.config import get_profile  # noqa: E402
from zfrepro.devices import keep_freed_memory  # noqa: E402
from zfrepro.lrn import CrossChannelLRN  # noqa: E402

GOAL = 1.4


def eager_trainer(prof: Any, arch: str, classes: int, device: torch.device, steps: int) -> Any:
    """The step before issue #18: NCHW and PyTorch's own ``nn.LocalResponseNorm``."""
    tr = ztrain.Trainer(prof, arch, classes, device, steps=steps, channels_last=False)
    for m in tr.raw.modules():
        if type(m) is CrossChannelLRN:
            m.__class__ = nn.LocalResponseNorm  # same fields; PyTorch's forward and autograd backward
    return tr


def _sides(prof: Any, arch: str, classes: int, device: torch.device, steps: int, compile_: bool) -> dict[str, Any]:
    out = {}
    torch.manual_seed(prof.seed)
    out["eager"] = eager_trainer(prof, arch, classes, device, steps)
    torch.manual_seed(prof.seed)
    out["ours"] = ztrain.Trainer(prof, arch, classes, device, steps=steps)
    if compile_:
        torch.manual_seed(prof.seed)
        tr = ztrain.Trainer(prof, arch, classes, device, steps=steps)
        tr.model = torch.compile(tr.raw)
        out["ours+compile"] = tr
    return out


def _ops_table(tr: Any, batches: list[Any], n: int = 3, top: int = 14) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        for x, y in itertools.islice(itertools.cycle(batches), n):
            tr.step(x, y)
    avg = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in avg) or 1.0
    rows = ["| operator | self CPU ms / step | share |", "| --- | --- | --- |"]
    for e in avg[:top]:
        rows.append(f"| `{e.key}` | {e.self_cpu_time_total / 1000 / n:.1f} | {100 * e.self_cpu_time_total / total:.1f} % |")
    rows.append(f"| total | {total / 1000 / n:.1f} | 100 % |")
    return rows


def run(quick: bool = False, *, profile: str = "default", arch: str = "zfnet", steps: int | None = None,
        rounds: int = 3, data_root: str | None = None, device: str = "cpu", compile_: bool = False,
        ops: str | None = None, verbose: bool = True) -> list[dict]:
    """Images/s of each side; one row (eager vs ours, and ours+compile vs eager when asked)."""
    keep_freed_memory()
    full = profile == "paper"
    steps = steps or (2 if full else 6 if quick else 18)
    rounds = max(1, min(rounds, steps))
    prof = get_profile(profile)
    dev = ztrain.resolve_device(device)
    d = ztrain.prepare_data(prof, data_root, verbose)
    g = torch.Generator().manual_seed(0)
    batches = list(itertools.islice(zdata.iterate_batches(d.train, d.mean, prof, train=True, generator=g,
                                                          device=dev), 4))
    sides = _sides(prof, arch, len(d.classes), dev, ztrain.steps_per_epoch(len(d.train), prof.batch_size), compile_)
    bs = prof.batch_size
    it = {k: itertools.cycle(batches) for k in sides}
    warm = {}

    def block(name: str, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            sides[name].step(*next(it[name]))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    for name in sides:  # first steps: allocation, and compilation for the compiled side (counted apart)
        warm[name] = block(name, 1)
    spent = dict.fromkeys(sides, 0.0)
    per = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    for m in per:
        for name in sides:
            block(name, 1)
            spent[name] += block(name, m)
    ips = {k: steps * bs / v for k, v in spent.items()}
    what = (f"{arch} {profile} ({prof.input_size}px, width {prof.width}, fc {prof.fc_width}, batch {bs}, "
            f"{dev.type}, {torch.get_num_threads()} threads)")
    rows = [{"what": what, "images_per_s_eager": round(ips["eager"], 2), "images_per_s_ours": round(ips["ours"], 2),
             "ratio": round(ips["ours"] / ips["eager"], 3), "goal": f">= {GOAL}" if profile == "default" else "report",
             "pass": bool(ips["ours"] / ips["eager"] >= GOAL) if profile == "default" else True, "steps": steps,
             "first_step_s": {k: round(v, 2) for k, v in warm.items()}}]
    if compile_:
        c = ips["ours+compile"]
        rows.append({"what": what + ", torch.compile", "images_per_s_eager": round(ips["eager"], 2),
                     "images_per_s_ours": round(c, 2), "ratio": round(c / ips["eager"], 3), "goal": "report",
                     "pass": True, "compile_s": round(warm["ours+compile"], 1),
                     "vs_ours": round(c / ips["ours"], 3)})
    if ops:
        lines = [f"# One training step, {what}", "",
                 "torch.profiler, self CPU time per operator, mean of 3 steps after the timed ones "
                 "(`python benchmarks/bench_train_step.py --ops ...`).", ""]
        for name in ("eager", "ours"):
            lines += [f"## {name}", ""] + _ops_table(sides[name], batches) + [""]
        Path(ops).write_text("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (6)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per side (default 18; paper 2)")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--arch", default="zfnet")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    ap.add_argument("--ops", default=None, help="write the per-operator breakdown (Markdown) here")
    a = ap.parse_args(argv)
    rows = run(a.quick, profile=a.profile, arch=a.arch, steps=a.steps, data_root=a.data_root, device=a.device,
               compile_=a.compile, ops=a.ops)
    for r in rows:
        print(r)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
