"""Architecture selection (Fig. 6, §4.1) in numbers: "dead" layer-1 filters, and the share of high
spatial frequencies in layer-1 filters and layer-2 projections (the aliasing that the paper sees in
the stride-4 network's layer 2).

The paper shows these only as pictures; the definitions here are ours and are stated where used:

- a layer-1 filter is *faint* ("dead conv1 filters" in the table) when its RMS is below ``threshold``
  (5 %) of the layer's largest filter RMS: it contributes almost nothing next to the others;
- it is *dead* in the sense of Fig. 6 (b), a tile that shows no pattern, when its structure R²
  (:mod:`zfrepro.structure`: the Gabor/blob fit of its dominant colour pattern) is below 0.6, whatever
  its RMS: a filter that kept its random start is not faint (the start is 10 % of the radius) but
  unstructured;
- the *high-frequency share* of an image or filter is the fraction of its spectral energy (|FFT|²
  of each colour channel, mean removed) at radial frequencies above ``cutoff`` (0.4) × the
  Nyquist frequency. A stride-4 first layer samples at a quarter of the pixel rate, so what its
  layer-2 units see repeats every 4 pixels: energy at half the Nyquist frequency (and its
  harmonics) — the grid-like artefacts of Fig. 6d. The cutoff sits below that line so that the
  artefact counts as high frequency whole, not half;
- the *aliased share* of a strided convolution is what its sampling folds, by definition: the
  fraction of the energy of its dense (stride-1) response to real images at frequencies outside
  the sampling lattice's Nyquist box ``|f_y| <= 1/(2 s_y)``, ``|f_x| <= 1/(2 s_x)`` (each map's mean
  removed). It is the paper's cause of Fig. 6 (d) — aliasing from the stride 4 of layer 1 — measured
  where it happens, before layer 2 reads the sampled maps, and unlike the high-frequency share it
  does not count fine structure that the sampling keeps.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .errors import ConfigError

__all__ = ["filter_rms", "dead_filter_fraction", "dominance", "high_frequency_share", "aliased_share", "summarize",
           "fig6_measures", "fig6_claims"]


def filter_rms(weight: torch.Tensor) -> torch.Tensor:
    """RMS of each filter of a conv weight (C_out×C_in×k×k) — what §3's renormalisation clips at 0.1."""
    w = weight.detach().float()
    return w.pow(2).flatten(1).mean(1).sqrt()


def dead_filter_fraction(weight: torch.Tensor, threshold: float = 0.05) -> float:
    """Fraction of filters whose RMS is below ``threshold`` × the largest filter RMS of the layer (Fig. 6a-c)."""
    rms = filter_rms(weight)
    if rms.numel() == 0 or float(rms.max()) == 0.0:
        return 1.0
    return float((rms < threshold * rms.max()).float().mean())


def dominance(weight: torch.Tensor, top: float = 0.05) -> float:
    """Share of the layer's filter energy (sum of squared filter RMS) held by its strongest ``top``
    fraction of filters (at least one): "a few filters dominate" (Fig. 6a) in one number. Equal
    filters give ``top``; one filter holding everything gives 1."""
    e = filter_rms(weight).pow(2)
    k = max(1, int(round(top * e.numel())))
    total = float(e.sum())
    return float(e.sort(descending=True).values[:k].sum()) / total if total > 0 else float("nan")


def high_frequency_share(x: torch.Tensor, cutoff: float = 0.4, pad_to: int | None = None) -> torch.Tensor:
    """Per item of ``x`` (N×C×H×W: filters or projections), the fraction of spectral energy at radial
    frequencies above ``cutoff`` × Nyquist (each channel's mean removed; channels summed). Small
    filters are zero-padded to ``pad_to`` (default: 4× their size, at least 32) so the spectrum is
    finely sampled. Items with no energy get NaN. Fig. 6 (aliasing)."""
    if x.dim() != 4:
        raise ConfigError(f"high_frequency_share takes N×C×H×W, got shape {tuple(x.shape)}")
    if not 0 < cutoff < 2 ** 0.5:
        raise ConfigError(f"cutoff is a fraction of the Nyquist frequency in (0, 1.414), got {cutoff}")
    x = x.detach().double()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    h, w = x.shape[-2:]
    n = pad_to or max(32, 4 * max(h, w))
    spec = torch.fft.fft2(x, s=(max(n, h), max(n, w))).abs().pow(2).sum(1)  # N×H'×W'
    fy = torch.fft.fftfreq(spec.shape[-2], dtype=torch.float64, device=x.device)[:, None] / 0.5  # in units of Nyquist
    fx = torch.fft.fftfreq(spec.shape[-1], dtype=torch.float64, device=x.device)[None, :] / 0.5
    radius = (fy ** 2 + fx ** 2).sqrt()
    total = spec.flatten(1).sum(1)
    high = (spec * (radius > cutoff)).flatten(1).sum(1)
    share = high / total
    share[total <= 0] = float("nan")
    return share.float()


def aliased_share(conv: torch.nn.Conv2d, images: torch.Tensor, per_filter: bool = True,
                  batch: int = 16) -> torch.Tensor:
    """Per filter of ``conv`` (or, with ``per_filter=False``, over the whole layer's response: a
    0-d tensor), the share of its dense response's energy that its stride folds (the module
    docstring's *aliased share*), over ``images`` (N×C×H×W, normalised as the network expects). A
    stride of 1 aliases nothing. Fig. 6 (d, e): the replica's stride-4 layer 1 against ZFNet's
    stride 2."""
    if not isinstance(conv, torch.nn.Conv2d):
        raise ConfigError(f"aliased_share takes an nn.Conv2d, got {type(conv).__name__}")
    if images.dim() != 4 or images.shape[1] != conv.in_channels:
        raise ConfigError(f"aliased_share takes N×{conv.in_channels}×H×W images for {conv}, got shape "
                          f"{tuple(images.shape)}")
    if isinstance(conv.padding, str):
        raise ConfigError(f"aliased_share needs numeric padding, got padding={conv.padding!r}")
    sy, sx = conv.stride
    w = conv.weight.detach()
    energy = torch.zeros(w.shape[0], dtype=torch.float64)
    folded = torch.zeros(w.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            x = images[i:i + batch].to(device=w.device, dtype=w.dtype)
            y = torch.nn.functional.conv2d(x, w, None, 1, conv.padding, conv.dilation, conv.groups).double()
            y = y - y.mean(dim=(2, 3), keepdim=True)
            spec = torch.fft.fft2(y).abs().pow(2)
            fy = torch.fft.fftfreq(spec.shape[-2], dtype=torch.float64, device=spec.device).abs()[:, None]
            fx = torch.fft.fftfreq(spec.shape[-1], dtype=torch.float64, device=spec.device).abs()[None, :]
            outside = (fy > 0.5 / sy) | (fx > 0.5 / sx)
            energy += spec.sum(dim=(0, 2, 3)).cpu()
            folded += (spec * outside).sum(dim=(0, 2, 3)).cpu()
    if not per_filter:
        folded, energy = folded.sum(), energy.sum()
    share = folded / energy
    share[energy <= 0] = float("nan")
    return share.float()


def summarize(values: Sequence[float] | torch.Tensor) -> dict[str, Any]:
    """Median and interquartile range of finite values (for the Fig. 6 table)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    t = t[torch.isfinite(t)]
    if t.numel() == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "n": 0}
    return {"median": float(t.median()), "q25": float(torch.quantile(t, 0.25)),
            "q75": float(torch.quantile(t, 0.75)), "n": int(t.numel())}


def fig6_measures(nets: dict[str, Any], top1: dict[str, float], layer2: dict[str, torch.Tensor],
                  images: torch.Tensor | None = None, first_lr_mult: dict[str, float] | None = None) -> Any:
    """Fig. 6 in numbers, one row per network (``nets``: name → network; ``top1``: name → val top-1;
    ``layer2``: name → its conv2 projections, M×k×3×R×R, for the networks that have them): val top-1, the
    share of dead (faint) conv1 filters, the energy share of the top 5 % of conv1 filters, the largest filter
    RMS, the median high-frequency share of the conv1 filters and of the conv2 projections, the median
    structure R² of the conv1 filters (:func:`zfrepro.structure.filter_structure`: how distinctive they
    are) and the share without structure (R² below :data:`zfrepro.structure.STRUCTURE_R2`) and, given
    ``images``, the aliased share of conv1 (:func:`aliased_share`, energy-weighted over the filters: the
    share of the layer's whole response that its stride folds); given ``first_lr_mult`` (name → conv1's
    learning-rate multiplier of that run), a column "conv1 lr ×". A DataFrame indexed by network."""
    import pandas as pd

    from .models import get_layer
    from .structure import STRUCTURE_R2, filter_structure  # structure imports this module: imported here

    rows = []
    for name, net in nets.items():
        w = get_layer(net, "conv1").weight
        structure = filter_structure(w)
        row = {"network": name, **({"conv1 lr ×": float(first_lr_mult[name])} if first_lr_mult else {}),
               "val top-1": top1[name], "dead conv1 filters": dead_filter_fraction(w),
               "top-5% energy": dominance(w), "max filter RMS": float(filter_rms(w).max()),
               "HF share conv1 filters": summarize(high_frequency_share(w))["median"],
               "structure conv1": float(structure.median()), "unstructured conv1": float((structure < STRUCTURE_R2).float().mean())}
        if images is not None:
            row["aliased share conv1"] = float(aliased_share(get_layer(net, "conv1"), images, per_filter=False))
        if name in layer2:
            row["HF share conv2 projections"] = summarize(high_frequency_share(layer2[name].flatten(0, 1)))["median"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("network")


def fig6_claims(t: Any, renorm_pair: tuple[str, str] = ("ZFNet, no renormalisation", "ZFNet"),
                radius: float = 0.1) -> list[Any]:
    """Fig. 6's four claims on a :func:`fig6_measures` table with the rows "ZFNet" and "AlexNet replica"
    and the two ZFNet runs of ``renorm_pair`` (without, with renormalisation; made with ``images``: (d, e)
    compares the aliased share). (b, c) reads the caption's "more distinctive features and fewer dead
    ones" as filter structure: a dead filter is one with no edge or blob to show (R² below
    :data:`~zfrepro.structure.STRUCTURE_R2`), whatever its RMS; the RMS criterion ("dead conv1 filters")
    stays in the table. (a) is "not tested" where the run without renormalisation never grew a
    filter past ``radius`` (its largest filter RMS): the cap never clipped, so the two runs are the same
    run and cannot differ — the step of conv1 was too small for the paper's effect, not evidence against it."""
    from .claims import Claim

    free, capped = renorm_pair
    missing = [n for n in ("ZFNet", "AlexNet replica", free, capped) if n not in t.index]
    if missing:
        raise ConfigError(f"fig6_claims needs the networks {', '.join(missing)} in the table (it has "
                          f"{', '.join(map(str, t.index))}); pass renorm_pair=(without, with renormalisation) for other names")
    columns = ["val top-1", "top-5% energy", "max filter RMS", "structure conv1", "unstructured conv1", "aliased share conv1"]
    if [c for c in columns if c not in t.columns]:
        raise ConfigError(f"fig6_claims needs the columns {', '.join(c for c in columns if c not in t.columns)}: "
                          "make the table with fig6_measures(..., images=...) of this version")

    def compare(name: str, paper: str, column: str, more: str, less: str) -> Claim:
        ours = (float(t.loc[more, column]), float(t.loc[less, column]))
        return Claim("Fig. 6", name, paper, ours, bool(t.loc[more, column] > t.loc[less, column]))

    z, r = t.loc["ZFNet"], t.loc["AlexNet replica"]
    b = Claim("Fig. 6", "(b, c) ZFNet's layer-1 filters are more distinctive (median structure R²) and fewer lack structure",
              "Fig. 6b, c: more distinctive features and fewer \"dead\" ones",
              {"structure": (float(z["structure conv1"]), float(r["structure conv1"])),
               "unstructured": (float(z["unstructured conv1"]), float(r["unstructured conv1"]))},
              bool(z["structure conv1"] > r["structure conv1"] and z["unstructured conv1"] < r["unstructured conv1"]))
    a = compare("(a) without renormalisation a few filters dominate (top-5 % filter energy)",
                "Fig. 6a: a few layer-1 filters dominate", "top-5% energy", free, capped)
    if float(t.loc[free, "max filter RMS"]) <= radius:
        a = Claim(a.figure, a.name + f"; not tested: no filter of the run without it exceeded the radius {radius:g}",
                  a.paper, a.ours, None)
    return [
        a,
        b,
        compare("(d, e) the replica's stride-4 layer 1 aliases more of what layer 2 sees (aliased share)",
                "Fig. 6d: aliasing artefacts in layer 2, from the stride 4 of layer 1", "aliased share conv1",
                "AlexNet replica", "ZFNet"),
        compare("ZFNet classifies better than the replica", "Table 2: the Fig. 3 network beats the replica",
                "val top-1", "ZFNet", "AlexNet replica"),
    ]
