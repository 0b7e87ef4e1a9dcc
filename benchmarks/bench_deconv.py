"""Deconvnet projections per second: :meth:`zfrepro.deconv.DeconvNet.project` against captum and
plain autograd, on the same hidden units, in one run.

Model: ``zfnet(num_classes=10, fc_width=1024)`` with its §3 random initialisation (N(0, 10⁻²)
weights, zero biases), at 128 and 224 px, batch 32, units of conv2 and conv5 (each image its
own channel — the (i mod 8)-th strongest map of image i, so that every unit is live — at the
maximum of that map).

* **ours**: ``DeconvNet(model).project(images, layer, channels)`` (norm="identity", positions
  found by the call itself: forward to the layer, argmax, cropped deconvnet).
* **captum**: ``captum.attr.NeuronDeconvolution(bare, relu_module).attribute(images,
  neuron_selector)`` as its documentation shows, on ``bare``, a copy of the model whose
  contrast-normalisation modules are ``nn.Identity`` (captum differentiates through them,
  ours passes the signal through: only the LRN-free network computes the same quantity).
  NeuronDeconvolution takes one selector for the whole batch; a callable that picks each
  image's own unit ``out[i, c_i, r_i, q_i]`` projects all of them in one pass.
* **autograd**: the plain gradient of the same units (forward of the real model's features to
  the layer's ReLU, ``torch.autograd.grad`` with respect to the input only).

Results are checked: ``max_rel_diff`` is the largest per-image difference, both scaled to unit
norm, between captum's projections and ``DeconvNet(bare).project`` of the same units on the same
network (float rounding, ~1e-7), and between repeated calls of the timed ``project``. The timed
projections on the real network (``lrn_vs_bare_diff`` in the returned rows) agree with captum's
on ``bare`` as long as the normalisation, which with the §3 weights scales every position almost
alike, flips no near-tie of a max-pool switch. Goal: ours ≥ 1.2× captum's projections/s at
every row, with max_rel_diff ≤ 1e-4. Methods alternate inside each repeat so that other
load on a shared machine hits all alike; the table reports medians.

    python benchmarks/bench_deconv.py [--quick] [--batch N] [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro.deconv import DeconvNet  # noqa: E402
from zfrepro.models import rectified_module, zfnet  # noqa: E402

GOAL = 1.2
LAYERS = ("conv2", "conv5")
SIZES = (128, 224)


def _without_lrn(model: nn.Module) -> nn.Module:
    bare = copy.deepcopy(model)
    for name, m in list(bare.features.named_children()):
        if isinstance(m, nn.LocalResponseNorm):
            setattr(bare.features, name, nn.Identity())
    return bare.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _direction_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-image ||a/|a| - b/|b||| (0 when both are zero)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    both_zero = (na == 0) & (nb == 0)
    d = (a / na.clamp_min(1e-300) - b / nb.clamp_min(1e-300)).norm(dim=1)
    return float(torch.where(both_zero.squeeze(1), torch.zeros_like(d), d).max())


def _autograd_fn(model: nn.Module, layer: str, images: torch.Tensor, ch: torch.Tensor,
                 pos: torch.Tensor) -> Callable[[], torch.Tensor]:
    relu = rectified_module(model, layer)
    mods = []
    for m in model.features:
        mods.append(m)
        if m is relu:
            break
    stack = nn.Sequential(*mods)
    idx = torch.arange(images.shape[0], device=images.device)

    def go() -> torch.Tensor:
        x = images.detach().requires_grad_(True)
        out = stack(x)
        (g,) = torch.autograd.grad(out[idx, ch, pos[:, 0], pos[:, 1]].sum(), x)
        return g

    return go


def run(quick: bool = False, *, batch: int | None = None, sizes: tuple[int, ...] | None = None,
        layers: tuple[str, ...] = LAYERS, repeats: int | None = None, warmup: int = 1,
        device: str = "cpu", threads: int | None = None, verbose: bool = True) -> list[dict[str, Any]]:
    """Measure projections/s of ours, captum and autograd; return one dict per (layer, size).

    ``quick``: 128 px only, 3 repeats (default: 128 and 224 px, 5 repeats); batch 32 in both.
    Keys: layer, size, batch, ours_proj_s, captum_proj_s, autograd_proj_s, ratio, goal, pass,
    max_rel_diff, plus the median seconds per call of each method.
    """
    import captum.attr as ca

    batch = batch or 32
    sizes = sizes or ((128,) if quick else SIZES)
    repeats = repeats or (3 if quick else 5)
    dev = torch.device(device)
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        torch.manual_seed(0)
        model = zfnet(num_classes=10, input_size=size, fc_width=1024).eval().to(dev)
        bare = _without_lrn(model)
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size)).to(dev)
        dn = DeconvNet(model)  # norm="identity"
        for layer in layers:
            # each image its own live channel: the (i mod 8)-th strongest map of image i
            idx = torch.arange(batch, device=dev)
            order = dn.forward_to(images, layer).amax((2, 3)).argsort(1, descending=True)
            ch = order[idx, idx % 8]
            first = dn.project(images, layer, ch, return_units=True, strict=True)
            pos = first.positions
            nd = ca.NeuronDeconvolution(bare, rectified_module(bare, layer))

            def selector(out: torch.Tensor) -> torch.Tensor:
                return out[idx, ch, pos[:, 0], pos[:, 1]]

            methods: dict[str, Callable[[], torch.Tensor]] = {
                "ours": lambda: dn.project(images, layer, ch),
                "captum": lambda: nd.attribute(images, neuron_selector=selector),
                "autograd": _autograd_fn(model, layer, images, ch, pos),
            }
            outputs: dict[str, torch.Tensor] = {}
            times: dict[str, list[float]] = {k: [] for k in methods}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # captum warns about its ReLU hooks on every call
                for _ in range(warmup):
                    for k, f in methods.items():
                        outputs[k] = f()
                for _ in range(repeats):
                    for k, f in methods.items():
                        _sync(dev)
                        t0 = time.perf_counter()
                        f()
                        _sync(dev)
                        times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            ours_ps, cap_ps, ag_ps = (batch / med[k] for k in ("ours", "captum", "autograd"))
            # correctness on the very network captum ran (same units, same positions)
            check = DeconvNet(bare).project(images, layer, ch, pos)
            diff = _direction_diff(check.cpu(), outputs["captum"].detach().cpu())
            repeatable = _direction_diff(outputs["ours"].cpu(), first.pixels.cpu())
            ratio = ours_ps / cap_ps
            row = dict(layer=layer, size=size, batch=batch, ours_proj_s=ours_ps, captum_proj_s=cap_ps,
                       autograd_proj_s=ag_ps, ratio=ratio, goal=GOAL,
                       max_rel_diff=max(diff, repeatable),
                       lrn_vs_bare_diff=_direction_diff(outputs["ours"].cpu(), outputs["captum"].detach().cpu()),
                       ours_s=med["ours"], captum_s=med["captum"], autograd_s=med["autograd"])
            row["pass"] = bool(ratio >= GOAL and row["max_rel_diff"] <= 1e-4)
            rows.append(row)
            if verbose:
                print(_format_row(row), flush=True)
    return rows


_HEADER = (f"{'layer':<6} {'size':>5} {'ours proj/s':>12} {'captum proj/s':>14} {'autograd proj/s':>16} "
           f"{'ours/captum':>12} {'goal':>6} {'pass':>5} {'max rel diff':>13}")


def _format_row(r: dict[str, Any]) -> str:
    return (f"{r['layer']:<6} {r['size']:>5} {r['ours_proj_s']:>12.1f} {r['captum_proj_s']:>14.1f} "
            f"{r['autograd_proj_s']:>16.1f} {r['ratio']:>12.2f} {'>=' + str(r['goal']):>6} "
            f"{'yes' if r['pass'] else 'NO':>5} {r['max_rel_diff']:>13.1e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 px only, 3 repeats")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {args.device}, {args.threads or 'all'} threads; goal ours/captum >= {GOAL}")
    print(_HEADER, flush=True)
    rows = run(args.quick, batch=args.batch, repeats=args.repeats, device=args.device, threads=args.threads)
    ok = all(r["pass"] for r in rows)
    print(f"{'all rows pass' if ok else 'some rows miss the goal'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
