"""Autograd projections of one hidden unit to pixels under three ReLU rules (Fig. 1 notebook, §2.1).

The deconvnet, the plain gradient (Simonyan et al. 2013) and guided backpropagation (Springenberg et
al. 2014) differ only in how the backward signal ``R`` crosses a ReLU whose forward input was ``X``:

- ``"gradient"``:  ``R_in = R_out · 1(X > 0)``            (the chain rule)
- ``"deconvnet"``: ``R_in = relu(R_out)``                  (Zeiler & Fergus: rectify the signal)
- ``"guided"``:    ``R_in = relu(R_out) · 1(X > 0)``      (both masks)

Everything else (max-pool switches, transposed filters) is the same backward pass. :func:`project_by_rule`
computes any of the three with autograd on the real model, so the explicit deconvnet in
:mod:`zfrepro.deconv` can be checked against it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .devices import full_precision
from .errors import ConfigError
from .layers import LayerStack, eval_mode

__all__ = ["RULES", "project_by_rule", "relu_rule"]

RULES = ("gradient", "deconvnet", "guided")


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:  # type: ignore[override]
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if ctx.rule == "gradient":
            return grad * (x > 0), None
        if ctx.rule == "deconvnet":
            return grad.clamp_min(0), None
        return grad.clamp_min(0) * (x > 0), None


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[nn.Module]:
    """Temporarily make every ``nn.ReLU`` of ``model`` back-propagate with ``rule``."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}: use one of {', '.join(RULES)}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    for m in relus:
        m.forward = lambda x, _r=rule: _RuleReLU.apply(x, _r)  # type: ignore[method-assign]
    try:
        yield model
    finally:
        for m in relus:
            del m.forward


@full_precision()
def project_by_rule(model: nn.Module, images: torch.Tensor, layer: str, channels: Sequence[int] | torch.Tensor,
                    positions: Sequence[Sequence[int]] | torch.Tensor | None = None,
                    rule: str = "deconvnet") -> torch.Tensor:
    """Project unit ``(channel, row, col)`` of ``layer``'s rectified output, one per image, to pixels
    by back-propagating its value under ``rule`` (see module docstring). ``positions=None`` takes the
    map's maximum in each image. Returns a tensor shaped like ``images``.

    With ``rule="deconvnet"`` this is the deconvnet of §2.1 computed by autograd (contrast
    normalisation, if any, by its true gradient).
    """
    stack = LayerStack(model)
    stack.check_conv(layer, "the projections start from a convolution's rectified map")
    x = images.detach().clone().requires_grad_(True)
    with eval_mode(model), stack.capture(layer, stop=True) as store, relu_rule(model, rule), torch.enable_grad():
        store(x)
        act = store[layer]
        n = act.shape[0]
        ch = torch.as_tensor(channels, dtype=torch.long, device=act.device).reshape(n)
        maps = act[torch.arange(n, device=act.device), ch]  # n×H×W
        if positions is None:
            flat = maps.detach().flatten(1).argmax(1)
            rows, cols = flat // maps.shape[2], flat % maps.shape[2]
        else:
            pos = torch.as_tensor(positions, dtype=torch.long, device=act.device).reshape(n, 2)
            rows, cols = pos[:, 0], pos[:, 1]
        units = maps[torch.arange(n, device=act.device), rows, cols]
        # seed each unit with its own value, as the deconvnet keeps the activation (not 1)
        (grad,) = torch.autograd.grad(units, x, grad_outputs=units.detach())
    return grad.detach()
