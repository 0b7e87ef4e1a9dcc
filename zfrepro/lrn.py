"""Contrast normalisation across feature maps (§3, Fig. 3: layers 1 and 2), forward and backward.

    b_c = a_c / (k + α/n · Σ_{j ∈ window(c)} a_j²)^β,   window(c) = c - n//2 … c + (n-1)//2

is what ``nn.LocalResponseNorm`` computes, through a padded ``avg_pool3d`` whose forward and
backward are slow on CPU and allocate a padded 5-D copy. Here the window sum is a few in-place
channel shifts, in the same order of operations as PyTorch's reference, so the forward is **bit for
bit** ``F.local_response_norm`` (in any memory format); the backward is the exact gradient written
out by hand (one more window sum, over the transposed window):

    ∂L/∂a_j = g_j / d_j − (2αβ/n) · a_j · Σ_{c : j ∈ window(c)} g_c · b_c / base_c,
    base_c = k + α/n · Σ a², d_c = base_c^β.

:class:`CrossChannelLRN` is an ``nn.LocalResponseNorm`` (so every ``isinstance`` check, checkpoint
and deconvnet rule treats it as one) that runs this. The networks of :mod:`zfrepro.models` use it;
training, evaluation, scans and occlusion all go through it. ``benchmarks/bench_train_step.py``
measures what it saves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["lrn_forward", "local_response_norm", "CrossChannelLRN"]


def _window_sum(x: Tensor, before: int, after: int) -> Tensor:
    """``out[:, c] = Σ x[:, c-before … c+after]`` over the channel dimension (zeros outside), summed
    from the lowest channel up as PyTorch's padded average pool does."""
    c = x.shape[1]
    out = torch.zeros_like(x)
    for off in range(-before, after + 1):  # out[:, j] += x[:, j + off]
        if off < 0 and c + off > 0:
            out[:, -off:] += x[:, : c + off]
        elif off > 0 and c - off > 0:
            out[:, : c - off] += x[:, off:]
        elif off == 0:
            out += x
    return out


def lrn_forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(F.local_response_norm(x, size, alpha, beta, k), base, divisor)``, the first bit for bit;
    ``base = k + α/n·Σ_window x²`` and ``divisor = base^β``. The deconvnet (Fig. 1) keeps the divisor
    of the forward pass for its ``"scale"`` rule."""
    base = _window_sum(x * x, size // 2, (size - 1) // 2).div_(size).mul_(alpha).add_(k)
    div = base.pow(beta)
    return x / div, base, div


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        y, base, div = lrn_forward(x, size, alpha, beta, k)
        ctx.save_for_backward(x, base, div)
        ctx.consts = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, base, div = ctx.saved_tensors
        size, alpha, beta = ctx.consts
        gd = g / div                                   # g_c / d_c
        t = (gd * x).div_(base)                        # g_c · b_c / base_c
        # transposed window: a_j is in window(c) for c = j - (n-1)//2 … j + n//2
        s = _window_sum(t, (size - 1) // 2, size // 2)
        grad = gd.sub_(s.mul_(x).mul_(2.0 * alpha * beta / size))
        return grad, None, None, None, None


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """``F.local_response_norm`` (same values, bit for bit) with a hand-written backward; inputs of
    shape (N, C, ...). Used by the training step (issue #18)."""
    if x.dim() < 3:
        raise ValueError(f"local_response_norm needs an input of 3 or more dimensions (N, C, ...), got {x.dim()}")
    if not torch.is_grad_enabled() or not x.requires_grad:
        return lrn_forward(x, size, alpha, beta, k)[0]
    return _LRN.apply(x, size, alpha, beta, k)


class CrossChannelLRN(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` computed by :func:`local_response_norm`: the same values, a faster
    backward. Fig. 3's "contrast normalization across feature maps"."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Module's signature
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)
