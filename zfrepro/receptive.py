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

from .layers import LayerStack, geometry

__all__ = ["receptive_field", "crop_patch", "spatial_layers"]


def spatial_layers(model: nn.Module, layer: str) -> list[nn.Module]:
    """The conv and pooling modules that lead to ``layer``'s output, in forward order."""
    return LayerStack(model).spatial_layers(layer)


def receptive_field(model: nn.Module, layer: str, position: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)``: the half-open box of input pixels that can influence the unit at
    ``position`` = (row, col) of ``layer``'s map. In input coordinates; it may extend past the image
    (negative, or beyond its size) where padding was used. For ZFNet at 224 the sizes of conv1..conv5
    are 7, 27, 75, 107, 139 pixels."""
    stack = LayerStack(model)
    stack.check_conv(layer, "receptive_field needs a convolutional layer (fc units see the whole image)")
    r0, r1 = int(position[0]), int(position[0]) + 1
    c0, c1 = int(position[1]), int(position[1]) + 1
    for m in reversed(stack.spatial_layers(layer)):
        g = geometry(m)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
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
