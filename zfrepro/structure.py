"""How much structure a layer-1 filter or a deconvnet projection holds (Fig. 2, Fig. 4, Fig. 6, §4).

The paper's layer-1 filters are oriented Gabor-like edges and colour blobs, and its projections show
the edges and parts of the patch that drove a unit. Two measures say in numbers whether ours do; the
definitions are ours:

- the **structure** of a filter (C×k×k) is the R² of the best least-squares fit of its *dominant
  colour pattern* — the first component σ₁·v₁ of the SVD of the C×k² filter matrix: one colour
  vector times one spatial pattern — by a 2-D Gabor function or a Gaussian blob (a Gabor of
  frequency 0). R² = 1 − SSE / Σp² over the k×k pattern p. An oriented edge or a colour blob scores
  near 1; a pattern of independent noise near 0.3 (the model has freedom enough to fit some of it);
* the **projection noise** of a deconvnet projection is its high-frequency share
  (:func:`zfrepro.aliasing.high_frequency_share`) divided by that of the image patch under the same
  receptive field: about 1 when the projection is as smooth as the image that drove the unit,
  several times more when it is pixel noise over an outline;
* the **projection alignment** of a projection is the Pearson correlation, over pixels, of its edge
  strength with that of its image patch (:func:`edge_strength`: gradient magnitude at a scale of a few
  pixels, colour channels summed): about 1 when the projection draws the patch's edges where the patch
  has them, about 0 for noise or for another image's edges. Smoothness and structure are different
  things — a projection of sharp strokes along the patch's contours is noisy by the first measure and
  aligned by this one — so notebook 03 reports both, each beside its control (the same projections
  against the patches of other units).

The fit is a grid search (centre, orientation, frequency, two envelope widths; amplitude and phase
are linear and solved exactly for every grid point), so it is deterministic and needs no optimiser.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .aliasing import high_frequency_share
from .errors import ConfigError

__all__ = ["dominant_pattern", "fit_gabor", "filter_structure", "projection_noise", "edge_strength",
           "projection_alignment", "summarize_structure",
           "STRUCTURE_R2", "STRUCTURED_SHARE", "structure_claim"]

#: A filter "has structure" (an oriented edge or a colour blob) when its Gabor/blob fit reaches this R².
STRUCTURE_R2 = 0.6
#: The share of layer-1 filters with structure at which the paper's description (Fig. 2, 6c) holds.
STRUCTURED_SHARE = 0.85

#: Orientations, frequencies (cycles per pixel; 0 = a blob) and envelope widths (× filter size) of the grid.
ORIENTATIONS = 8
FREQUENCIES = (0.0, 0.06, 0.11, 0.16, 0.22, 0.29, 0.36, 0.43, 0.5)
WIDTHS = (0.1, 0.16, 0.25, 0.4, 0.65, 1.5)
CENTRES = 7  # centre positions per axis (at most; every pixel for filters up to 7 px)


def dominant_pattern(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dominant colour pattern of each filter of ``weight`` (N×C×k×k): the first SVD component
    of its C×k² matrix. Returns (patterns N×k×k scaled by σ₁, unit colour vectors N×C)."""
    if weight.dim() != 4:
        raise ConfigError(f"filters must be N×C×k×k, got shape {tuple(weight.shape)}")
    w = weight.detach().double().cpu()
    n, c, h, wd = w.shape
    u, s, vh = torch.linalg.svd(w.reshape(n, c, h * wd), full_matrices=False)
    pattern = (s[:, :1, None] * vh[:, :1, :]).reshape(n, h, wd)
    colour = u[:, :, 0]
    # sign convention: the colour vector sums to >= 0 (a pattern and its negation are the same structure)
    flip = torch.where(colour.sum(1) < 0, -1.0, 1.0).double()
    return pattern * flip[:, None, None], colour * flip[:, None]


def _coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    return torch.meshgrid(ys, xs, indexing="ij")


def _gabor_pair(yy: torch.Tensor, xx: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, t: torch.Tensor,
                f: torch.Tensor, su: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    """{envelope·cos, envelope·sin} of Gabors with parameters of shape G×1×1 on the h×w grid: G×h·w×2."""
    dy, dx = yy[None] - cy, xx[None] - cx
    u = dx * torch.cos(t) + dy * torch.sin(t)
    v = -dx * torch.sin(t) + dy * torch.cos(t)
    env = torch.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2))
    phase = 2 * math.pi * f * u
    return torch.stack([env * torch.cos(phase), env * torch.sin(phase)], dim=-1).flatten(1, 2)


def _gabor_bases(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal bases (G×h·w×2) of every grid Gabor's span {envelope·cos, envelope·sin}, and the
    grid's parameters (G×6: centre y, x, orientation, frequency, the two envelope widths)."""
    yy, xx = _coords(h, w)
    size = float(max(h, w))
    cy = torch.linspace(-(h - 1) / 2, (h - 1) / 2, min(h, CENTRES), dtype=torch.float64)
    cx = torch.linspace(-(w - 1) / 2, (w - 1) / 2, min(w, CENTRES), dtype=torch.float64)
    theta = torch.arange(ORIENTATIONS, dtype=torch.float64) * math.pi / ORIENTATIONS
    freq = torch.tensor(FREQUENCIES, dtype=torch.float64)
    sig = torch.tensor(WIDTHS, dtype=torch.float64) * size
    grid = torch.stack([t.reshape(-1) for t in torch.meshgrid(cy, cx, theta, freq, sig, sig, indexing="ij")], 1)
    basis = _gabor_pair(yy, xx, *(grid[:, i, None, None] for i in range(6)))
    q, r = torch.linalg.qr(basis)
    # a frequency-0 Gabor (a blob) spans one dimension only: drop the degenerate column
    keep = (r.diagonal(dim1=-2, dim2=-1).abs() > 1e-8 * r.diagonal(dim1=-2, dim2=-1).abs().amax(-1, keepdim=True))
    return q * keep[:, None, :].to(q.dtype), grid


_BASES: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _refine(p: torch.Tensor, start: torch.Tensor, h: int, w: int, steps: int = 150) -> torch.Tensor:
    """Projected energy of each pattern (N×P) on its Gabor span after local least-squares refinement
    of the nonlinear parameters from ``start`` (N×6, the best grid point)."""
    yy, xx = _coords(h, w)
    size = float(max(h, w))
    x = torch.cat([start[:, :4], start[:, 4:].log()], 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.03)

    def energy(x: torch.Tensor) -> torch.Tensor:
        cy, cx, t, f = (x[:, i, None, None] for i in range(4))
        su, sv = (x[:, i, None, None].exp().clamp(0.05 * size, 3.0 * size) for i in (4, 5))
        b = _gabor_pair(yy, xx, cy, cx, t, f.clamp(0.0, 0.5), su, sv)          # N×P×2
        gram = b.transpose(1, 2) @ b + 1e-10 * torch.eye(2, dtype=b.dtype)
        bp = (b.transpose(1, 2) @ p[:, :, None])                               # N×2×1
        return (bp.transpose(1, 2) @ torch.linalg.solve(gram, bp)).reshape(-1)

    best = energy(x).detach()
    for _ in range(steps):
        opt.zero_grad()
        e = energy(x)
        (-e.sum()).backward()
        opt.step()
        best = torch.maximum(best, e.detach())
    return torch.minimum(torch.maximum(best, energy(x).detach()), p.pow(2).sum(1))


def fit_gabor(patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best least-squares fit of each k×k pattern (N×h×w) by a Gabor or a Gaussian blob: the best
    point of the module's grid, refined locally. Returns (R² per pattern, the best grid fit N×h×w).
    A zero pattern gets R² NaN."""
    if patterns.dim() != 3:
        raise ConfigError(f"patterns must be N×h×w, got shape {tuple(patterns.shape)}")
    n, h, w = patterns.shape
    if min(h, w) < 3:
        raise ConfigError(f"a structure fit needs patterns of at least 3×3 pixels, got {h}×{w}")
    key = (h, w)
    if key not in _BASES:
        _BASES[key] = _gabor_bases(h, w)
    q, grid = _BASES[key]                                  # G×P×2, G×6
    p = patterns.detach().double().cpu().reshape(n, h * w)  # N×P
    total = p.pow(2).sum(1)
    best_e = torch.full((n,), -1.0, dtype=torch.float64)
    best_g = torch.zeros(n, dtype=torch.long)
    for start in range(0, q.shape[0], 20000):              # bounded memory for large grids
        coef = torch.einsum("gpk,np->ngk", q[start:start + 20000], p)   # N×g×2
        energy = coef.pow(2).sum(-1)
        e, g = energy.max(1)
        better = e > best_e
        best_e = torch.where(better, e, best_e)
        best_g = torch.where(better, g + start, best_g)
    qb = q[best_g]                                         # N×P×2
    fitted = torch.einsum("npk,nk->np", qb, torch.einsum("npk,np->nk", qb, p))
    with torch.enable_grad():
        refined = _refine(p, grid[best_g], h, w)
    r2 = torch.maximum(refined, best_e) / total.clamp_min(1e-300)
    r2[total <= 0] = float("nan")
    return r2.float(), fitted.reshape(n, h, w).float()


def filter_structure(weight: torch.Tensor) -> torch.Tensor:
    """Structure score of each filter of a conv weight (N×C×k×k): R² of the Gabor/blob fit of its
    dominant colour pattern (module docstring). Fig. 2's and Fig. 6's layer-1 filters."""
    pattern, _ = dominant_pattern(weight)
    return fit_gabor(pattern)[0]


def projection_noise(projections: torch.Tensor, patches: torch.Tensor, cutoff: float = 0.4) -> torch.Tensor:
    """Per projection, its high-frequency share over that of its image patch (both N×C×H×W, or any
    leading shape ending in C×H×W, matched item by item): ~1 when the projection is as smooth as the
    image that drove the unit. Figs. 1, 2, 4 and 7; ``cutoff`` as in :func:`high_frequency_share`."""
    if projections.shape != patches.shape or projections.dim() < 3:
        raise ConfigError(f"projections {tuple(projections.shape)} and patches {tuple(patches.shape)} "
                          "must have the same shape, ending in C×H×W")
    lead = projections.shape[:-3]
    proj = projections.reshape(-1, *projections.shape[-3:])
    patch = patches.reshape(-1, *patches.shape[-3:])
    ratio = high_frequency_share(proj, cutoff) / high_frequency_share(patch, cutoff)
    return ratio.reshape(lead)


def edge_strength(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Edge strength of each item of ``x`` (N×C×H×W): the gradient magnitude of each channel smoothed by a
    Gaussian of ``sigma`` pixels (central differences; replicated borders), summed over channels → N×H×W.
    At a ``sigma`` of a few pixels, pixel-to-pixel speckle averages out and contours remain.
    :func:`projection_alignment`'s map."""
    if x.dim() != 4:
        raise ConfigError(f"edge_strength takes N×C×H×W, got shape {tuple(x.shape)}")
    if not sigma > 0:
        raise ConfigError(f"sigma is a width in pixels and must be positive, got {sigma}")
    x = x.detach().double()
    n, c, h, w = x.shape
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
    y = F.pad(y, (1, 1, 1, 1), mode="replicate")
    gx = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]) / 2
    gy = (y[..., 2:, 1:-1] - y[..., :-2, 1:-1]) / 2
    return (gx ** 2 + gy ** 2).sqrt().reshape(n, c, h, w).sum(1).float()


def _masked_pearson(a: torch.Tensor, b: torch.Tensor, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every row of ``a`` with every row of ``b`` (N×D each) over the coordinates
    valid in both rows (``va``, ``vb``: N×D, 1 = valid) → N×N; NaN where fewer than 16 coordinates are
    shared or a row is constant on them. Every sum is a matrix product."""
    a, b, va, vb = a.double(), b.double(), va.double(), vb.double()
    n = va @ vb.T
    sa, sb = (a * va) @ vb.T, va @ (b * vb).T
    saa, sbb = (a * a * va) @ vb.T, va @ (b * b * vb).T
    sab = (a * va) @ (b * vb).T
    cov = sab - sa * sb / n.clamp(min=1)
    var_a = saa - sa ** 2 / n.clamp(min=1)
    var_b = sbb - sb ** 2 / n.clamp(min=1)
    r = cov / (var_a * var_b).sqrt()
    r[(n < 16) | (var_a <= 1e-12 * saa) | (var_b <= 1e-12 * sbb)] = float("nan")
    return r


def projection_alignment(projections: torch.Tensor, patches: torch.Tensor, sigma: float = 2.0, *,
                         inside: torch.Tensor | None = None, control: bool = False) -> torch.Tensor:
    """Per projection, the Pearson correlation of its :func:`edge_strength` with its image patch's (both
    N×C×H×W, or any leading shape ending in C×H×W, matched item by item): ~1 when the projection draws
    the patch's edges, ~0 for noise. ``inside`` (the leading shape × H×W, True where the receptive field
    lies inside the image: :class:`~zfrepro.top_units.UnitPatches`' ``inside``) keeps the correlation to
    those pixels, less a margin of the blur's reach, so the step between the image and the grey fill
    around it — present in the patch, never in the projection — does not count. ``control=True`` gives
    instead each projection's mean correlation with the *other* items' patches (over the pixels inside
    both): what the same projections score against images that did not drive them, the baseline the
    matched value is read against (needs at least two items). Figs. 2 and 7."""
    if projections.shape != patches.shape or projections.dim() < 3:
        raise ConfigError(f"projections {tuple(projections.shape)} and patches {tuple(patches.shape)} "
                          "must have the same shape, ending in C×H×W")
    lead, hw = projections.shape[:-3], projections.shape[-2:]
    if inside is not None and tuple(inside.shape) != (*lead, *hw):
        raise ConfigError(f"inside {tuple(inside.shape)} must be the projections' shape without its channels, "
                          f"{(*lead, *hw)}")
    proj = edge_strength(projections.reshape(-1, *projections.shape[-3:]), sigma).flatten(1)
    patch = edge_strength(patches.reshape(-1, *patches.shape[-3:]), sigma).flatten(1)
    if inside is None:
        valid = torch.ones_like(proj)
    else:
        reach = int(math.ceil(3 * sigma)) + 1  # pixels whose blurred gradient sees the fill
        outside = (~inside.reshape(-1, 1, *hw).bool()).double()
        valid = 1.0 - F.max_pool2d(F.pad(outside, (reach,) * 4, value=0.0), 2 * reach + 1, stride=1)
        valid = valid.flatten(1).to(proj.dtype)
    r = _masked_pearson(proj, patch, valid, valid)
    if not control:
        return torch.diagonal(r).float().reshape(lead)
    n = r.shape[0]
    if n < 2:
        raise ConfigError("projection_alignment(control=True) needs at least two projections: it pairs each "
                          "with the other items' patches")
    off = ~torch.eye(n, dtype=torch.bool, device=r.device)
    return torch.nanmean(torch.where(off, r, torch.full_like(r, float("nan"))), dim=1).float().reshape(lead)


def summarize_structure(weight: torch.Tensor, threshold: float = STRUCTURE_R2) -> dict[str, Any]:
    """Median structure R² of a layer's filters and the share with R² ≥ ``threshold`` (notebook 03's
    layer-1 numbers, RESULTS.md)."""
    r2 = filter_structure(weight)
    ok = r2[torch.isfinite(r2)]
    if ok.numel() == 0:
        return {"median_r2": float("nan"), "share_structured": float("nan"), "threshold": threshold, "n": 0}
    return {"median_r2": float(ok.median()), "share_structured": float((ok >= threshold).double().mean()),
            "threshold": threshold, "n": int(ok.numel())}


def structure_claim(structure: dict[str, Any]) -> "Any":
    """Fig. 2 / 6c's claim for a :func:`summarize_structure` result: at least :data:`STRUCTURED_SHARE` of
    the layer-1 filters have structure (R² ≥ :data:`STRUCTURE_R2`); ``holds`` is None without filters."""
    from .claims import Claim

    share = structure.get("share_structured")
    if isinstance(share, float) and math.isnan(share):
        share = None
    return Claim("Fig. 2", f"layer-1 filters are oriented edges and colour blobs (≥ {100 * STRUCTURED_SHARE:.0f} % with "
                 f"R² ≥ {STRUCTURE_R2:g})", "oriented edges and colour blobs (Fig. 2, 6c)", share,
                 None if share is None else share >= STRUCTURED_SHARE)
