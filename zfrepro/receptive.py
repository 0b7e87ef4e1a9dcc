"""Receptive fields: which input pixels can influence one unit (Fig. 2 patches, Fig. 7 boxes).

The box is computed from the kernel, stride, padding and dilation of every convolution and pooling
layer up to ``layer``, in forward order (``model.modules()`` order, which is the forward order of
ZFNet, the AlexNet replica and torchvision's AlexNet and VGG).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import get_layer

__all__ = ["receptive_field", "crop_patch", "spatial_layers"]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def spatial_layers(model: nn.Module, layer: str) -> list[nn.Module]:
    """The conv and pooling modules that lead to ``layer``'s output, in forward order."""
    target = get_layer(model, layer)
    chain: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            chain.append(m)
        if m is target:
            return chain
    raise AssertionError("unreachable: get_layer found the layer")


def receptive_field(model: nn.Module, layer: str, position: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)``: the half-open box of input pixels that can influence the unit at
    ``position`` = (row, col) of ``layer``'s map. In input coordinates; it may extend past the image
    (negative, or beyond its size) where padding was used. For ZFNet at 224 the sizes of conv1..conv5
    are 7, 27, 75, 107, 139 pixels."""
    if not layer.startswith("conv"):
        raise ValueError(f"receptive_field needs a convolutional layer, got {layer!r}: fc units see the whole image")
    r0, r1 = int(position[0]), int(position[0]) + 1
    c0, c1 = int(position[1]), int(position[1]) + 1
    for m in reversed(spatial_layers(model, layer)):
        kh, kw = _pair(m.kernel_size)
        sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
        ph, pw = _pair(m.padding)
        dh, dw = _pair(getattr(m, "dilation", 1))
        r0, r1 = r0 * sh - ph, (r1 - 1) * sh - ph + dh * (kh - 1) + 1
        c0, c1 = c0 * sw - pw, (c1 - 1) * sw - pw + dw * (kw - 1) + 1
    return r0, c0, r1, c1


def crop_patch(image: torch.Tensor, box: Sequence[int], fill: float = 0.0) -> torch.Tensor:
    """The ``box`` = (top, left, bottom, right) of a C×H×W ``image``; the parts outside the image are
    filled with ``fill`` (0 = the dataset mean for mean-subtracted model inputs; 0.5 = grey for display
    images), so every patch of a layer has the receptive field's full size."""
    top, left, bottom, right = (int(b) for b in box)
    h, w = image.shape[-2:]
    pad = (max(0, -left), max(0, right - w), max(0, -top), max(0, bottom - h))
    if any(pad):
        image = F.pad(image, pad, value=fill)
        top, bottom = top + pad[2], bottom + pad[2]
        left, right = left + pad[0], right + pad[0]
    return image[..., top:bottom, left:right]
