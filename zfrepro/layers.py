"""One walk over a network's layers, shared by every analysis (deconvnet, scans, receptive fields,
occlusion, invariance, correspondence, transfer).

:class:`LayerStack` parses a supported network once — ZFNet and the AlexNet replica of
:mod:`zfrepro.models`, torchvision's AlexNet and VGG — into the paper's layer names in forward order
(``conv1 … conv5, fc6, fc7, fc8``), the module of each, the module whose output is each layer's
*rectified* output (its ReLU; the layer itself where none follows, the logits) and the geometry
(kernel, stride, padding, dilation, ceil_mode) of the convolutions and poolings on the way to each
layer. A layer name is checked in one place, with one error (:class:`~zfrepro.errors.LayerError`)
and one one-line message that names the valid layers.

:meth:`LayerStack.capture` reads named layers' rectified outputs with forward hooks and can end the
forward after the deepest of them (the pattern of captum's ``_forward_layer_distributed_eval`` and
lucent's ``ModelHook``); :func:`forward_hooks` is the primitive under it, for hooks on any modules.
:func:`eval_mode` runs a block in eval mode and restores the model's mode afterwards.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LayerError

__all__ = ["LayerStack", "Geometry", "geometry", "pair", "eval_mode", "forward_hooks", "StopForward", "Captured",
           "classifier_grid", "pool_to_grid"]

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_PAPER_NAME = re.compile(r"(conv|fc)\d+")


def pair(v: Any) -> tuple[int, int]:
    """``(v, v)`` for an int, else the first and last entries of a tuple (a module's kernel, stride...)."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


@dataclass(frozen=True)
class Geometry:
    """Where a convolution or pooling reads its input: output (i, j) reads padded rows
    ``[i·stride, i·stride + dilation·(kernel − 1) + 1)`` (and columns)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool


def geometry(m: nn.Module) -> Geometry:
    """The :class:`Geometry` of a ``Conv2d``, ``MaxPool2d`` or ``AvgPool2d`` (a pooling without a stride
    steps by its kernel; average pooling has no dilation). Numeric padding only: callers refuse a
    ``Conv2d`` with ``padding="same"`` first."""
    k = pair(m.kernel_size)
    stride = getattr(m, "stride", None)
    return Geometry(k, pair(stride if stride is not None else m.kernel_size), pair(m.padding),
                    pair(getattr(m, "dilation", 1)), bool(getattr(m, "ceil_mode", False)))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode; its training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class StopForward(Exception):
    """Raised from a forward hook to end the model's forward once what is needed has run."""


@contextmanager
def forward_hooks(modules: Mapping[Hashable, nn.Module], on_output: Callable[[Any, Any], Any]) -> Iterator[None]:
    """Hook each module of ``modules`` (key → module) for the block: every output ``out`` of module
    ``key`` calls ``on_output(key, out)``; a true return value ends the forward (:class:`StopForward`,
    which :meth:`Captured.__call__` and :func:`run` catch). The hooks are removed on exit."""
    def hook(key: Hashable) -> Callable[..., None]:
        def fn(_m: nn.Module, _i: Any, out: Any) -> None:
            if on_output(key, out):
                raise StopForward
        return fn

    handles = [m.register_forward_hook(hook(k)) for k, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run(model: nn.Module, *inputs: Any) -> Any:
    """``model(*inputs)``, or ``None`` where a hook ended the forward early (:class:`StopForward`)."""
    try:
        return model(*inputs)
    except StopForward:
        return None


class Captured:
    """What :meth:`LayerStack.capture` yields: call it like the model; after each call
    ``captured[name]`` is the rectified output of ``name`` in that forward."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.model = model
        self.names = names
        self.outputs: dict[str, torch.Tensor] = {}

    def __call__(self, *inputs: Any) -> Any:
        """Run the model; returns its output, or ``None`` when the forward stopped after the deepest layer."""
        self.outputs.clear()
        return run(self.model, *inputs)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]


class LayerStack:
    """A supported network's layers, parsed once (see the module docstring).

    ``names``: the paper's layer names in forward order. Convolutions are numbered in forward order
    (torchvision VGG16: conv1..conv13); the fully connected layers are numbered so that the last is
    fc8, as the field names them (AlexNet and every VGG: fc6, fc7, fc8), so "fc7" is the penultimate
    layer (the paper's "layer 7") in each; beyond eight fc layers they continue the convolutions'
    count. A network that names its own layers so (ZFNet: ``features.conv1`` … ``classifier.fc8``,
    also where Table 3 removed some) keeps its names. ``module[name]``: the Conv2d/Linear;
    :attr:`rectified` ``[name]``: the module whose output is the layer's rectified output.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        pairs = _named_weight_layers(model)
        self.names: list[str] = [n for n, _ in pairs]
        self.module: dict[str, nn.Module] = dict(pairs)
        self._order = list(model.modules())

    @cached_property
    def rectified(self) -> dict[str, nn.Module]:
        """Layer name → the module whose output is the layer's rectified output (worked out at first use)."""
        return {n: _rectifier(self._order, m) for n, m in self.module.items()}

    def __repr__(self) -> str:
        return f"LayerStack({type(self.model).__name__}: {', '.join(self.names)})"

    @property
    def convs(self) -> list[str]:
        """The convolutional layers' names, in forward order."""
        return [n for n in self.names if n.startswith("conv")]

    def unknown(self, name: Any) -> LayerError:
        """The one error for a name that is not a layer of this network."""
        return LayerError(f"unknown layer {name!r}: valid layers are {', '.join(self.names)}")

    def check(self, names: str | Sequence[str]) -> list[str]:
        """``names`` (one name or several) as a list, each checked: a name that is not a layer of the
        network raises :class:`~zfrepro.errors.LayerError` naming the valid layers."""
        out = [names] if isinstance(names, str) else list(names)
        for name in out:
            if name not in self.module:
                raise self.unknown(name)
        return out

    def check_conv(self, name: Any, why: str) -> str:
        """``name`` checked as a convolutional layer: an unknown name is :meth:`unknown`'s error; a fully
        connected one is a :class:`~zfrepro.errors.LayerError` saying ``why`` it needs a convolution."""
        self.check([name])
        if not name.startswith("conv"):
            raise LayerError(f"layer {name!r} is fully connected: {why}; use one of {', '.join(self.convs)}")
        return name

    def deepest(self, names: Sequence[str]) -> str:
        """The last of ``names`` in forward order."""
        return max(self.check(names), key=self.names.index)

    def spatial_layers(self, name: str) -> list[nn.Module]:
        """The conv and pooling modules that lead to ``name``'s output, in forward order
        (``model.modules()`` order: the forward order of ZFNet, the replica, torchvision AlexNet/VGG)."""
        target = self.module[self.check([name])[0]]
        chain: list[nn.Module] = []
        for m in self._order:
            if isinstance(m, _SPATIAL):
                chain.append(m)
            if m is target:
                break
        return chain

    @contextmanager
    def capture(self, names: str | Sequence[str], *, stop: bool = False) -> Iterator[Captured]:
        """Hook the rectified outputs of ``names`` for the block and yield a :class:`Captured` to run the
        model with; ``stop=True`` ends each forward right after the deepest of them (its output is then
        ``None``). Hooks see what the module returns (not detached; under ``torch.no_grad()`` nothing is
        recorded for autograd)."""
        names = self.check(names)
        cap = Captured(self.model, names)
        last = self.deepest(names) if stop else None

        def keep(name: str, out: torch.Tensor) -> bool:
            cap.outputs[name] = out
            return name == last

        with forward_hooks({n: self.rectified[n] for n in names}, keep):
            yield cap


def _named_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear modules in forward (registration) order, with the paper's names."""
    own = [(n, m) for seq in (getattr(model, "features", None), getattr(model, "classifier", None))
           if isinstance(seq, nn.Sequential) for n, m in seq.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if own and len(own) == len(convs) + len(fcs) and all(_PAPER_NAME.fullmatch(n) for n, _ in own):
        return own  # the network's own paper names (ZFNet, also without the layers Table 3 removes)
    out: list[tuple[str, nn.Module]] = [(f"conv{i}", m) for i, m in enumerate(convs, start=1)]
    # the field's names: the fully connected layers end at fc8 (AlexNet and every VGG: fc6, fc7, fc8), so the
    # paper's "layer 7" is the penultimate one wherever the convolutions stop; beyond eight fc layers (no fc0)
    # they continue the convolutions' count instead
    first = 9 - len(fcs) if len(fcs) <= 8 else len(convs) + 1
    out += [(f"fc{j}", m) for j, m in enumerate(fcs, start=first)]
    return out


def _rectifier(modules: list[nn.Module], target: nn.Module) -> nn.Module:
    """The ReLU that follows ``target`` in its container (``modules``: the model's, in order) before the
    next conv, fc or max pool, else ``target``."""
    for parent in modules:
        children = list(parent.children())
        for i, child in enumerate(children):
            if child is target:
                for nxt in children[i + 1:]:
                    if isinstance(nxt, nn.ReLU):
                        return nxt
                    if isinstance(nxt, (nn.Conv2d, nn.Linear, nn.MaxPool2d)):
                        break
                return target
    return target


def classifier_grid(model: nn.Module, x: torch.Tensor) -> int:
    """The side of the map that the first fully connected layer reads for inputs like ``x`` (pool5's: 6
    at 224 px, 3 at 128 px; 1 for a network without a ``features`` block): the spatial resolution of the
    paper's layer-5 feature vector ("6·6·256 = 9216 dimensions"), used by Table 1 and Table 7."""
    feats = getattr(model, "features", None)
    if feats is None:
        return 1
    with torch.no_grad():
        return int(feats(x[:1]).shape[-1])


def pool_to_grid(a: torch.Tensor, grid: int) -> torch.Tensor:
    """A layer's output as a flat feature vector per image: a conv map (N×C×H×W) max-pooled over a
    ``grid``×``grid`` grid of equal cells, then flattened; a fully connected output (N×D) unchanged. At
    :func:`classifier_grid`'s grid conv5's pooled output is exactly pool5's."""
    return F.adaptive_max_pool2d(a, grid).flatten(1) if a.dim() == 4 else a
