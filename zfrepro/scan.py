"""Scan a dataset for the top-k activations of every feature map (Fig. 2, Fig. 4, Fig. 7c).

"Activation" is a layer's rectified output, as in the deconvnet (:mod:`zfrepro.deconv`), so a scan
result feeds straight into ``DeconvNet.project``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .devices import inference_layout
from .errors import ConfigError
from .layers import LayerStack, eval_mode

__all__ = ["TopActivations", "top_activations"]


@dataclass
class TopActivations:
    """The ``k`` largest activations of each of a layer's ``C`` feature maps over a dataset.

    ``values`` C×k (each row descending), ``image_index`` C×k (index into the scanned data, in
    iteration order), ``position`` C×k×2 (row, col of that maximum in the layer's map).
    """

    layer: str
    values: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor
    map_size: tuple[int, int]

    def unit(self, channel: int, rank: int = 0) -> tuple[int, int, tuple[int, int]]:
        """``(image_index, channel, (row, col))`` of the ``rank``-th strongest activation of a map."""
        r, c = self.position[channel, rank].tolist()
        return int(self.image_index[channel, rank]), channel, (r, c)


def top_activations(model: nn.Module, data: Dataset | DataLoader | Iterable, layers: Sequence[str] | None = None,
                    k: int = 9, batch_size: int = 64, progress: bool = True) -> dict[str, TopActivations]:
    """One pass over ``data`` (``(image, label)`` pairs of model-ready tensors; a Dataset or a
    non-shuffling DataLoader) recording, for every feature map of every layer in ``layers``
    (default: all conv layers), the ``k`` images with the largest activation of that map — each
    image counted once per map, at its maximum over positions (the paper's "top 9 activations").

    Runs on the model's device (the model is never moved). One forward per batch serves every layer;
    the forward stops after the deepest requested layer.
    Memory is O(k × channels) per layer, whatever the dataset size. Ties (and all-zero maps) resolve
    deterministically to the lower image index, and within an image to the first position in
    row-major order.
    """
    stack = LayerStack(model)
    layers = stack.check(layers) if layers is not None else stack.convs
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    dev = next(model.parameters()).device
    loader = data if isinstance(data, DataLoader) else (
        DataLoader(data, batch_size=batch_size, shuffle=False) if isinstance(data, Dataset) else data)
    if isinstance(loader, DataLoader):
        sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
        if not isinstance(sampler, torch.utils.data.SequentialSampler):
            raise ConfigError(f"top_activations needs data in dataset order (image_index indexes the dataset), "
                              f"but the DataLoader uses {type(sampler).__name__}: pass shuffle=False and no sampler")
    state: dict[str, list[torch.Tensor]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    seen = 0
    t0 = time.monotonic()
    from tqdm.auto import tqdm

    bar = tqdm(desc="scan", unit="img", disable=not progress, file=sys.stderr, mininterval=1.0)
    try:
        with stack.capture(layers, stop=True) as batch_acts, eval_mode(model), torch.no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x = inference_layout(x.to(dev, non_blocking=True))
                batch_acts(x)
                n = x.shape[0]
                idx = torch.arange(seen, seen + n, device=dev)
                for name in layers:
                    a = batch_acts[name]
                    if a.dim() == 2:  # fc layers: one "position"
                        a = a[:, :, None, None]
                    c = a.shape[1]
                    sizes[name] = (a.shape[2], a.shape[3])
                    vals, arg = a.flatten(2).max(dim=2)            # n×C: each image once per map
                    vals, arg = vals.t(), arg.t()                   # C×n
                    img = idx[None, :].expand(c, n)
                    if name in state:
                        pv, pi, pa = state[name]
                        vals, img, arg = torch.cat([pv, vals], 1), torch.cat([pi, img], 1), torch.cat([pa, arg], 1)
                    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
                    state[name] = [vals.gather(1, order), img.gather(1, order), arg.gather(1, order)]
                seen += n
                bar.update(n)
                bar.set_postfix(img_s=f"{seen / max(1e-9, time.monotonic() - t0):.0f}")
    finally:
        bar.close()
    if seen < k:
        raise ConfigError(f"top_activations got {seen} images for k={k}: give at least k images or lower k")
    out: dict[str, TopActivations] = {}
    for name in layers:
        vals, img, arg = (t.cpu() for t in state[name])
        hh, ww = sizes[name]
        pos = torch.stack([arg // ww, arg % ww], dim=-1)
        out[name] = TopActivations(name, vals, img, pos, (hh, ww))
    return out
