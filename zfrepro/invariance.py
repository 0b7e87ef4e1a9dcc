"""Invariance to translation, scale and rotation (Fig. 5, §4.4).

:func:`transform` moves, zooms or rotates one image, keeping its size and filling uncovered pixels
with the dataset mean (zero for mean-subtracted model inputs, as the paper's preprocessing would
leave them). :func:`feature_distance_curves` measures, for each transformed image, the Euclidean
distance between its feature vector and the original's at chosen layers, and the probability of the
true label — the numbers behind the paper's 4×3 grid of curves.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .errors import ConfigError
from .layers import LayerStack, eval_mode

__all__ = ["KINDS", "transform", "feature_distance_curves", "pick_one_per_class", "paper_amounts", "invariance_summary",
           "invariance_claims"]

KINDS = ("translate", "scale", "rotate")


def transform(image: torch.Tensor, kind: str, amount: float, fill: float = 0.0) -> torch.Tensor:
    """``image`` (C×H×W) translated vertically by ``amount`` pixels (positive moves the content
    down), zoomed about the centre by the ratio ``amount`` ≥ 1 (``"scale"``), or rotated by
    ``amount`` degrees about the centre (counter-clockwise); same size as the input, uncovered
    pixels set to ``fill`` (0: the dataset mean for mean-subtracted inputs). Bilinear resampling.
    Used by Fig. 5."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    if image.dim() != 3:
        raise ConfigError(f"transform takes one C×H×W image, got shape {tuple(image.shape)}")
    if kind not in KINDS:
        raise ConfigError(f"unknown transformation {kind!r}: use one of {', '.join(KINDS)}")
    amount = float(amount)
    if kind == "translate":
        shift = round(amount)
        if shift == amount:  # whole pixels: an exact shift, no resampling
            out = torch.full_like(image, fill)
            h = image.shape[1]
            if abs(shift) < h:
                if shift >= 0:
                    out[:, shift:] = image[:, :h - shift]
                else:
                    out[:, :h + shift] = image[:, -shift:]
            return out
        return TF.affine(image, angle=0.0, translate=[0.0, amount], scale=1.0, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.BILINEAR, fill=fill)
    if kind == "scale":
        if amount < 1.0:
            raise ConfigError(f"scale takes a zoom ratio >= 1 (1 = unchanged), got {amount}")
        return TF.affine(image, angle=0.0, translate=[0.0, 0.0], scale=amount, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.BILINEAR, fill=fill)
    return TF.affine(image, angle=amount, translate=[0.0, 0.0], scale=1.0, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR, fill=fill)


def feature_distance_curves(model: nn.Module, images: torch.Tensor, labels: Sequence[int], kind: str,
                            amounts: Sequence[float], layers: Sequence[str] = ("conv1", "fc7"),
                            fill: float = 0.0, batch_size: int = 64) -> Any:
    """The numbers behind Fig. 5 for one transformation ``kind``: for every image (N×C×H×W model
    inputs), amount and layer, the Euclidean distance between the layer's feature vector (its
    rectified output, flattened) for the transformed image and for the original, and the model's
    probability of the true label.

    Returns a pandas DataFrame with columns ``image, label, kind, amount, layer, distance,
    normalized_distance, p_true``. ``normalized_distance`` divides the distance by the norm of the
    original's feature vector (a relative change, so that layers with very different scales share
    one axis); the paper plots raw Euclidean distances with one axis per layer.
    """
    import pandas as pd

    stack = LayerStack(model)
    layers = stack.check(layers)
    labels = [int(v) for v in labels]
    if len(labels) != len(images):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels: give one label per image")
    dev = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    with stack.capture(layers) as feats, eval_mode(model), torch.no_grad():
        for i, (img, label) in enumerate(zip(images, labels)):
            batch = torch.stack([img] + [transform(img, kind, a, fill) for a in amounts]).to(dev)
            outs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
            probs = []
            for s in range(0, len(batch), batch_size):
                probs.append(feats(batch[s:s + batch_size]).softmax(1)[:, label].cpu())
                for n in layers:
                    outs[n].append(feats[n].detach().flatten(1).cpu())
            p = torch.cat(probs)
            for n in layers:
                f = torch.cat(outs[n])
                ref = f[0]
                dist = (f[1:] - ref).norm(dim=1)
                scale = ref.norm().clamp_min(1e-12)
                for j, (a, d) in enumerate(zip(amounts, dist.tolist())):
                    rows.append(dict(image=i, label=label, kind=kind, amount=float(a), layer=n,
                                     distance=d, normalized_distance=d / float(scale),
                                     p_true=float(p[1 + j])))
    return pd.DataFrame(rows)


def pick_one_per_class(labels: Sequence[int], n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` images of ``n`` different classes (a reproducible random image of each of
    ``n`` randomly chosen classes): Fig. 5's "5 example images"."""
    labels_t = torch.as_tensor(list(labels))
    classes = labels_t.unique()
    if n < 1:
        raise ConfigError(f"asked for {n} images: ask for at least 1 (one per class, at most {len(classes)})")
    if n > len(classes):
        raise ConfigError(f"asked for {n} images of different classes, but the data has {len(classes)} classes")
    g = torch.Generator().manual_seed(seed)
    chosen = classes[torch.randperm(len(classes), generator=g)[:n]]
    out = []
    for c in chosen.tolist():
        idx = (labels_t == c).nonzero().flatten()
        out.append(int(idx[torch.randint(len(idx), (1,), generator=g)]))
    return out


def paper_amounts(kind: str, input_size: int = 224) -> list[float]:
    """Fig. 5's ranges: vertical translation −60…60 px at 224 (scaled to ``input_size``, whole pixels),
    zoom 1…1.8, rotation 0…350° in 10° steps."""
    if kind == "translate":
        top = round(60 * input_size / 224)
        return [float(round(v)) for v in torch.linspace(-top, top, 13).tolist()]
    if kind == "scale":
        return [round(v, 3) for v in torch.linspace(1.0, 1.8, 9).tolist()]
    if kind == "rotate":
        return [float(a) for a in range(0, 360, 10)]
    raise ConfigError(f"unknown transformation {kind!r}: use one of {', '.join(KINDS)}")


def invariance_summary(curves: dict[str, Any], layers: Sequence[str]) -> Any:
    """Fig. 5's curves (``curves``: kind → :func:`feature_distance_curves` table) in one row per
    transformation: the smallest step, the mean normalised distance of both ``layers`` (layer 1 and
    layer 7) at that step, the mean |ΔP(true label)| over the whole range, and whether layer 1 moves
    more than layer 7 at the smallest step. A DataFrame indexed by transformation."""
    import pandas as pd

    rows = []
    for kind, df in curves.items():
        base = 1.0 if kind == "scale" else 0.0
        small = sorted({a for a in df.amount if a != base}, key=lambda a: abs(a - base))[0]
        at = df[df.amount == small]
        p0 = df[(df.amount == base) & (df.layer == layers[0])].set_index("image").p_true
        p = df[df.layer == layers[0]]
        rows.append({"transformation": kind, "smallest step": small,
                     f"{layers[0]} distance": at[at.layer == layers[0]].normalized_distance.mean(),
                     f"{layers[1]} distance": at[at.layer == layers[1]].normalized_distance.mean(),
                     "mean |ΔP(true)| over the range": (p.p_true.values - p0.loc[p.image].values).__abs__().mean()})
    summary = pd.DataFrame(rows).set_index("transformation")
    summary["layer 1 moves more than layer 7"] = summary[f"{layers[0]} distance"] > summary[f"{layers[1]} distance"]
    return summary


def invariance_claims(moves: Any, drop: Any) -> list[Any]:
    """Fig. 5's claims: for each small transformation (``moves``: kind → whether layer 1 moves more than
    layer 7 at the smallest step, the column ``"layer 1 moves more than layer 7"`` of an
    :func:`invariance_summary`) that layer 1 changes more than layer 7, and (``drop``: kind → mean
    |ΔP(true label)| over the range, the column ``"mean |ΔP(true)| over the range"``) that the output is
    more stable to translation and scale than to rotation (``holds`` None without the three kinds)."""
    from .claims import Claim

    drop = {k: float(v) for k, v in drop.items()}
    claims = [Claim("Fig. 5", f"small {k}: layer 1 changes more than layer 7",
                    "Fig. 5 a2-c2: layer 1 changes a lot, layer 7 little", None, bool(v)) for k, v in moves.items()]
    stable = (bool(drop["translate"] < drop["rotate"] and drop["scale"] < drop["rotate"])
              if {"translate", "scale", "rotate"} <= drop.keys() else None)
    claims.append(Claim("Fig. 5", "output more stable to translation and scale than to rotation",
                        "Fig. 5 a4-c4: rotation changes the output most", drop, stable))
    return claims
