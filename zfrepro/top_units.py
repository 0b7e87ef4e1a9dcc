"""Top-k projections and their image patches for a set of feature maps (Fig. 2, Fig. 4, Fig. 6d-e).

:func:`project_top_units` takes a dataset scan (:func:`zfrepro.scan.top_activations`), projects each
of the chosen maps' top activations with the deconvnet, one projection per (image, unit), and cuts
both the projection and the image to the unit's receptive field — the two 3×3 grids of each Fig. 2
panel. :func:`filter_change` measures how much a layer's filters move between snapshots (Fig. 4).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .deconv import DeconvNet
from .errors import ConfigError
from .models import get_layer
from .receptive import crop_patch, receptive_field
from .scan import TopActivations, top_activations

__all__ = ["UnitPatches", "project_top_units", "choose_maps", "median_projection_noise", "filter_change", "evolution_claim",
           "evenly_spaced", "feature_evolution"]


@dataclass
class UnitPatches:
    """For each chosen map (rows) and each of its top-k units (columns): the deconvnet projection
    and the image patch under the unit's receptive field, both ``k_rf``×``k_rf``.

    ``projections`` and ``patches`` are M×k×3×R×R (patches in display space, 0..1, grey outside
    the image); ``values`` M×k activations; ``image_index`` M×k; ``maps`` the M channel numbers;
    ``inside`` M×k×R×R, True where the receptive field lies inside the image (None: everywhere)."""

    layer: str
    maps: list[int]
    projections: torch.Tensor
    patches: torch.Tensor
    values: torch.Tensor
    image_index: torch.Tensor
    inside: torch.Tensor | None = None


def choose_maps(tops: TopActivations, n: int, seed: int = 0, alive_only: bool = True) -> list[int]:
    """A reproducible random subset of ``n`` feature maps of a scan (the paper shows "a random subset
    of feature maps"), another one per layer; maps that do not fire on all k of their top images are
    left out unless ``alive_only=False`` (a silent unit projects to nothing)."""
    if n < 1:
        raise ConfigError(f"asked for {n} maps of {tops.layer}: ask for at least 1")
    candidates = torch.arange(tops.values.shape[0])
    if alive_only:
        candidates = candidates[tops.values[:, -1] > 0]
    if n > len(candidates):  # more than there are: show all of them, and say so
        print(f"zfrepro: {tops.layer} has {len(candidates)} {'live ' if alive_only else ''}maps, fewer than the "
              f"{n} asked for: showing all {len(candidates)}", file=sys.stderr)
    g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, tops.layer)))  # another subset per layer
    pick = candidates[torch.randperm(len(candidates), generator=g)[:n]]
    return sorted(int(c) for c in pick)


def project_top_units(model: nn.Module, data: Any, tops: TopActivations, maps: Sequence[int], *,
                      k: int | None = None, deconv: DeconvNet | None = None, batch_size: int = 64) -> UnitPatches:
    """Deconvnet projections of the top-``k`` activations of each map in ``maps`` (Fig. 2), with the
    matching image patches. ``data`` is a :class:`zfrepro.data.ModelInputs` (it provides ``batch``
    and ``to_display``). Every projection is computed separately (one unit kept per image), in
    batches of ``batch_size`` units sharing one forward and one backward pass."""
    dn = deconv or DeconvNet(model)
    k = k or tops.values.shape[1]
    dev = next(model.parameters()).device
    units = [(m, r) for m in maps for r in range(k)]
    projections, patches, inside = [], [], []
    for s in range(0, len(units), batch_size):
        chunk = units[s:s + batch_size]
        idx = [int(tops.image_index[m, r]) for m, r in chunk]
        pos = torch.stack([tops.position[m, r] for m, r in chunk])
        x = data.batch(idx).to(dev)
        proj = dn.project(x, tops.layer, [m for m, _ in chunk], pos).cpu()
        shown = data.to_display(x)
        for j, (m, r) in enumerate(chunk):
            box = receptive_field(model, tops.layer, pos[j].tolist())
            projections.append(crop_patch(proj[j], box, fill=0.0))
            patches.append(crop_patch(shown[j], box, fill=0.5))
            inside.append(crop_patch(torch.ones(1, *shown.shape[-2:]), box, fill=0.0)[0] > 0)
    shape = (len(maps), k) + tuple(projections[0].shape)
    return UnitPatches(tops.layer, list(maps), torch.stack(projections).reshape(shape),
                       torch.stack(patches).reshape(shape),
                       torch.stack([tops.values[m, :k] for m in maps]),
                       torch.stack([tops.image_index[m, :k] for m in maps]),
                       torch.stack(inside).reshape(shape[:2] + shape[-2:]))


def median_projection_noise(model: nn.Module, data: Any, *, maps_per_layer: int = 6, k: int = 9, seed: int = 0,
                            deconv: DeconvNet | None = None, tops: dict[str, TopActivations] | None = None,
                            maps: dict[str, Sequence[int]] | None = None) -> dict[str, float]:
    """Per conv layer, the median projection noise (:func:`zfrepro.structure.projection_noise`) of the
    top-``k`` units of ``maps_per_layer`` maps chosen by :func:`choose_maps` — Fig. 2's protocol as one
    number per layer (issue #14's measure). ``tops`` / ``maps`` reuse a scan and a choice of maps."""
    from .structure import projection_noise

    dn = deconv or DeconvNet(model)
    tops = tops or top_activations(model, data, layers=dn.layers, k=k, progress=False)
    out = {}
    for layer in dn.layers:
        chosen = maps[layer] if maps is not None else choose_maps(tops[layer], maps_per_layer, seed=seed)
        units = project_top_units(model, data, tops[layer], chosen, k=k, deconv=dn)
        r = projection_noise(units.projections, units.patches).flatten()
        out[layer] = round(float(r[torch.isfinite(r)].median()), 3)
    return out


def filter_change(before: nn.Module, after: nn.Module, layers: Sequence[str]) -> dict[str, float]:
    """``1 − mean cosine similarity`` between each filter of ``layers`` in two snapshots of a network
    (0: unchanged directions). Quantifies Fig. 4's "lower layers converge within a few epochs"."""
    out = {}
    for name in layers:
        a = get_layer(before, name).weight.detach().flatten(1)
        b = get_layer(after, name).weight.detach().flatten(1)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        out[name] = float(1.0 - cos.mean())
    return out


def remaining_change(models: dict[int, nn.Module], layers: Sequence[str]) -> dict[int, dict[str, float]]:
    """Fig. 4's settling, per snapshot (``models``: epoch → network) and layer: the share of the layer's
    way from the first snapshot to the last one still ahead, ``‖W_e − W_last‖ / ‖W_first − W_last‖``
    over all its filter weights (1 at the first snapshot, 0 at the last; a layer that has settled
    early is near 0 long before the end). Scale-free per layer, so layers that move far (conv1 from
    its small start) and layers that move little compare alike. ``{epoch: {layer: share}}``."""
    epochs = sorted(models)
    if len(epochs) < 2:
        raise ConfigError(f"remaining_change needs at least two snapshots, got epochs {epochs}")
    first, last = epochs[0], epochs[-1]
    out: dict[int, dict[str, float]] = {e: {} for e in epochs}
    for name in layers:
        final = get_layer(models[last], name).weight.detach().double().flatten()
        span = float((get_layer(models[first], name).weight.detach().double().flatten() - final).norm())
        for e in epochs:
            d = float((get_layer(models[e], name).weight.detach().double().flatten() - final).norm())
            out[e][name] = d / span if span > 0 else 0.0
    return out


def settling_epochs(remaining: dict[Any, dict[str, float]]) -> dict[str, float]:
    """Each layer's area under its :func:`remaining_change` curve, in epochs (trapezoids between the
    snapshots): 0 for a layer already at its final filters at the first snapshot, half the span for
    one that moves at a constant pace, the whole span for one that only moves in the last interval.
    Fig. 4's "lower layers converge within a few epochs" says it grows with depth."""
    epochs = sorted(remaining, key=int)
    layers = list(remaining[epochs[0]]) if epochs else []
    return {name: float(sum((int(b) - int(a)) * (remaining[a][name] + remaining[b][name]) / 2
                            for a, b in zip(epochs[:-1], epochs[1:]))) for name in layers}


def evolution_claim(remaining: dict[Any, dict[str, float]], lower: str = "conv1", upper: str = "conv5") -> "Any":
    """Fig. 4's claim on :func:`remaining_change` (epoch → layer → share ahead): the ``lower`` layer
    settles in fewer epochs (:func:`settling_epochs`) than the ``upper`` one ("lower layers converge
    within a few epochs, upper ones only after 40-50"). ``holds`` is None without both layers or with
    fewer than three snapshots (with two, every layer goes from 1 to 0 in the one interval)."""
    from .claims import Claim

    name = f"lower layers settle before upper ones (epochs to settle: area under the remaining change, {lower} < {upper})"
    paper = "lower layers converge within a few epochs; upper layers only after 40-50"
    settling = settling_epochs(remaining) if remaining else {}
    if len(remaining) < 3 or lower not in settling or upper not in settling:
        return Claim("Fig. 4", name, paper, None, None)
    ours = (round(float(settling[lower]), 2), round(float(settling[upper]), 2))
    return Claim("Fig. 4", name, paper, ours, bool(ours[0] < ours[1]))


def evenly_spaced(n: int, limit: int) -> list[int]:
    """``min(limit, n)`` indices spread evenly over ``range(n)`` (all of them if ``limit`` <= 0):
    a sample of a class-sorted split that covers every class."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return torch.linspace(0, n - 1, limit).round().long().unique().tolist()


def feature_evolution(models: dict[int, nn.Module], data: Any, maps: dict[str, Sequence[int]], *,
                      limit: int = 0, progress: bool = False) -> dict[str, torch.Tensor]:
    """Fig. 4: for each snapshot (``models``: epoch → network) and each chosen feature map, the
    strongest activation over all of ``data`` projected to pixels and cut to its receptive field.

    ``data`` is a :class:`zfrepro.data.ModelInputs`; ``limit`` > 0 scans only ``limit`` images
    spread evenly over it (:func:`evenly_spaced`: every class, as the split is sorted by class). Returns ``{layer: tensor M×E×3×R×R}`` (maps × epochs in ascending order). One scan per
    snapshot serves every layer."""
    from torch.utils.data import Subset

    index = torch.as_tensor(evenly_spaced(len(data), limit)) if limit else None
    scanned = Subset(data, index.tolist()) if index is not None else data
    layers = list(maps)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for epoch in sorted(models):
        model = models[epoch]
        tops = top_activations(model, scanned, layers=layers, k=1, progress=progress)
        if index is not None:  # positions in the sample -> positions in data
            for t in tops.values():
                t.image_index = index[t.image_index]
        dn = DeconvNet(model)
        for name in layers:
            units = project_top_units(model, data, tops[name], maps[name], k=1, deconv=dn)
            out[name].append(units.projections[:, 0])
    return {name: torch.stack(v, dim=1) for name, v in out.items()}
