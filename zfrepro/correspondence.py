"""Correspondence analysis (Fig. 8, Table 1, §4.3): does masking the same object part change the
representation in the same way across images?"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["sign_change"]


def sign_change(eps: torch.Tensor) -> float:
    """The paper's Δ for one layer, normalised: ``eps`` holds ε_i = x_i − x̃_i (feature vector of
    image i minus that of its occluded version), one row per image (n×d). Returns the mean over
    ordered pairs i ≠ j of the fraction of the d coordinates whose signs differ (a normalised
    Hamming distance; Table 1's values are below 1, so the paper normalised H). Lower = the
    occlusion changes every image the same way = tighter correspondence."""
    if eps.dim() != 2 or eps.shape[0] < 2:
        raise ConfigError(f"sign_change needs an n×d tensor with n >= 2 images, got shape {tuple(eps.shape)}")
    s = torch.sign(eps)
    n, d = s.shape
    total = 0.0
    for i in range(n):  # n is small (5 in the paper): O(n²·d) without an n×n×d tensor
        total += float((s[i][None] != s).float().sum())
    return total / (n * (n - 1) * d)
