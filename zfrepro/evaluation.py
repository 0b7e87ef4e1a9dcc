"""Top-1/top-5 accuracy and loss of a network on a split, with the centre crop or the paper's 10 crops
(§3: "the 10 different sub-crops"); training validates with it after every epoch."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import data as _data
from . import datasets as _datasets
from .config import Profile, get_profile
from .devices import inference_layout, resolve_device
from .errors import ConfigError
from .layers import eval_mode

__all__ = ["evaluate", "eval_sums"]


@torch.no_grad()
def eval_sums(model: nn.Module, decoded: _data.DecodedSplit, mean: torch.Tensor, prof: Profile,
               device: torch.device, indices: torch.Tensor, crops: int, prepare: Callable[[Any], Any],
               autocast: Callable[[], Any], batch_size: int | None = None) -> torch.Tensor:
    """[loss sum, top-1 correct, top-5 correct, count] (float64) over ``indices`` of ``decoded``;
    ``crops`` 1 (centre) or 10 (corners + centre and flips, softmax averaged)."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    per = max(1, (batch_size or prof.batch_size) // crops)
    k5 = None
    with eval_mode(model):
        for s in range(0, len(indices), per):
            idx = indices[s:s + per]
            x = _data.normalize(decoded.images[idx], mean, prof.pixel_scale)
            y = decoded.labels[idx].to(device)
            x = _data.ten_crop(x, prof.input_size) if crops == 10 else _data.center_crop(x, prof.input_size)
            x = prepare(x.contiguous().to(device))
            with autocast():
                logits = model(x).float()
            n = len(idx)
            probs = logits.softmax(-1).view(crops, n, -1).mean(0)
            loss = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().sum()
            k5 = min(5, probs.shape[1])
            top = probs.topk(k5, dim=1).indices
            hit = top == y[:, None]
            sums += torch.stack([loss.double(), hit[:, 0].sum().double(), hit.any(1).sum().double(),
                                 torch.tensor(float(n), dtype=torch.float64, device=device)])
    return sums


def evaluate(model: nn.Module, profile: str | Profile = "default", *, data_root: str | Path | None = None,
             split: str = "val", crops: int | None = None, device: str | torch.device | None = None,
             batch_size: int | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (fractions) and loss of ``model`` on ``split`` preprocessed per
    ``profile`` (per-pixel training mean, ``pixel_scale``; ``crops`` defaults to
    ``profile.eval_crops``: 1 centre crop or the paper's 10 crops)."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    crops = crops or prof.eval_crops
    if crops not in (1, 10):
        raise ConfigError(f"crops must be 1 or 10, got {crops}")
    root = _datasets.resolve_root(data_root)
    per_class = prof.train_per_class if split == "train" else prof.val_per_class
    dec = _data.decode_split(_datasets.image_folder(root, split).subset_per_class(per_class), prof.resize)
    mean = _data.training_mean(prof, root)
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    sums = eval_sums(model, dec, mean, prof, dev, torch.arange(len(dec)), crops, inference_layout,
                      contextlib.nullcontext, batch_size).tolist()
    n = max(1.0, sums[3])
    return {"loss": sums[0] / n, "top1": sums[1] / n, "top5": sums[2] / n, "n": int(sums[3])}
