"""The paper's networks (Fig. 3), layer naming, initialisation, the layer table and checkpoints.

``zfnet`` is the network of Fig. 3 (arXiv 1311.2901 v3); ``alexnet`` is the paper's
"replication of Krizhevsky et al." used for Fig. 6 and Table 3. Both are built like
torchvision's ``AlexNet`` (a ``features`` stack, then ``classifier``), so the same code
(``layer_names``, the deconvnet, scans) works on them and on torchvision's AlexNet / VGG.

Contrast normalisation ("contrast normalization across feature maps", §3) is
``nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)`` (as :class:`zfrepro.lrn.CrossChannelLRN`:
the same values, a faster backward): Krizhevsky et al.'s constants, which the paper inherits
without restating. Pooling is 3×3 stride 2 with ``ceil_mode=True`` (Caffe's convention of the
time), which yields the paper's map sizes (:data:`PAPER_MAP_SIZES`) at a 224 input.
"""

from __future__ import annotations

import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .layers import LayerStack, eval_mode, forward_hooks
from .lrn import CrossChannelLRN

__all__ = [
    "ARCHS",
    "TORCHVISION_ARCHS",
    "parse_arch",
    "zfnet",
    "alexnet",
    "build_model",
    "layer_names",
    "get_layer",
    "rectified_module",
    "init_weights",
    "INIT_SCHEMES",
    "describe",
    "save_checkpoint",
    "load_checkpoint",
    "model_spec",
    "REMOVABLE_LAYERS",
    "PAPER_MAP_SIZES",
    "map_size_claim",
]

#: Contrast normalisation constants (Krizhevsky et al. 2012, §3.3).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

# (out_channels, kernel, stride, padding) per conv layer, and where pools/norms follow.
_CONV_SPECS: dict[str, list[tuple[int, int, int, int]]] = {
    # Fig. 3: conv1 96x7x7/2, conv2 256x5x5/2, conv3-5 384/384/256 3x3/1.
    "zfnet": [(96, 7, 2, 1), (256, 5, 2, 0), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)],
    # Krizhevsky replica: conv1 11x11/4, conv2 5x5/1 (pad 2), dense connections.
    "alexnet": [(96, 11, 4, 2), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)],
}
_POOL_AFTER = {1, 2, 5}
_NORM_AFTER = {1, 2}


def _pool_out(n: int, k: int = 3, s: int = 2) -> int:
    """Output length of a ceil_mode max pool without padding."""
    out = math.ceil((n - k) / s) + 1
    if (out - 1) * s >= n:  # PyTorch's rule: the last window must start inside the input
        out -= 1
    return out


#: Fig. 3's map sizes (side in pixels) at a 224 input, conv1 to pool5.
PAPER_MAP_SIZES = {"conv1": 110, "pool1": 55, "conv2": 26, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6}


def map_size_claim(sizes: dict[str, Any]) -> "Claim":
    """Fig. 3's claim: our map sizes conv1…pool5 (``sizes``: layer → side, from :func:`describe`'s
    ``out_size``) are the paper's (:data:`PAPER_MAP_SIZES`)."""
    from .claims import Claim

    paper = "-".join(str(v) for v in PAPER_MAP_SIZES.values())
    ours = "-".join(str(sizes.get(k, "?")) for k in PAPER_MAP_SIZES)
    return Claim("Fig. 3", "map sizes conv1…pool5", paper, ours, ours == paper)


#: Layers that Table 3 removes (any subset): conv3, conv4 (conv5 then reads pool2/norm2) and fc6, fc7
#: (the next kept layer reads the flattened pool5, or fc6's output).
REMOVABLE_LAYERS = (3, 4, 6, 7)


def _check_conv_maps(conv_maps: Sequence[int] | None, default: list[int]) -> list[int]:
    """The five conv map counts at width 1 (paper units): ``conv_maps`` or the architecture's own."""
    if conv_maps is None or len(conv_maps) == 0:
        return list(default)
    try:
        maps = [int(c) for c in conv_maps]
    except (TypeError, ValueError):
        raise ConfigError(f"conv_maps must be 5 integers (conv1-conv5 at width 1), got {conv_maps!r}") from None
    if len(maps) != 5 or min(maps) < 1:
        raise ConfigError(f"conv_maps must be 5 positive integers (conv1-conv5 maps at width 1, e.g. "
                          f"96,256,512,1024,512), got {list(conv_maps)}")
    return maps


def _check_remove(remove: Sequence[int] | None) -> tuple[int, ...]:
    """The removed layers, sorted; only 3, 4, 6 and 7 can go (Table 3)."""
    try:
        out = tuple(sorted({int(i) for i in (remove or ())}))
    except (TypeError, ValueError):
        raise ConfigError(f"remove must list layer numbers (3, 4, 6, 7), got {remove!r}") from None
    bad = [i for i in out if i not in REMOVABLE_LAYERS]
    if bad:
        raise ConfigError(f"cannot remove layer {', '.join(map(str, bad))}: only layers 3, 4, 6 and 7 can be "
                          "removed (conv1, conv2 and conv5 carry the pooling and normalisation; fc8 is the classifier)")
    return out


class ZFNet(nn.Module):
    """A ZFNet-style network: ``features`` (conv/ReLU/pool/norm) then ``classifier`` (fc6-fc8).

    Attributes ``arch`` and ``spec`` record how it was built; checkpoints store them.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int = 1000,
        input_size: int = 224,
        width: float = 1.0,
        fc_width: int = 4096,
        dropout: float = 0.5,
        conv_maps: Sequence[int] | None = None,
        remove: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if arch not in _CONV_SPECS:
            raise ConfigError(f"unknown architecture {arch!r}: use one of {sorted(_CONV_SPECS)}")
        if width <= 0 or fc_width <= 0 or num_classes <= 0:
            raise ConfigError("width, fc_width and num_classes must be positive")
        base = _CONV_SPECS[arch]
        maps = _check_conv_maps(conv_maps, [c for c, *_ in base])
        removed = _check_remove(remove)
        self.arch = arch
        self.spec = dict(
            arch=arch, num_classes=int(num_classes), input_size=int(input_size),
            width=float(width), fc_width=int(fc_width), dropout=float(dropout),
        )
        # variant keys only when used: the default networks' specs (and old checkpoints) are unchanged
        if maps != [c for c, *_ in base]:
            self.spec["conv_maps"] = list(maps)
        if removed:
            self.spec["remove"] = list(removed)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        c_in, size = 3, int(input_size)
        for i, ((_, k, s, p), c_paper) in enumerate(zip(base, maps), start=1):
            if i in removed:
                continue  # "remove layers 3,4": the next kept layer reads this one's input
            c_out = max(1, int(round(c_paper * width)))
            layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
            layers[f"relu{i}"] = nn.ReLU(inplace=False)
            size = (size + 2 * p - k) // s + 1
            if i in _POOL_AFTER:
                layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
                size = _pool_out(size)
            if i in _NORM_AFTER:
                layers[f"norm{i}"] = CrossChannelLRN(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)
            c_in = c_out
        if size < 1:
            raise ConfigError(f"input_size {input_size} is too small for {arch}: use at least 64")
        self.features = nn.Sequential(layers)
        self.flat_features = c_in * size * size
        head: "OrderedDict[str, nn.Module]" = OrderedDict()
        n_in = self.flat_features
        for j in (6, 7):  # dropout sits before each fc layer it belongs to; a removed layer takes its dropout along
            if j in removed:
                continue
            head[f"drop{j}"] = nn.Dropout(dropout)
            head[f"fc{j}"] = nn.Linear(n_in, fc_width)
            head[f"relu{j}"] = nn.ReLU(inplace=False)
            n_in = fc_width
        head["fc8"] = nn.Linear(n_in, num_classes)
        self.classifier = nn.Sequential(head)
        init_weights(self, "paper")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def zfnet(num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
          fc_width: int = 4096, *, dropout: float = 0.5, conv_maps: Sequence[int] | None = None,
          remove: Sequence[int] = ()) -> nn.Module:
    """The paper's Fig. 3 network (ZFNet), initialised as in §3 (weights N(0, 1e-2), biases 0).

    At a 224 input the maps are conv1 110×110×96, pool1 55×55, conv2 26×26×256, pool2 13×13,
    conv3-5 13×13 (384/384/256), pool5 6×6×256; fc6 takes 9216 inputs. ``width`` scales the
    conv channels and ``fc_width`` the fc6/fc7 units (CPU profiles); ``input_size`` sets the
    flatten size; ``dropout`` is the rate before fc6 and fc7. Used by every notebook; Fig. 3 in
    ``01_architecture``.

    Table 3's variants (``09_ablations``):

    - ``conv_maps``: the maps of conv1-conv5 *at width 1*, in the paper's units, e.g.
      ``(96, 256, 512, 1024, 512)`` for "layers 3,4,5 at 512,1024,512 maps" (Table 2 b);
      ``width`` multiplies them like the default maps (×0.5: 48-128-256-512-256).
    - ``fc_width``: the fc6/fc7 units (paper 2048 / 4096 / 8192).
    - ``remove``: layers taken out, any of 3, 4, 6, 7. Without conv3 and conv4, conv5 filters
      conv2's (pooled, normalised) output; without fc7, fc8 reads fc6; without fc6 and fc7, fc8
      reads the flattened pool5 directly (with no dropout: the paper's dropout belongs to fc6
      and fc7). The kept layers keep their paper names (``conv5`` stays ``conv5``).
    """
    return ZFNet("zfnet", num_classes, input_size, width, fc_width, dropout, conv_maps, remove)


def alexnet(num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            fc_width: int = 4096, *, dropout: float = 0.5, conv_maps: Sequence[int] | None = None,
            remove: Sequence[int] = ()) -> nn.Module:
    """The paper's replica of Krizhevsky et al. (11×11 stride-4 conv1, 5×5 stride-1 conv2),
    with dense connections and the same fc layers. Used for Fig. 6 and Table 3 comparisons;
    takes the same variants as :func:`zfnet` (``conv_maps``, ``fc_width``, ``remove``)."""
    return ZFNet("alexnet", num_classes, input_size, width, fc_width, dropout, conv_maps, remove)


#: This package's networks by name: Fig. 3's ZFNet and the paper's Krizhevsky replica.
ARCHS = {"zfnet": zfnet, "alexnet": alexnet}
#: torchvision networks the deconvnet inverts (``"torchvision:NAME"``): no batch norm, no residual blocks.
TORCHVISION_ARCHS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19")


def parse_arch(arch: str) -> tuple[str, str]:
    """The one vocabulary of architectures: ``"zfnet"`` → ``("zfrepro", "zfnet")``;
    ``"torchvision:vgg16"`` → ``("torchvision", "vgg16")``. Anything else is a one-line
    :class:`ConfigError` listing what is accepted."""
    valid = ", ".join([*ARCHS, *(f"torchvision:{n}" for n in TORCHVISION_ARCHS)])
    if not isinstance(arch, str):
        raise ConfigError(f"arch must be a string, got {arch!r}: use one of {valid}")
    if arch in ARCHS:
        return "zfrepro", arch
    source, _, name = arch.partition(":")
    if source == "torchvision" and name in TORCHVISION_ARCHS:
        return "torchvision", name
    if source == "torchvision" and name.endswith("_bn"):
        raise ConfigError(f"arch {arch!r}: batch normalisation has no deconvnet inverse (the paper's networks have "
                          f"none); use {name[:-3]} instead")
    raise ConfigError(f"unknown architecture {arch!r}: use one of {valid}")


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build ``arch`` (any name :func:`parse_arch` accepts; torchvision's with random weights and only
    ``num_classes`` of ``kwargs``)."""
    source, name = parse_arch(arch)
    if source == "torchvision":
        import torchvision.models as tvm

        kw = {k: v for k, v in kwargs.items() if k == "num_classes"}
        return tvm.get_model(name, weights=None, **kw)
    return ARCHS[name](**kwargs)


# ----------------------------------------------------------------------------- naming


def layer_names(model: nn.Module) -> list[str]:
    """The paper's layer names: ``["conv1", ..., "conv5", "fc6", "fc7", "fc8"]`` for ZFNet
    (:attr:`zfrepro.layers.LayerStack.names`).

    Convolutions are numbered in forward order (torchvision VGG16: conv1..conv13); the fully
    connected layers are numbered so that the last is fc8, as the field names them (AlexNet and
    every VGG: fc6, fc7, fc8), so "fc7" is the penultimate layer (the paper's "layer 7") in each.
    "convN" is layer N only where the network has five convolutions; use the order of this list,
    not the number in a name, for depth.
    """
    return LayerStack(model).names


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The Conv2d/Linear module called ``name`` (see :func:`layer_names`); an unknown name is a
    :class:`~zfrepro.errors.LayerError` naming the valid layers."""
    stack = LayerStack(model)
    return stack.module[stack.check(name)[0]]


def rectified_module(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is layer ``name``'s rectified output (its ReLU), or the layer
    itself when no ReLU follows (the logits, fc8). Hook it to read "activations" as the paper
    means them (Fig. 2, 5, 7, Table 1); :meth:`zfrepro.layers.LayerStack.capture` does."""
    stack = LayerStack(model)
    return stack.rectified[stack.check(name)[0]]


# ----------------------------------------------------------------------------- init

INIT_SCHEMES = ("paper", "kaiming", "hybrid", "torch")


def init_weights(model: nn.Module, scheme: str = "paper", std: float = 1e-2) -> nn.Module:
    """Initialise conv and linear layers in place and return the model.

    - ``"paper"``: weights N(0, ``std``=1e-2), biases 0 (§3).
    - ``"kaiming"``: He-normal (fan-in, ReLU gain) for every convolution and every hidden linear
      layer, N(0, ``std``) for the last (classifier) layer, biases 0. With N(0, 1e-2) fc layers the
      logits at initialisation are tiny and training stays at chance for the first epochs; with this
      scheme the loss moves in the first updates (measured in the README, "Measured here").
    - ``"hybrid"``: ``"kaiming"``, except the first convolution, which keeps the paper's
      N(0, ``std``): a start ten times below the renormalisation radius (0.1), the paper's ratio.
      The ``default`` profile's scheme: from He-normal (std 0.117 for 7×7×3, above the radius) the
      renormalisation binds from the first update and conv1 keeps its random start (measured in
      ``benchmarks/conv1_recipes.py``; README, "Why layer 1 was noisy").
    - ``"torch"``: PyTorch's default ``reset_parameters``.
    """
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"unknown init scheme {scheme!r}: use one of {', '.join(INIT_SCHEMES)}")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears else None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    first = convs[0] if convs else None
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "torch":
            m.reset_parameters()
            continue
        if scheme in ("kaiming", "hybrid") and m is not last and not (scheme == "hybrid" and m is first):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, 0.0, std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


# ----------------------------------------------------------------------------- describe


def describe(model: nn.Module, input_size: int | None = None) -> "Any":
    """Per-layer table (pandas DataFrame) for Fig. 3: output shape, receptive field and
    jump (stride) in input pixels, parameters and multiply-adds, for every conv, pool,
    norm and fc layer, computed from the real modules with one forward pass.
    """
    import pandas as pd

    if input_size is None:
        input_size = getattr(model, "spec", {}).get("input_size", 224)
    names = {id(m): n for n, m in LayerStack(model).module.items()}
    counters = {"pool": 0, "norm": 0}
    rows: list[dict[str, Any]] = []
    rf, jump = 1, 1
    last_conv = 0

    def hook(mod: nn.Module, out: torch.Tensor) -> None:
        nonlocal rf, jump, last_conv
        shape = tuple(out.shape[1:])
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        kind, name, k, s, madds = "", "", None, None, 0
        if isinstance(mod, nn.Conv2d):
            kind, name = "conv", names[id(mod)]
            last_conv = int(name[4:])
            k, s = mod.kernel_size[0], mod.stride[0]
            madds = out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * k * mod.kernel_size[1]
        elif isinstance(mod, nn.MaxPool2d):
            kind, name = "maxpool", f"pool{last_conv}"
            k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
            s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
        elif isinstance(mod, nn.LocalResponseNorm):
            kind, name = "contrast norm", f"norm{last_conv}"
        elif isinstance(mod, nn.Linear):
            kind, name = "fc", names[id(mod)]
            madds = mod.in_features * mod.out_features
        else:
            return
        if k is not None:
            rf = rf + (k - 1) * jump
            jump = jump * s
        rows.append(dict(
            layer=name, type=kind,
            kernel=f"{k}x{k}" if k else "", stride=s or "",
            out_channels=shape[0], out_size=shape[1] if len(shape) == 3 else 1,
            output=" x ".join(str(d) for d in shape),
            receptive_field=rf if kind != "fc" else None, jump=jump if kind != "fc" else None,
            params=params, mult_adds=madds,
        ))

    watched = {m: m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.LocalResponseNorm, nn.Linear))}
    p = next(model.parameters())
    with forward_hooks(watched, hook), eval_mode(model), torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size, dtype=p.dtype, device=p.device))
    df = pd.DataFrame(rows)
    df.attrs["input_size"] = int(input_size)
    df["receptive_field"] = df["receptive_field"].astype("Int64")
    df["jump"] = df["jump"].astype("Int64")
    return df


# ----------------------------------------------------------------------------- checkpoints


def model_spec(model: nn.Module) -> dict[str, Any]:
    """How ``model`` was built: ``arch`` plus its constructor arguments (ZFNet / AlexNet replica),
    or the class name for other models."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        return dict(spec)
    return {"arch": type(model).__name__}


def _describe_spec(spec: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items())


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write the weights and the model's spec atomically (temporary file, then rename)."""
    from .io import atomic_save

    payload = {"spec": model_spec(model), "state_dict": model.state_dict(), **extra}
    return atomic_save(payload, Path(path))


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint written by :func:`save_checkpoint` (or a snapshot of ``zfrepro.train``).

    With ``model=None`` the model is rebuilt from the stored spec. If ``model`` has another
    architecture or size the error names both in one line, instead of PyTorch's list of
    missing keys. Loads with ``weights_only=True``: no code runs from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: train first (zfrepro train) or fix the path")
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except (RuntimeError, ValueError):
            raise ConfigError(f"map_location {map_location!r} is not a device: use 'cpu', 'cuda' or 'cuda:N'") from None
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, struct.error,
            UnicodeDecodeError, AttributeError, TypeError, IndexError, KeyError) as exc:
        # truncated, not a torch file, or unsafe content (weights_only refuses code)
        raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}): "
                              "the file is corrupt or not a zfrepro checkpoint; delete it and retrain") from None
    if isinstance(payload, dict) and "state_dict" in payload:
        state, spec = payload["state_dict"], payload.get("spec", {})
    elif isinstance(payload, dict) and "model" in payload:
        state, spec = payload["model"], payload.get("spec", {})
    elif isinstance(payload, dict):
        state, spec = payload, {}
    else:
        raise CheckpointError(f"checkpoint {path} holds no state dict: not a model checkpoint")
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint {path} has an invalid spec {type(spec).__name__}: it is corrupt or not a "
                              "zfrepro checkpoint; retrain or pass another file")
    if model is None:
        if spec.get("arch") not in ARCHS:
            raise CheckpointError(f"checkpoint {path} does not say how to build its model "
                                  f"(spec: {spec or 'none'}): pass model=")
        # sizes checked before anything is allocated (fc_width=10**6 would ask for terabytes)
        for k, lo, hi, kinds in (("num_classes", 1, 100000, (int,)), ("fc_width", 1, 65536, (int,)),
                                 ("input_size", 16, 4096, (int,)), ("width", 0, 16, (int, float))):
            if k not in spec:
                continue
            v = spec[k]
            ok = isinstance(v, kinds) and not isinstance(v, bool) and (
                lo < v <= hi if k == "width" else lo <= v <= hi)
            if not ok:
                rng = f"({lo}, {hi}]" if k == "width" else f"{lo}..{hi}"
                raise CheckpointError(f"checkpoint {path} has an invalid spec {k}={v!r} (expected {rng}): it is corrupt "
                                      "or not a zfrepro checkpoint; retrain or pass another file")
        kw = {k: spec[k] for k in ("num_classes", "input_size", "width", "fc_width", "dropout", "conv_maps", "remove")
              if k in spec}  # a checkpoint from before the variants has no conv_maps/remove: the defaults
        model = build_model(spec["arch"], **kw)
    mine = model_spec(model)
    mismatched = [k for k in ("arch", "num_classes", "width", "fc_width")
                  if k in spec and k in mine and spec[k] != mine[k]]
    if spec.get("arch") in ARCHS:  # Table 3 variants: absent means the architecture's default
        mismatched += [k for k in ("conv_maps", "remove") if list(spec.get(k) or []) != list(mine.get(k) or [])]
    own = model.state_dict()
    bad_shape = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or bad_shape or missing or unexpected:
        theirs = _describe_spec(spec) if spec else f"{len(state)} tensors, e.g. {next(iter(state), '?')}"
        raise CheckpointError(
            f"checkpoint {path} is for another architecture ({theirs}) than the model "
            f"({_describe_spec(mine)}): build the model the checkpoint was trained with")
    model.load_state_dict(state)
    return model
