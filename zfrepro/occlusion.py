"""Occlusion sensitivity (Fig. 7, §4.2): slide a grey square over the image and record the class
probability, the most probable class, and the total activation of one layer-5 feature map.

The occluded images are evaluated in batches (one forward per batch, never per position), and by
default *incrementally* (:mod:`zfrepro.incremental`): each layer recomputes only the rectangle of
its map that the square can reach, the rest comes from one forward pass of the original image.
Every value equals brute-force evaluation of the occluded image to float rounding (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .errors import ConfigError
from .incremental import IncrementalFeatures, supports_incremental
from .layers import LayerStack, eval_mode

__all__ = ["OcclusionResult", "occlusion_maps", "occluder_positions", "sensitivity_drop", "drop_summary",
           "occlusion_claim", "relative_drop_claim", "SENSITIVE_RELATIVE_DROP", "RANDOM_RELATIVE_DROP"]

#: Fig. 7's claim holds when the median relative drop of P(correct class) is at least this at the most
#: sensitive occluder position ...
SENSITIVE_RELATIVE_DROP = 0.5
#: ... and at most this at a random position (the class depends on covering the object, not any part).
RANDOM_RELATIVE_DROP = 0.2


@dataclass
class OcclusionResult:
    """Maps indexed [row, col] of the occluder grid (top-left corners 0, stride, 2·stride, …)."""

    prob: torch.Tensor        #: H'×W' probability of the target class
    top_class: torch.Tensor   #: H'×W' most probable class
    activation: torch.Tensor  #: H'×W' total activation of ``channel`` of ``layer``
    channel: int
    rows: list[int]
    cols: list[int]
    size: int
    unoccluded_prob: float


def occluder_positions(height: int, width: int, size: int, stride: int) -> tuple[list[int], list[int]]:
    """Top-left rows and columns of a ``size``×``size`` square placed every ``stride`` pixels while it
    lies inside a ``height``×``width`` image."""
    if size < 1 or stride < 1:
        raise ConfigError(f"occluder size and stride must be positive, got size={size}, stride={stride}")
    if size > min(height, width):
        raise ConfigError(f"occluder of {size} px does not fit a {height}×{width} image: use a smaller size")
    rows, cols = list(range(0, height - size + 1, stride)), list(range(0, width - size + 1, stride))
    if len(rows) < 2 or len(cols) < 2:  # one position: no map, and every position is "the most sensitive"
        raise ConfigError(f"an occluder of {size} px at stride {stride} gives a {len(rows)}×{len(cols)} map of a "
                          f"{height}×{width} image: use an occluder smaller than the image and a stride of at most "
                          f"{max(1, min(height, width) - size)} px")
    return rows, cols


def occlusion_maps(model: nn.Module, image: torch.Tensor, target: int, size: int | None = None,
                   stride: int | None = None, fill: float | str = "mean", layer: str = "conv5",
                   channel: int | None = None, batch_size: int = 64, *,
                   method: str = "incremental") -> OcclusionResult:
    """Fig. 7 for one image (C×H×W model input): occlude a ``size``×``size`` square (default: a
    quarter of the shorter side, the paper does not say) at every ``stride`` (default: size / 4)
    and return P(``target``), the most probable class, and the total activation (sum over the map
    of the rectified output) of feature map ``channel`` of ``layer`` (None: the map with the
    largest total activation in the unoccluded image). ``fill`` is a number written into every
    channel of the square, or ``"mean"``: the dataset mean, i.e. 0 for mean-subtracted inputs.
    ``method``: ``"incremental"`` (recompute only what the square changes; falls back to brute
    force for a model without a ``features`` stack) or ``"brute"`` (whole occluded images);
    both give the same maps. Used by Fig. 7 (``06_occlusion``)."""
    if method not in ("incremental", "brute"):
        raise ConfigError(f"unknown occlusion method {method!r}: use 'incremental' or 'brute'")
    if image.dim() != 3:
        raise ConfigError(f"occlusion_maps takes one C×H×W image, got shape {tuple(image.shape)}")
    stack = LayerStack(model)
    stack.check(layer)
    c, h, w = image.shape
    size = size or max(1, min(h, w) // 4)
    stride = stride or max(1, size // 4)
    value = 0.0 if fill == "mean" else float(fill)
    rows, cols = occluder_positions(h, w, size, stride)
    dev = next(model.parameters()).device
    image = image.to(dev)
    with eval_mode(model), torch.no_grad():
        with stack.capture(layer) as acts:
            logits = acts(image[None])
        if not 0 <= target < logits.shape[1]:
            raise ConfigError(f"target class {target} is out of range: the model has {logits.shape[1]} classes")
        base = acts[layer].detach()
        sums = base[0].flatten(1).sum(1) if base.dim() == 4 else base[0]
        ch = int(sums.argmax()) if channel is None else int(channel)
        if not 0 <= ch < sums.shape[0]:
            raise ConfigError(f"channel {ch} is out of range: {layer} has {sums.shape[0]} maps")
        p0 = float(logits.softmax(1)[0, target])
        grid = [(r, q) for r in rows for q in cols]
        inc = None
        if method == "incremental" and supports_incremental(model):
            # the incremental engine reads the watched map itself
            inc = IncrementalFeatures(model, image, (size, size), grid, stack.rectified[layer])
            if not inc.exact:  # the model's forward is not features-then-rest: brute force
                inc = None
        probs, tops, totals = [], [], []
        with stack.capture(layer if inc is None else []) as acts:
            for s in range(0, len(grid), batch_size):
                chunk = grid[s:s + batch_size]
                if inc is not None:
                    patch = torch.full((len(chunk), c, size, size), value, dtype=image.dtype, device=dev)
                    logits, sums_ = inc.run(patch, chunk)
                    out = logits.softmax(1)
                    a = sums_
                else:
                    x = image.expand(len(chunk), c, h, w).clone()
                    for b, (r, q) in enumerate(chunk):
                        x[b, :, r:r + size, q:q + size] = value
                    out = acts(x).softmax(1)
                    a = acts[layer].detach()
                probs.append(out[:, target])
                tops.append(out.argmax(1))
                totals.append(a[:, ch].flatten(1).sum(1) if a.dim() == 4 else a[:, ch])
    shape = (len(rows), len(cols))
    return OcclusionResult(torch.cat(probs).view(shape).cpu(), torch.cat(tops).view(shape).cpu(),
                           torch.cat(totals).view(shape).cpu(), ch, rows, cols, size, p0)


def sample_indices(total: int, sample: int, seed: int = 0) -> list[int]:
    """The images Fig. 7's statistic is measured on: ``sample`` of ``total`` drawn without replacement with
    ``seed`` (sorted), or all of them for ``sample=0``; a negative ``sample`` is a :class:`ConfigError`."""
    if sample < 0:
        raise ConfigError(f"sample={sample}: give the number of validation images (0 for the whole split)")
    g = torch.Generator().manual_seed(seed)
    n = total if sample == 0 else min(sample, total)
    return torch.randperm(total, generator=g)[:n].sort().values.tolist()


def sensitivity_drop(model: nn.Module, data: Any, indices: Sequence[int], size: int | None = None,
                     stride: int | None = None, *, seed: int = 0, batch_size: int = 64) -> Any:
    """What Fig. 7 shows qualitatively, measured: for each image ``data[i]`` (an ``(image, label)``
    dataset), P(correct class) unoccluded (``p0``), at the most sensitive occluder position
    (``p_min``: the minimum of the map) and at one uniformly random position (``p_random``); the
    drops ``drop_max = p0 − p_min`` and ``drop_random = p0 − p_random``. A DataFrame, one row per image."""
    import pandas as pd

    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in indices:
        x, y = data[int(i)]
        res = occlusion_maps(model, x, int(y), size, stride, batch_size=batch_size)
        flat = res.prob.flatten()
        j = int(torch.randint(len(flat), (1,), generator=g))
        rows.append(dict(index=int(i), label=int(y), p0=res.unoccluded_prob, p_min=float(flat.min()),
                         p_random=float(flat[j]), drop_max=res.unoccluded_prob - float(flat.min()),
                         drop_random=res.unoccluded_prob - float(flat[j])))
    return pd.DataFrame(rows)


def drop_summary(df: Any, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean drop of P(correct) at the most sensitive and at a random occluder position, and their
    paired difference, each with a bootstrap percentile confidence interval over images."""
    g = torch.Generator().manual_seed(seed)
    n = len(df)
    if n < 2:
        raise ConfigError("drop_summary needs at least 2 images")
    idx = torch.randint(n, (resamples, n), generator=g)
    out: dict[str, float] = {"images": float(n), "confidence": confidence}
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    for name, col in (("sensitive", df["drop_max"]), ("random", df["drop_random"]),
                      ("difference", df["drop_max"] - df["drop_random"])):
        v = torch.tensor(col.to_numpy(), dtype=torch.float64)
        boots = v[idx].mean(1)
        out[f"{name}_mean"] = float(v.mean())
        out[f"{name}_ci_low"] = float(torch.quantile(boots, lo_q))
        out[f"{name}_ci_high"] = float(torch.quantile(boots, hi_q))
    return out


def occlusion_claim(drops: Any) -> tuple[dict[str, float], Any]:
    """Fig. 7's claim on a :func:`sensitivity_drop` table: ``({"sensitive": m, "random": m'}, Claim)``,
    the median relative drops of P(correct) (drop / p0) at the most sensitive and at a random position,
    and :func:`relative_drop_claim` on them."""
    rel = {"sensitive": float((drops.drop_max / drops.p0).median()), "random": float((drops.drop_random / drops.p0).median())}
    return rel, relative_drop_claim(rel)


def relative_drop_claim(rel: dict[str, float]) -> Any:
    """Fig. 7's claim on the median relative drops ``{"sensitive": m, "random": m'}``: it holds when
    ``m`` ≥ :data:`SENSITIVE_RELATIVE_DROP` and ``m'`` ≤ :data:`RANDOM_RELATIVE_DROP`."""
    from .claims import Claim

    holds = rel["sensitive"] >= SENSITIVE_RELATIVE_DROP and rel["random"] <= RANDOM_RELATIVE_DROP
    return Claim("Fig. 7", occlusion_claim_name(), "the class depends on covering the object, not any part of the image",
                 dict(rel), bool(holds))


def occlusion_claim_name() -> str:
    """The test of :func:`occlusion_claim`, as RESULTS.md states it."""
    return (f"median relative drop ≥ {SENSITIVE_RELATIVE_DROP:g} sensitive, ≤ {RANDOM_RELATIVE_DROP:g} random")
