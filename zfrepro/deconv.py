"""The deconvnet of §2.1: project one hidden unit back to pixel space (Fig. 1, 2, 4, 6, 7).

A :class:`DeconvNet` wraps a network whose convolutions form one plain sequential stack
(``model.features``: ``zfnet`` / ``alexnet`` from :mod:`zfrepro.models`, torchvision AlexNet
and VGG11-19 without batch norm). The forward pass records the max-pool switches; at the
chosen layer one activation ``(channel, row, col)`` per image keeps its value and every other
activation is set to zero; the signal then goes back down layer by layer:

* **unpool** — the exact transpose of max pooling given the switches: each pooled value goes
  back to the position its switch recorded; where overlapping windows (3×3 stride 2) share a
  switch, the contributions add;
* **rectify** — ReLU on the backward signal;
* **filter** — ``conv_transpose2d`` with the layer's own filters (no bias), sized so that its
  output has exactly the forward input's size (rows a strided convolution leaves over, and
  padding, are handled).

Usage::

    dn = DeconvNet(model)                       # norm="identity" by default
    dn.layers                                   # ["conv1", ..., "conv5"]
    pixels = dn.project(images, "conv5", channels)   # N×3×H×W, one unit per image

Speed: the signal of one unit only lives in that unit's receptive field, so :meth:`project`
crops it, layer by layer, to the exact window (from kernel, stride, padding, dilation) the
unit can reach (a batch of units at different positions shares one window size per layer,
with per-image offsets), and the forward pass stops at the requested layer. ``crop=False``
runs the plain full-map computation; both agree to float rounding (tested). The forward
replays the stack bit for bit as the modules compute it (so switches, ties included, are the
model's own), pooling in channels-last memory; strided first layers are transposed as a
polyphase ``conv2d``. Nothing is kept for autograd (everything runs under ``no_grad``): the
forward stores only the switches (and what ``norm="scale"``/``"jacobian"`` needs).
Benchmark: ``benchmarks/bench_deconv.py``.

Without contrast normalisation the projection equals, as a direction (it is scaled by the
unit's activation), ``captum.attr.Deconvolution`` / ``NeuronDeconvolution``: the gradient of
the unit with every ReLU's backward replaced by ReLU of the incoming gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .devices import full_precision
from .errors import DeconvError
from .layers import LayerStack, StopForward, eval_mode, forward_hooks, pair as _pair
from .lrn import lrn_forward

__all__ = ["DeconvNet", "DeconvError", "Projection", "NORM_MODES", "unpool"]

#: Treatments of contrast normalisation (``nn.LocalResponseNorm``) on the way down.
NORM_MODES = ("identity", "scale", "jacobian")

_IGNORED = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_TAIL_OK = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten)


class Projection(NamedTuple):
    """What :meth:`DeconvNet.project` returns with ``return_units=True``."""

    pixels: Tensor  #: N×3×H×W projections
    activations: Tensor  #: N, the value of each projected unit (its rectified activation)
    positions: Tensor  #: N×2 (row, col) of each unit in its layer's map


@dataclass
class _Op:
    kind: str  # "conv" | "relu" | "pool" | "norm"
    name: str  # paper-style name: conv3, relu3, pool2, norm2
    path: str  # qualified module name inside the model, e.g. "features.3"
    module: nn.Module
    occurrence: int = 0  # how many earlier ops use the same module object


@dataclass
class _Record:
    """What the forward pass leaves for the way down (per op)."""

    in_size: tuple[int, int] = (0, 0)
    indices: Tensor | None = None  # pool switches, flat in the input plane
    lrn: Tensor | None = None  # "scale": (k + α/n·Σx²)^-β ; "jacobian": the LRN input
    extra: dict[str, Any] = field(default_factory=dict)  # "buffer": a dead map reused on the way down


def _flatten_sequential(seq: nn.Sequential, prefix: str) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, mod in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(mod) is nn.Sequential:
            out.extend(_flatten_sequential(mod, path))
        else:
            out.append((path, mod))
    return out


_CL = torch.channels_last


def _lrn(x: Tensor, m: nn.LocalResponseNorm) -> tuple[Tensor, Tensor]:
    """``F.local_response_norm(x)`` bit for bit (:func:`zfrepro.lrn.lrn_forward`), and its divisor
    (k + α/n·Σ_window x²)^β, so the switches below stay exactly those of the model's own forward."""
    y, _, div = lrn_forward(x, m.size, m.alpha, m.beta, m.k)
    return y, div


def _nhwc(t: Tensor) -> Tensor:
    """(n, h·w, c) view of an N×C×H×W tensor (free when it is channels-last)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h * w, c)


def _from_nhwc(t: Tensor, h: int, w: int) -> Tensor:
    """Back from (n, h·w, c) to an N×C×H×W (channels-last) tensor."""
    n, _, c = t.shape
    return t.view(n, h, w, c).permute(0, 3, 1, 2)


def _gather_window(full: Tensor, oy: Tensor, ox: Tensor, h: int, w: int) -> Tensor:
    """Per-image h×w windows of ``full`` (N×C×H×W) at origins (oy, ox); out-of-map rows/cols
    are clamped to the border (callers only use them where the signal is zero)."""
    n, c, hh, ww = full.shape
    dev = full.device
    rows = (oy[:, None] + torch.arange(h, device=dev)).clamp_(0, hh - 1)
    cols = (ox[:, None] + torch.arange(w, device=dev)).clamp_(0, ww - 1)
    flat = (rows[:, :, None] * ww + cols[:, None, :]).view(n, h * w, 1).expand(n, h * w, c)
    return _from_nhwc(_nhwc(full).gather(1, flat), h, w)


def _shift(sig: Tensor, dim: int, old: Tensor, new: Tensor, size: int) -> Tensor:
    """Re-window ``sig`` along ``dim`` (2 rows, 3 cols) from per-image origins ``old`` to
    ``new`` with length ``size``; positions the old window did not hold become zero."""
    n = sig.shape[0]
    length = sig.shape[dim]
    idx = new[:, None] - old[:, None] + torch.arange(size, device=sig.device)
    valid = (idx >= 0) & (idx < length)
    idx = idx.clamp(0, length - 1)
    shape = [n, 1, 1, 1]
    shape[dim] = size
    expand = list(sig.shape)
    expand[dim] = size
    out = sig.gather(dim, idx.view(shape).expand(expand))
    return out.mul_(valid.view(shape).to(sig.dtype)).contiguous(memory_format=_CL)


def _mask_outside(sig: Tensor, dim: int, origin: Tensor, limit: int) -> Tensor:
    """Zero (in place) the rows/cols of a window that lie outside the map [0, limit)."""
    pos = origin[:, None] + torch.arange(sig.shape[dim], device=sig.device)
    valid = (pos >= 0) & (pos < limit)
    shape = [sig.shape[0], 1, 1, 1]
    shape[dim] = sig.shape[dim]
    return sig.mul_(valid.view(shape).to(sig.dtype))


def unpool(pooled: Tensor, switches: Tensor, size: Sequence[int]) -> Tensor:
    """Unpool with switches (Fig. 1, bottom): the exact transpose of max pooling.

    ``pooled`` N×C×h×w, ``switches`` the flat indices that ``F.max_pool2d(..., return_indices=True)``
    recorded, ``size`` the (H, W) of the map that was pooled. Each value goes back to the position
    its switch names; where overlapping windows share a switch their contributions add (the
    transpose of pooling, unlike ``F.max_unpool2d``, which keeps only one of them).
    """
    n, c = pooled.shape[:2]
    hh, ww = int(size[0]), int(size[1])
    return pooled.new_zeros(n, c, hh * ww).scatter_add_(
        2, switches.reshape(n, c, -1), pooled.reshape(n, c, -1)).view(n, c, hh, ww)


def _unpool(sig: Tensor, idx: Tensor, width: int, origin: tuple[Tensor, Tensor] | None,
            size: tuple[int, int], buffer: Tensor | None = None) -> Tensor:
    """Send each pooled value to its switch, adding where switches coincide (the transpose of
    max pooling; ``F.max_unpool2d`` would overwrite). ``idx``: flat switch positions in a map
    of ``width`` columns, same shape as ``sig``; the result is the ``size`` window at
    per-image ``origin`` (None: the whole map, origin 0). ``buffer``: a dead channels-last
    tensor of the result's shape to reuse (saves a large fresh allocation)."""
    n, c, h, w = sig.shape
    hh, ww = size
    if origin is None:
        rel = _nhwc(idx)
    else:
        rows = idx // width - origin[0].view(n, 1, 1, 1)
        cols = idx % width - origin[1].view(n, 1, 1, 1)
        rel = _nhwc((rows * ww + cols).clamp_(0, hh * ww - 1))  # clamps only zero-signal slots
    if (buffer is not None and buffer.shape == (n, c, hh, ww) and buffer.dtype == sig.dtype
            and buffer.is_contiguous(memory_format=_CL)):
        out = _nhwc(buffer).zero_()
    else:
        out = sig.new_zeros(n, hh * ww, c)
    out.scatter_add_(1, rel, _nhwc(sig))
    return _from_nhwc(out, hh, ww)


def _polyphase_weight(m: nn.Conv2d, cache: dict[int, tuple[Any, ...]]) -> Tensor:
    """The s×s polyphase components of ``m``'s flipped filters as one stride-1 conv weight
    (C_in·s², C_out, ⌈kh/s⌉, ⌈kw/s⌉); kept in ``cache`` until the weight changes."""
    wt = m.weight
    stamp = (wt._version, wt.data_ptr(), wt.dtype, wt.device, tuple(wt.shape))
    hit = cache.get(id(m))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    st, k = _pair(m.stride)[0], _pair(m.kernel_size)
    co, ci = wt.shape[0], wt.shape[1]
    kh, kw = math.ceil(k[0] / st), math.ceil(k[1] / st)
    with torch.no_grad():
        wp = F.pad(wt.detach(), (0, kw * st - k[1], 0, kh * st - k[0])).view(co, ci, kh, st, kw, st).flip(2, 4)
        wp = wp.permute(1, 3, 5, 0, 2, 4).reshape(ci * st * st, co, kh, kw).contiguous()
    cache[id(m)] = (stamp, wp)
    return wp


def _transpose_conv(sig: Tensor, m: nn.Conv2d, cache: dict[int, tuple[Any, ...]]) -> Tensor:
    """``conv_transpose2d(sig, m.weight)`` with padding 0 (no bias): output length
    (h-1)·s + d·(k-1) + 1 per dimension, the whole reach of ``sig``.

    For a strided layer with few input channels (conv1: 3) it runs as one stride-1 ``conv2d``
    on the polyphase components of the flipped filters, then ``pixel_shuffle``: the same sums,
    faster on CPU than oneDNN's transposed convolution with 3 output channels (README, "Measured here")."""
    s, d, k = _pair(m.stride), _pair(m.dilation), _pair(m.kernel_size)
    h, w = sig.shape[2], sig.shape[3]
    poly = m.groups == 1 and d == (1, 1) and s[0] == s[1] > 1 and m.in_channels <= 4
    if not poly:
        return F.conv_transpose2d(sig, m.weight, None, s, 0, 0, m.groups, d)
    kh, kw = math.ceil(k[0] / s[0]), math.ceil(k[1] / s[1])
    z = F.conv2d(sig, _polyphase_weight(m, cache), None, 1, (kh - 1, kw - 1))  # (n, C·s·s, qh, qw)
    n, _, qh, qw = z.shape
    st, c = s[0], m.in_channels
    # interleave the phases (pixel shuffle): out[c, q1·s + r1, q2·s + r2] = z[c·s² + r1·s + r2, q1, q2]
    z = z.view(n, c, st, st, qh, qw).permute(0, 1, 4, 2, 5, 3).reshape(n, c, qh * st, qw * st)
    return z[:, :, : (h - 1) * st + k[0], : (w - 1) * st + k[1]]


class DeconvNet:
    """Zeiler & Fergus's deconvnet attached to a trained network (§2.1, Fig. 1).

    ``model`` is ``zfnet``/``alexnet`` from :mod:`zfrepro.models`, torchvision ``alexnet`` or
    ``vgg11``-``vgg19`` (not ``*_bn``): any model whose convolutions form one ``nn.Sequential``
    (``model.features``, or the model itself) of ``Conv2d``, ``ReLU``, ``MaxPool2d``,
    ``LocalResponseNorm``, ``Dropout``/``Identity``. Every convolution must be followed by an
    ``nn.ReLU`` module (its rectified output is what gets projected). Anything else
    (BatchNorm, residual blocks, unknown modules) raises :class:`DeconvError` naming it. At first
    use the wrapper checks, on a random probe, that replaying the stack reproduces the real
    model's activations (a ``forward`` that hides an ``F.relu`` or a residual connection fails
    with an error naming the module); pass ``check=False`` to skip this.

    ``norm`` chooses how contrast normalisation is treated on the way down:

    * ``"identity"`` (default): the signal passes through unchanged.
    * ``"scale"``: multiplied by the forward pass's local divisor (k + α/n·Σx²)^(-β) at that
      position and channel — the diagonal of the normalisation's Jacobian.
    * ``"jacobian"``: the exact transpose of the normalisation's Jacobian at the forward input
      (the projection then equals captum's Deconvolution on the full network).

    Why ``"identity"`` is the default: the paper's deconvnet layer is unpool → rectify → filter
    (§2.1, Fig. 1) and contrast normalisation is not mentioned in it, so the most literal reading
    is to let the signal pass through unchanged. It is also nearly what the other treatments do:
    with the constants of §3 (k = 2, α = 10⁻⁴, n = 5, β = 0.75) the divisor is
    2^0.75·(1 + α/(n·k)·Σx²)^0.75 with α/(n·k) = 10⁻⁵, so for the activations of normalised
    images (Σx² well under 10³) "scale" multiplies the signal by a near-constant 2^-0.75 ≈ 0.59,
    invisible once each projection is contrast-stretched for display, and the cross-channel
    terms that "jacobian" adds are of the same 10⁻⁵·x² order, signed, and make the signal at a
    position depend on other feature maps, which the paper's description does not do. Finally,
    with "identity" a projection is exactly what captum's ``Deconvolution`` computes on the
    network without its normalisation layers (given the same switches), a quantity anyone can
    recompute; "scale" and "jacobian" stay available to show that a figure does not depend on
    this choice.

    Projections follow eval-mode semantics (Dropout is the identity) whatever ``model.training``
    is. Runs on the device and dtype of the model's weights; images must match.
    """

    def __init__(self, model: nn.Module, norm: str = "identity", check: bool = True) -> None:
        if norm not in NORM_MODES:
            raise DeconvError(f"unknown norm treatment {norm!r}: use one of {', '.join(NORM_MODES)}")
        if not isinstance(model, nn.Module):
            raise DeconvError(f"DeconvNet needs an nn.Module, got {type(model).__name__}: pass the network itself")
        self.model = model
        self.norm = norm
        self.check = bool(check)
        self._stack = LayerStack(model)
        self._ops: list[_Op] = self._parse(model, self._stack)
        self.layers: list[str] = [op.name for op in self._ops if op.kind == "conv"]
        self._conv_index = {op.name: i for i, op in enumerate(self._ops) if op.kind == "conv"}
        # index of the ReLU that rectifies each conv (the op the projection starts from)
        self._relu_index: dict[str, int] = {}
        for name, ci in self._conv_index.items():
            self._relu_index[name] = ci + 1  # guaranteed by _parse
        self._checked_upto = -1  # deepest op index whose output was verified against the model
        self._poly: dict[int, tuple[Any, ...]] = {}  # polyphase filters of strided conv1-like layers

    # ------------------------------------------------------------------ structure

    @staticmethod
    def _parse(model: nn.Module, stack: LayerStack) -> list[_Op]:
        feats = getattr(model, "features", None)
        if isinstance(feats, nn.Sequential):
            mods, prefix = _flatten_sequential(feats, "features"), "features"
        elif isinstance(model, nn.Sequential):
            mods, prefix = _flatten_sequential(model, ""), ""
        else:
            raise DeconvError(
                f"{type(model).__name__} has no plain sequential conv stack: DeconvNet needs the "
                "convolutions in an nn.Sequential `model.features` (like AlexNet/VGG/zfnet)")
        all_convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not all_convs:
            raise DeconvError(f"{type(model).__name__} has no Conv2d layer: nothing to project")
        last_conv = max(i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d)) \
            if any(isinstance(m, nn.Conv2d) for _, m in mods) else -1
        stack_convs = {id(m) for _, m in mods if isinstance(m, nn.Conv2d)}
        outside = [n for n, m in all_convs if id(m) not in stack_convs]
        if outside:
            where = f"`{prefix}`" if prefix else "the model's sequential stack"
            raise DeconvError(
                f"Conv2d {outside[0]} lies outside {where}: DeconvNet needs every convolution "
                "in one plain sequential stack")
        conv_names = stack.convs
        ops: list[_Op] = []
        seen: dict[int, int] = {}
        n_conv = 0
        pending_relu: str | None = None  # conv name still waiting for its ReLU
        for i, (path, m) in enumerate(mods):
            if isinstance(m, nn.Conv2d):
                if n_conv >= len(conv_names):
                    raise DeconvError(
                        f"{path} (Conv2d) is used twice in the stack: DeconvNet needs distinct conv modules")
                if pending_relu is not None:
                    raise DeconvError(
                        f"{pending_relu} ({path!s} follows it) has no nn.ReLU module after it: the "
                        "deconvnet projects rectified outputs; use nn.ReLU modules, not F.relu in forward")
                if m.padding_mode != "zeros" or isinstance(m.padding, str) or m.transposed:
                    raise DeconvError(
                        f"{path} (Conv2d) uses padding={m.padding!r}, padding_mode={m.padding_mode!r}: "
                        "DeconvNet supports numeric zero padding only")
                name = conv_names[n_conv]
                n_conv += 1
                ops.append(_Op("conv", name, path, m))
                pending_relu = name
            elif isinstance(m, nn.ReLU):
                ops.append(_Op("relu", f"relu{n_conv}", path, m))
                pending_relu = None
                if i > last_conv and n_conv == len(conv_names):
                    break  # the last conv is rectified: nothing below is needed
            elif isinstance(m, _IGNORED):
                continue
            elif isinstance(m, nn.MaxPool2d) and pending_relu is None:
                ops.append(_Op("pool", f"pool{n_conv}", path, m))
            elif isinstance(m, nn.LocalResponseNorm) and pending_relu is None:
                ops.append(_Op("norm", f"norm{n_conv}", path, m))
            elif i > last_conv and isinstance(m, _TAIL_OK) and pending_relu is None:
                break
            else:
                kind = type(m).__name__
                if pending_relu is not None:
                    raise DeconvError(
                        f"{pending_relu} is followed by {path} ({kind}) instead of nn.ReLU: the "
                        "deconvnet needs each convolution rectified by an nn.ReLU module right after it")
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    raise DeconvError(
                        f"DeconvNet cannot invert {path} ({kind}): batch normalisation has no "
                        "deconvnet counterpart; use a model without it (e.g. vgg11 instead of vgg11_bn)")
                raise DeconvError(
                    f"DeconvNet cannot invert {path} ({kind}): supported modules before the last "
                    "conv are Conv2d, ReLU, MaxPool2d, LocalResponseNorm, Dropout, Identity")
        if pending_relu is not None:
            raise DeconvError(
                f"{pending_relu} has no nn.ReLU module after it: the deconvnet projects rectified "
                "outputs; use nn.ReLU modules, not F.relu in forward")
        for op in ops:
            op.occurrence = seen.get(id(op.module), 0)
            seen[id(op.module)] = op.occurrence + 1
        return ops

    def __repr__(self) -> str:
        chain = " ".join(op.name for op in self._ops)
        return f"DeconvNet({type(self.model).__name__}, norm={self.norm!r}: {chain})"

    # ------------------------------------------------------------------ checks

    def _layer_op(self, layer: str) -> int:
        self._stack.check_conv(layer, "the deconvnet projects the maps of convolutions")
        return self._relu_index[layer]

    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise DeconvError(f"images must be a float tensor N×C×H×W, got {shape}: add a batch dimension")
        op0 = next(op for op in self._ops if op.kind == "conv")
        first = op0.module
        w = first.weight
        if images.shape[1] != first.in_channels:
            raise DeconvError(
                f"images have {images.shape[1]} channels but {op0.name} expects "
                f"{first.in_channels}: pass N×{first.in_channels}×H×W images")
        if not images.is_floating_point():
            raise DeconvError(f"images have dtype {images.dtype}: convert to {w.dtype} and normalise first")
        if images.device != w.device:
            raise DeconvError(f"images are on {images.device} but the model is on {w.device}: move one of them")
        if images.dtype != w.dtype:
            raise DeconvError(f"images are {images.dtype} but the model is {w.dtype}: convert the images")
        return images

    def verify(self, images: Tensor, layer: str | None = None) -> None:
        """Check that replaying the stack reproduces the model's own activations up to ``layer``
        (default: the last conv) on a random probe shaped like ``images[:1]``; raises
        :class:`DeconvError` naming the first module whose output differs (a ``forward`` with a
        hidden ``F.relu``, residual connection or reordering). Runs once per depth, at first use."""
        images = self._check_images(images)
        upto = self._layer_op(layer if layer is not None else self.layers[-1])
        if upto <= self._checked_upto:
            return
        gen = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.randn(images[:1].shape, generator=gen, dtype=images.dtype).to(images.device)
        # what the replay expects each watched module to output, in call order per module
        expected: dict[int, list[Tensor]] = {}
        x = probe
        with torch.no_grad():
            for op in self._ops[: upto + 1]:
                x = self._forward_op(op, x, None, inplace=False)
                if op.kind in ("conv", "relu"):
                    expected.setdefault(id(op.module), []).append(x)
        got: dict[int, list[Tensor]] = {k: [] for k in expected}
        wanted = sum(len(v) for v in expected.values())
        count = [0]

        def keep(key: int, out: Any) -> bool:
            if isinstance(out, Tensor):
                got[key].append(out.detach().clone())
                count[0] += 1
            return count[0] >= wanted

        watched = {id(op.module): op.module for op in self._ops[: upto + 1] if op.kind in ("conv", "relu")}
        failure: str | None = None
        with forward_hooks(watched, keep), eval_mode(self.model), torch.no_grad():
            try:
                self.model(probe)
            except StopForward:
                pass
            except Exception as exc:  # the model's own forward failed before reaching the layer
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for j, op in enumerate(self._ops[: upto + 1]):
            if op.kind not in ("conv", "relu") or j <= self._checked_upto:
                continue
            outs = got[id(op.module)]
            if len(outs) <= op.occurrence:
                why = f" (the model's forward failed: {failure})" if failure else ""
                raise DeconvError(
                    f"the model's forward never ran {op.path} ({op.name}) the way the sequential stack "
                    f"does{why}: DeconvNet needs forward = the stack applied in order")
            ref = expected[id(op.module)][op.occurrence]
            real = outs[op.occurrence]
            same = real.shape == ref.shape and (
                real.numel() == 0 or float((real - ref).abs().max()) <= 1e-4 * float(real.abs().max()))
            if not same:
                raise DeconvError(
                    f"the model's forward does not match its layer stack at {op.path} ({op.name}, "
                    f"{type(op.module).__name__}): it hides an operation (functional relu, residual "
                    "connection, ...); DeconvNet needs forward = the nn.Sequential stack in order")
        self._checked_upto = upto

    # ------------------------------------------------------------------ forward

    def _forward_op(self, op: _Op, x: Tensor, rec: _Record | None, inplace: bool = True) -> Tensor:
        """One op of the stack, bit for bit what the module computes (so switches and ties are
        the model's own): convolutions run in the input's memory layout; max pooling runs in
        channels-last memory (oneDNN's fast layout with switches, README "Measured here"; values and
        tie-breaking are layout-independent) and hands back the input's layout."""
        m = op.module
        if rec is not None:
            rec.in_size = (x.shape[-2], x.shape[-1])
        if op.kind == "conv":
            return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        if op.kind == "relu":
            return x.relu_() if inplace else F.relu(x)
        if op.kind == "pool":
            fmt = _CL if x.is_contiguous(memory_format=_CL) and not x.is_contiguous() else torch.contiguous_format
            xc = x.contiguous(memory_format=_CL) if x.device.type == "cpu" else x
            if rec is None:
                y = F.max_pool2d(xc, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            else:
                y, idx = F.max_pool2d(xc, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                      return_indices=True)
                rec.indices = idx
                if xc is not x:  # a dead copy: the way down reuses it as the unpooling target
                    rec.extra["buffer"] = xc
            return y.contiguous(memory_format=fmt)
        # LocalResponseNorm
        y, div = _lrn(x, m)
        if rec is not None and self.norm == "scale":
            rec.lrn = div.reciprocal_()
        elif rec is not None and self.norm == "jacobian":
            rec.lrn = x
        return y

    def _forward(self, images: Tensor, upto: int, record: bool) -> tuple[Tensor, list[_Record]]:
        """Replay the stack up to op ``upto``; records what the way down needs."""
        recs: list[_Record] = []
        x = images
        with torch.no_grad():
            for op in self._ops[: upto + 1]:
                rec = _Record() if record else None
                x = self._forward_op(op, x, rec, inplace=x is not images)
                if rec is not None:
                    recs.append(rec)
        return x, recs

    @full_precision()
    def forward_to(self, images: Tensor, layer: str) -> Tensor:
        """Rectified activations of ``layer`` (after its ReLU, before pooling), N×C×h×w.

        The quantity the paper calls a feature map's activation (Fig. 2's "strongest
        activation", Fig. 7's occlusion curves); the forward stops at ``layer``."""
        upto = self._layer_op(layer)
        images = self._check_images(images)
        if self.check:
            self.verify(images, layer)
        x, _ = self._forward(images, upto, record=False)
        return x.contiguous()

    # ------------------------------------------------------------------ selection

    def _select(self, act: Tensor, layer: str, channels: Any, positions: Any) -> tuple[Tensor, Tensor, Tensor]:
        n, c, h, w = act.shape
        dev = act.device
        if isinstance(channels, int) or (isinstance(channels, Tensor) and channels.dim() == 0):
            ch = torch.full((n,), int(channels), dtype=torch.long, device=dev)
        else:
            try:
                ch = torch.as_tensor(channels).to(device=dev)
            except Exception:
                raise DeconvError(f"channels must be N ints, got {type(channels).__name__}: pass a list or tensor") from None
            if ch.is_floating_point() or ch.dim() != 1 or ch.numel() != n:
                raise DeconvError(
                    f"channels must be {n} ints (one feature map per image), got shape "
                    f"{tuple(ch.shape)} {ch.dtype}: pass one channel index per image")
            ch = ch.long()
        if n and (int(ch.min()) < 0 or int(ch.max()) >= c):
            bad = int(ch[(ch < 0) | (ch >= c)][0])
            raise DeconvError(f"channel {bad} is out of range for {layer}, which has {c} feature maps: use 0..{c - 1}")
        idx = torch.arange(n, device=dev)
        maps = act[idx, ch]  # N×h×w
        if positions is None:
            flat = maps.reshape(n, -1).argmax(1) if n else torch.zeros(0, dtype=torch.long, device=dev)
            rows, cols = flat // w, flat % w
        else:
            try:
                pos = torch.as_tensor(positions).to(device=dev)
            except Exception:
                raise DeconvError(f"positions must be N×2 (row, col), got {type(positions).__name__}") from None
            if pos.is_floating_point() or pos.dim() != 2 or pos.shape != (n, 2):
                raise DeconvError(
                    f"positions must be {n}×2 ints (row, col), got shape {tuple(pos.shape)} "
                    f"{pos.dtype}: pass one (row, col) per image or None for each map's maximum")
            pos = pos.long()
            rows, cols = pos[:, 0], pos[:, 1]
            out = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
            if bool(out.any()):
                i = int(out.nonzero()[0, 0])
                raise DeconvError(
                    f"position ({int(rows[i])}, {int(cols[i])}) of image {i} is outside {layer}'s "
                    f"{h}×{w} map: use rows 0..{h - 1} and cols 0..{w - 1}")
        values = maps[idx, rows, cols]
        return ch, torch.stack([rows, cols], 1), values

    # ------------------------------------------------------------------ backward (deconv)

    def _deconv_norm(self, op: _Op, rec: _Record, sig: Tensor, window: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.norm == "identity":
            return sig
        data = rec.lrn
        assert data is not None
        if window is not None:
            data = _gather_window(data, window[0], window[1], sig.shape[2], sig.shape[3])
        if self.norm == "scale":
            return sig * data
        m = op.module
        with torch.enable_grad():
            x = data.detach().requires_grad_(True)
            y = F.local_response_norm(x, m.size, m.alpha, m.beta, m.k)
            (g,) = torch.autograd.grad(y, x, sig)
        return g

    def _backward_full(self, ops: list[_Op], recs: list[_Record], sig: Tensor,
                       trace: list[tuple[str, Tensor]] | None = None) -> Tensor:
        """The plain deconvnet on whole maps (reference for the cropped path; used by trace)."""
        for op, rec in zip(reversed(ops), reversed(recs)):
            m = op.module
            if op.kind == "relu":
                sig = F.relu(sig)
                stage = f"{op.name}: rectify"
            elif op.kind == "conv":
                hh, ww = rec.in_size
                s, p, d, k = _pair(m.stride), _pair(m.padding), _pair(m.dilation), _pair(m.kernel_size)
                opad = tuple(
                    size - ((sig.shape[2 + a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + 1)
                    for a, size in enumerate((hh, ww)))
                sig = F.conv_transpose2d(sig, m.weight, None, s, p, opad, m.groups, d)
                stage = f"{op.name}: filter (transposed)"
            elif op.kind == "pool":
                assert rec.indices is not None
                sig = unpool(sig, rec.indices, rec.in_size)
                stage = f"{op.name}: unpool"
            else:
                sig = self._deconv_norm(op, rec, sig, None)
                stage = f"{op.name}: {self.norm}"
            if trace is not None:
                trace.append((stage, sig.contiguous()))
        return sig.contiguous()

    def _backward_cropped(self, ops: list[_Op], recs: list[_Record], sig: Tensor,
                          oy: Tensor, ox: Tensor, full_size: tuple[int, int]) -> Tensor:
        """The deconvnet on per-image windows that hold the unit's whole reach (exact).

        ``sig`` is N×C×h×w at per-image origins (oy, ox) of a map of ``full_size``; a dimension
        whose window covers the map becomes "full" (origin 0, the map's size) from then on."""
        zero = torch.zeros_like(oy)
        full = [sig.shape[2] >= full_size[0], sig.shape[3] >= full_size[1]]
        if full[0]:
            sig, oy = _shift(sig, 2, oy, zero, full_size[0]), zero
        if full[1]:
            sig, ox = _shift(sig, 3, ox, zero, full_size[1]), zero
        for op, rec in zip(reversed(ops), reversed(recs)):
            m = op.module
            if op.kind == "relu":
                sig = sig.relu_()  # every signal here is a fresh tensor of this pass
            elif op.kind == "norm":
                sig = self._deconv_norm(op, rec, sig, (oy, ox))
            elif op.kind == "conv":
                lower = rec.in_size
                s, p = _pair(m.stride), _pair(m.padding)
                sig = _transpose_conv(sig, m, self._poly)  # padding 0: the whole reach of the window
                origins = [oy, ox]
                crop = [0, 0, 0, 0]  # F.pad order: left, right, top, bottom
                for a in range(2):
                    if full[a]:
                        # the whole map: rows [p, p + lower) of the transposed output; rows a
                        # stride leaves over at the end get their share, missing ones are zero
                        crop[2 * (1 - a)] = -p[a]
                        crop[2 * (1 - a) + 1] = lower[a] - (sig.shape[2 + a] - p[a])
                    else:
                        origins[a] = origins[a] * s[a] - p[a]
                if any(crop):
                    sig = F.pad(sig, crop).contiguous(memory_format=_CL)
                for a in range(2):
                    if full[a]:
                        continue
                    if sig.shape[2 + a] >= lower[a]:
                        sig = _shift(sig, 2 + a, origins[a], zero, lower[a])
                        origins[a], full[a] = zero, True
                    else:
                        sig = _mask_outside(sig, 2 + a, origins[a], lower[a])
                oy, ox = origins
            else:  # pool: scatter each value to its switch, inside the lower window
                lower = rec.in_size
                s, p, d, k = _pair(m.stride), _pair(m.padding), _pair(m.dilation), _pair(m.kernel_size)
                h, w = sig.shape[2], sig.shape[3]
                assert rec.indices is not None
                idx = rec.indices
                if not (full[0] and full[1]):
                    idx = _gather_window(idx, oy, ox, h, w)
                new_o, new_len = [oy, ox], [0, 0]
                for a, length in enumerate((h, w)):
                    if full[a]:
                        new_o[a], new_len[a] = zero, lower[a]
                        continue
                    span = (length - 1) * s[a] + d[a] * (k[a] - 1) + 1
                    if span >= lower[a]:
                        new_o[a], new_len[a], full[a] = zero, lower[a], True
                    else:
                        new_o[a], new_len[a] = new_o[a] * s[a] - p[a], span
                both = full[0] and full[1]
                sig = _unpool(sig, idx, lower[1], None if both else (new_o[0], new_o[1]),
                              (new_len[0], new_len[1]), rec.extra.pop("buffer", None))
                oy, ox = new_o
        # at the input: place each window in the full image
        if not full[0]:
            sig = _shift(sig, 2, oy, zero, recs[0].in_size[0])
        if not full[1]:
            sig = _shift(sig, 3, ox, zero, recs[0].in_size[1])
        return sig.contiguous()

    # ------------------------------------------------------------------ public API

    @full_precision()
    def project(self, images: Tensor, layer: str, channels: Sequence[int] | Tensor | int,
                positions: Sequence[Sequence[int]] | Tensor | None = None, *,
                crop: bool = True, strict: bool = False, return_units: bool = False,
                values: Sequence[float] | Tensor | None = None) -> Tensor | Projection:
        """Project one unit per image of ``layer`` down to pixels (Fig. 2, 4, 6, 7).

        ``images`` N×3×H×W (normalised as the model expects); ``channels`` N ints (one feature
        map per image; an int applies to all); ``positions`` N×2 (row, col) in the layer's map,
        or ``None`` for each image's maximum of its map. The unit keeps its rectified
        activation, every other unit of the layer is zeroed, and the signal is unpooled,
        rectified and filtered down to the input: one forward (to ``layer``) and one backward
        pass for the whole batch. Returns a tensor shaped like ``images``.

        ``crop=False`` runs the full-map computation (same result; slower). A unit whose
        activation is zero projects to zeros; ``strict=True`` raises :class:`DeconvError`
        instead. ``return_units=True`` returns a :class:`Projection` (pixels, activations,
        positions). ``values`` (N numbers) replaces the kept activations: the same top signal sent
        down through different images' switches (§2.1: projections are not samples from the model).
        """
        upto = self._layer_op(layer)
        images = self._check_images(images)
        if images.shape[0] == 0:
            empty = torch.zeros_like(images)
            none = torch.zeros(0, dtype=images.dtype, device=images.device)
            return Projection(empty, none, torch.zeros(0, 2, dtype=torch.long, device=images.device)) \
                if return_units else empty
        if self.check:
            self.verify(images, layer)
        ops = self._ops[: upto + 1]
        act, recs = self._forward(images, upto, record=True)
        ch, pos, kept = self._select(act, layer, channels, positions)
        if values is None:
            values = kept
        else:
            values = torch.as_tensor(values, dtype=act.dtype, device=act.device).reshape(-1)
            if values.numel() != images.shape[0]:
                raise DeconvError(f"values has {values.numel()} entries for {images.shape[0]} images: give one per image")
        if strict and bool((values <= 0).any()):
            dead = (values <= 0).nonzero()[:, 0].tolist()
            raise DeconvError(
                f"{layer} unit(s) of image(s) {dead[:10]} have zero activation, so their projections are "
                "all zero: choose other channels/positions (positions=None picks each map's maximum) "
                "or pass strict=False")
        n = images.shape[0]
        idx = torch.arange(n, device=images.device)
        with torch.no_grad():
            if crop:
                sig = act.new_zeros(n, act.shape[1], 1, 1)
                sig[idx, ch, 0, 0] = values
                out = self._backward_cropped(ops, recs, sig, pos[:, 0].clone(), pos[:, 1].clone(),
                                             (act.shape[2], act.shape[3]))
            else:
                sig = torch.zeros_like(act)
                sig[idx, ch, pos[:, 0], pos[:, 1]] = values
                out = self._backward_full(ops, recs, sig)
        if return_units:
            return Projection(out, values, pos)
        return out

    @full_precision()
    def trace(self, images: Tensor, layer: str, channels: Sequence[int] | Tensor | int,
              positions: Sequence[Sequence[int]] | Tensor | None = None) -> list[tuple[str, Tensor]]:
        """Every intermediate signal of the deconvnet from ``layer`` down to pixels (Fig. 1).

        Returns ``[(stage, tensor), ...]``: first ``"<layer>: selected unit"`` (the layer's
        rectified map with one unit kept), then one entry per step on the way down, e.g.
        ``"relu2: rectify"``, ``"conv2: filter (transposed)"``, ``"norm1: identity"``,
        ``"pool1: unpool"``, ... ending with ``"conv1: filter (transposed)"``, the pixels (equal
        to :meth:`project`). Full maps, for the notebook that shows one deconvnet layer as
        unpool → rectify → filter with its intermediate maps."""
        upto = self._layer_op(layer)
        images = self._check_images(images)
        if self.check:
            self.verify(images, layer)
        act, recs = self._forward(images, upto, record=True)
        ch, pos, values = self._select(act, layer, channels, positions)
        n = images.shape[0]
        idx = torch.arange(n, device=images.device)
        sig = torch.zeros_like(act)
        sig[idx, ch, pos[:, 0], pos[:, 1]] = values
        steps: list[tuple[str, Tensor]] = [(f"{layer}: selected unit", sig.contiguous())]
        with torch.no_grad():
            self._backward_full(self._ops[: upto + 1], recs, sig, steps)
        return steps
