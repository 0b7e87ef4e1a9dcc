"""Incremental inference under a local change of the input (used by Fig. 7's occlusion maps).

An occluded image differs from the original only inside the grey square, so a convolution's
output differs only where its window meets the square, the next layer's only where *its* window
meets that region, and so on: the changed region grows layer by layer by the kernel's reach
(Nakandala et al., "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019). This module recomputes, for a batch of changed inputs, only the
rectangle of each map that can differ from the unchanged image's map, reading everything else
from one full forward pass of the original image. The result is *exact* (equal to a full forward
pass of every changed image to float rounding), not an approximation: the rectangle at each layer
is a superset of the region that can change.

Supported inside ``features``: ``Conv2d`` (zero padding, any stride/groups, no dilation),
``MaxPool2d`` (incl. ``ceil_mode``, no dilation), and layers that act on each position alone
(``ReLU``, ``LocalResponseNorm`` — it mixes channels, not positions —, ``BatchNorm2d`` in eval
mode, ``Dropout`` in eval mode, ``Identity``). At the first other layer, or once the rectangle
covers the whole map, the full maps are assembled and the rest runs normally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import forward_hooks, geometry

__all__ = ["IncrementalFeatures", "supports_incremental"]

_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.LocalResponseNorm, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d,
              nn.Identity)


@dataclass
class _Spatial:
    """A layer whose output at (i, j) reads padded input rows [i·s, i·s + k) (and columns)."""

    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]                 # top / left padding
    out: tuple[int, int]               # output size of the full map
    padded: torch.Tensor               # base input, padded so that every window fits (1×C×H'×W')
    op: Callable[[torch.Tensor], torch.Tensor]  # applied to a padded window, no padding of its own


def _spatial(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> _Spatial | None:
    """Describe ``m`` (input ``x``, output ``y``, both 1×C×H×W) as a windowed layer, or None."""
    if not isinstance(m, (nn.Conv2d, nn.MaxPool2d)) or isinstance(m.padding, str):
        return None
    g = geometry(m)
    if g.dilation != (1, 1):
        return None
    k, s, p = g.kernel, g.stride, g.padding
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            return None
        w, b, groups = m.weight, m.bias, m.groups
        op = lambda t: F.conv2d(t, w, b, s, 0, 1, groups)  # noqa: E731
        fill = 0.0
    else:
        if m.return_indices:
            return None
        op = lambda t: F.max_pool2d(t, k, s, 0)  # noqa: E731
        fill = float("-inf")  # PyTorch's implicit padding (and ceil_mode's overhang) never wins
    out = (int(y.shape[-2]), int(y.shape[-1]))
    h, w_ = int(x.shape[-2]), int(x.shape[-1])
    need = [(out[d] - 1) * s[d] + k[d] for d in (0, 1)]
    bottom, right = max(0, need[0] - h - p[0]), max(0, need[1] - w_ - p[1])
    padded = F.pad(x, (p[1], right, p[0], bottom), value=fill)
    return _Spatial(k, s, p, out, padded, op)


def supports_incremental(model: nn.Module) -> bool:
    """True when ``model`` has a ``features`` ``nn.Sequential`` whose first layer is supported."""
    feats = getattr(model, "features", None)
    return isinstance(feats, nn.Sequential) and len(feats) > 0 and (
        isinstance(feats[0], (nn.Conv2d, nn.MaxPool2d)) or isinstance(feats[0], _POINTWISE))


class _Given(nn.Module):
    """Stands in for ``model.features``: returns precomputed maps whatever it is given."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return self.maps


class IncrementalFeatures:
    """Evaluate ``model`` on copies of ``image`` changed inside rectangles, recomputing per layer
    only the rectangle that can differ. Build once per image; call :meth:`run` per batch.

    ``model`` must be in eval mode and have a ``features`` ``nn.Sequential`` that receives the
    input first (ZFNet, the AlexNet replica, torchvision AlexNet/VGG). :attr:`exact` is False if
    the rest of the model cannot be run from precomputed features (then use brute force).
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, box: tuple[int, int],
                 starts: list[tuple[int, int]], watch: nn.Module | None = None) -> None:
        """``image``: C×H×W; ``box``: (height, width) of every changed rectangle; ``starts``: all
        top-left corners that :meth:`run` will be given (fixes each layer's rectangle size);
        ``watch``: a module inside ``features`` whose per-channel output sums :meth:`run` reports."""
        self.model = model
        self.features: nn.Sequential = model.features
        self.watch = watch
        x = image[None]
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        with torch.no_grad():
            for m in self.features:
                self.inputs.append(x)
                x = m(x.clone())  # clone: torchvision's in-place ReLUs must not alter what we keep
                self.outputs.append(x)
            ref = model(image[None])
            self.exact = bool(torch.allclose(self._rest(x), ref, rtol=1e-5, atol=1e-6))
        # per layer: the windowed description and the rectangle size, until we must stop
        self.plan: list[tuple[str, _Spatial | None, tuple[int, int]]] = []
        lens = (int(box[0]), int(box[1]))
        st = [(int(r), int(c)) for r, c in starts]
        self._starts0 = st
        for i, m in enumerate(self.features):
            xin, y = self.inputs[i], self.outputs[i]
            if y.dim() != 4:
                break
            if isinstance(m, _POINTWISE) and y.shape == xin.shape:
                self.plan.append(("point", None, lens))
                continue
            sp = _spatial(m, xin, y)
            if sp is None:
                break
            new_lens, st = self._grow(sp, st, lens)
            if new_lens == sp.out:  # the change reaches the whole map: assemble and go on normally
                break
            self.plan.append(("window", sp, new_lens))
            lens = new_lens

    @staticmethod
    def _first_last(sp: _Spatial, a: int, n: int, d: int) -> tuple[int, int]:
        """First and last output index along dim ``d`` whose window meets input [a, a+n)."""
        k, s, p = sp.k[d], sp.s[d], sp.p[d]
        lo = max(0, math.floor((a + p - k) / s) + 1)
        hi = min(sp.out[d] - 1, math.floor((a + n - 1 + p) / s))
        return lo, hi

    def _grow(self, sp: _Spatial, starts: list[tuple[int, int]], lens: tuple[int, int]):
        """The output rectangle size that holds every change, and where each one starts."""
        spans = [[self._first_last(sp, st[d], lens[d], d) for d in (0, 1)] for st in starts]
        new = tuple(max(sp_[d][1] - sp_[d][0] + 1 for sp_ in spans) for d in (0, 1))
        return new, self._place(sp, starts, lens, new)

    def _place(self, sp: _Spatial, starts: list[tuple[int, int]], lens: tuple[int, int],
               new_lens: tuple[int, int]) -> list[tuple[int, int]]:
        """Top-left of each ``new_lens`` output rectangle: at its first changed output, moved back
        where it would pass the map's end."""
        return [tuple(min(self._first_last(sp, st[d], lens[d], d)[0], sp.out[d] - new_lens[d]) for d in (0, 1))
                for st in starts]

    def _rest(self, maps: torch.Tensor) -> torch.Tensor:
        """The model's output from the output of ``features``."""
        feats = self.model.features
        self.model.features = _Given(maps)
        try:
            return self.model(maps.new_empty((maps.shape[0],) + tuple(self.inputs[0].shape[1:])))
        finally:
            self.model.features = feats

    def run(self, patches: torch.Tensor, starts: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the images equal to ``image`` except that rectangle ``b`` (top-left
        ``starts[b]``, size ``box``) holds ``patches[b]`` (B×C×h×w); and, if ``watch`` was given,
        the B×C' sums over positions of ``watch``'s output."""
        sums: list[torch.Tensor] = []
        watched = {} if self.watch is None else {"watch": self.watch}
        with forward_hooks(watched, lambda _k, o: sums.append(o.flatten(2).sum(2) if o.dim() == 4 else o)):
            return self._run(patches, [(int(r), int(c)) for r, c in starts], sums)

    def _run(self, patch: torch.Tensor, starts: list[tuple[int, int]], sums: list[torch.Tensor]):
        lens = (int(patch.shape[-2]), int(patch.shape[-1]))
        watched = None
        for i, (kind, sp, new_lens) in enumerate(self.plan):
            m = self.features[i]
            if kind == "point":
                patch = m.forward(patch)  # forward, not __call__: hooks see only full maps
            else:
                new_starts = self._place(sp, starts, lens, new_lens)
                wins = []
                for b, (st, ns) in enumerate(zip(starts, new_starts)):
                    # this layer's padded input window, with the changed rectangle written in
                    r0, c0 = ns[0] * sp.s[0], ns[1] * sp.s[1]
                    h = (new_lens[0] - 1) * sp.s[0] + sp.k[0]
                    w = (new_lens[1] - 1) * sp.s[1] + sp.k[1]
                    win = sp.padded[0, :, r0:r0 + h, c0:c0 + w].clone()
                    pr, pc = st[0] + sp.p[0] - r0, st[1] + sp.p[1] - c0  # patch origin in the window
                    ra, rb = max(0, pr), min(h, pr + lens[0])
                    ca, cb = max(0, pc), min(w, pc + lens[1])
                    if ra < rb and ca < cb:
                        win[:, ra:rb, ca:cb] = patch[b, :, ra - pr:rb - pr, ca - pc:cb - pc]
                    wins.append(win)
                patch = sp.op(torch.stack(wins))
                starts, lens = new_starts, new_lens
            if m is self.watch:
                watched = self._window_sums(i, patch, starts, lens)
        i = len(self.plan)
        # assemble full maps after the last planned layer and run the rest normally
        base = self.outputs[i - 1] if i > 0 else self.inputs[0]
        full = base.expand(patch.shape[0], *base.shape[1:]).clone()
        for b, st in enumerate(starts):
            full[b, :, st[0]:st[0] + lens[0], st[1]:st[1] + lens[1]] = patch[b]
        with torch.no_grad():
            x = full
            for m in list(self.features)[i:]:
                x = m(x)
            logits = self._rest(x)
        if watched is None and sums:
            watched = sums[0]
        return logits, watched

    def _window_sums(self, i: int, patch: torch.Tensor, starts, lens) -> torch.Tensor:
        base = self.outputs[i][0]
        total = base.flatten(1).sum(1)
        out = []
        for b, st in enumerate(starts):
            old = base[:, st[0]:st[0] + lens[0], st[1]:st[1] + lens[1]].flatten(1).sum(1)
            out.append(total - old + patch[b].flatten(1).sum(1))
        return torch.stack(out)
