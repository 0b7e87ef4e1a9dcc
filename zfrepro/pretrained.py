"""Reruns with another model: torchvision's AlexNet / VGG with weights the user supplies.

Every notebook that looks into a trained network (02, 03, 05, 06, 07) takes ``arch`` and
``weights`` parameters, so that ``zfrepro reproduce --set arch=torchvision:alexnet --set
weights=alexnet.pth`` repeats Figs. 1, 2, 5, 7, 8 on an ImageNet-trained network:

- :func:`parse_arch` — ``"zfnet"`` / ``"alexnet"`` (this package's networks, trained by
  :mod:`zfrepro.train`) or ``"torchvision:NAME"`` (NAME in :data:`TORCHVISION_ARCHS`).
- :func:`load_model` — the network: a finished run of the profile (training it if needed), a
  checkpoint file, or a torchvision model with the state dict in ``weights`` (``""``: torchvision's
  own ImageNet weights, downloaded when online).
- :func:`zfrepro.data.input_spec` — what the model expects (resize, crop, normalisation, the mapping
  of dataset classes to ImageNet outputs).
- :func:`output_name` — where a rerun's results, figures and executed notebooks go: the profile's
  name for the canonical run, the profile plus a tag of the model and dataset otherwise, so that
  a rerun never overwrites the committed ``default`` gallery.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import profile_of, split_profile
from .errors import CheckpointError, ConfigError, DataError

__all__ = ["TORCHVISION_ARCHS", "parse_arch", "load_torchvision", "load_model", "check_outputs", "output_name"]

TORCHVISION_ARCHS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19")
_OWN_ARCHS = ("zfnet", "alexnet")


def parse_arch(arch: str) -> tuple[str, str]:
    """``"zfnet"`` → ``("zfrepro", "zfnet")``; ``"torchvision:vgg16"`` → ``("torchvision", "vgg16")``.
    Anything else is a :class:`ConfigError` listing what is accepted."""
    valid = ", ".join([*_OWN_ARCHS, *(f"torchvision:{n}" for n in TORCHVISION_ARCHS)])
    if not isinstance(arch, str):
        raise ConfigError(f"arch must be a string, got {arch!r}: use one of {valid}")
    if arch in _OWN_ARCHS:
        return "zfrepro", arch
    source, _, name = arch.partition(":")
    if source == "torchvision" and name in TORCHVISION_ARCHS:
        return "torchvision", name
    if source == "torchvision" and name.endswith("_bn"):
        raise ConfigError(f"arch {arch!r}: batch normalisation has no deconvnet inverse (the paper's networks have "
                          f"none); use {name[:-3]} instead")
    raise ConfigError(f"unknown arch {arch!r}: use one of {valid}")


def load_torchvision(name: str, weights: str | Path = "", device: str | torch.device = "cpu") -> nn.Module:
    """torchvision's ``name`` (alexnet, vgg11/13/16/19) in eval mode, 1000 ImageNet outputs.

    ``weights``: a file holding its ``state_dict`` (as saved by ``torch.save(model.state_dict(),
    path)``, or a dict with a ``"state_dict"`` entry); ``""`` takes torchvision's default ImageNet
    weights (downloaded once when online). Loaded with ``weights_only=True``: no code runs from the file.
    """
    import torchvision

    parse_arch(f"torchvision:{name}")
    builder = getattr(torchvision.models, name)
    if not weights:
        try:
            model = builder(weights="DEFAULT")
        except Exception as exc:  # no network, no cached file, broken download
            raise CheckpointError(f"torchvision's default {name} weights could not be loaded ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:120] if str(exc) else ''}): download them once "
                                  f"online, or pass weights=PATH (a saved {name} state_dict)") from None
        return model.eval().to(device)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist: pass the path of a saved torchvision {name} "
                              "state_dict (torch.save(model.state_dict(), path))")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights file {path} ({type(exc).__name__}): it is corrupt or not a "
                              f"torch file; save one with torch.save(torchvision.models.{name}().state_dict(), path)"
                              ) from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} holds no state_dict: save one with "
                              f"torch.save(model.state_dict(), path)")
    model = builder(weights=None)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        what = "; ".join(s for s in (
            f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}" if extra else "",
            f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, {name} needs {tuple(own[wrong[0]].shape)}" if wrong else "",
        ) if s)
        raise CheckpointError(f"weights file {path} does not fit torchvision {name} ({what}): pass the state_dict "
                              f"of torchvision.models.{name}, or the arch it was saved from")
    model.load_state_dict(state)
    return model.eval().to(device)


def load_model(profile: Any = "default", arch: str = "zfnet", *, weights: str | Path = "",
               data_root: str | Path | None = None, device: str | torch.device = "auto",
               epoch: int | None = None) -> nn.Module:
    """The network a notebook looks into (Figs. 1, 2, 5, 7, 8), in eval mode on ``device``.

    - ``arch="zfnet"`` / ``"alexnet"``, no ``weights``: the profile's finished run
      (:func:`zfrepro.train.load_trained`, which trains it first if needed);
    - the same with ``weights=PATH``: that checkpoint (a zfrepro snapshot or ``save_checkpoint`` file);
    - ``arch="torchvision:NAME"``: :func:`load_torchvision` with ``weights``.
    """
    from .devices import resolve_device

    source, name = parse_arch(arch)
    dev = resolve_device(device)
    if source == "torchvision":
        return load_torchvision(name, weights, dev)
    if weights:
        from .models import load_checkpoint

        model = load_checkpoint(weights)
        kind = str(getattr(model, "arch", type(model).__name__))
        if kind != name:
            raise CheckpointError(f"checkpoint {weights} holds a {kind} network, not {name}: "
                                  f"pass arch={kind} or another file")
        check_outputs(model, weights, data_root)
        return model.eval().to(dev)
    from .train import load_trained

    return load_trained(profile_of(profile), arch=name, epoch=epoch, data_root=data_root, device=dev)


def _outputs(model: nn.Module) -> int | None:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else None


def check_outputs(model: nn.Module, weights: str | Path, data_root: str | Path | None = None) -> None:
    """A checkpoint of this package's networks must have one output per class of the dataset it is
    shown (``data_root``, else ``$ZFREPRO_DATA``; not checked when neither is set, the default being
    Imagenette's download): P(true class) of a 1000-way softmax on a 10-class dataset would mean
    nothing. A mismatch is a :class:`CheckpointError` naming both counts and the fix."""
    import os

    from .datasets import image_folder, resolve_root

    root = data_root or os.environ.get("ZFREPRO_DATA") or None
    n_out = _outputs(model)
    if root is None or n_out is None:
        return
    try:
        classes = image_folder(resolve_root(root, download=False), "train").classes
    except DataError:
        return  # the data layer reports a broken root where the data are read
    if n_out != len(classes):
        raise CheckpointError(f"checkpoint {weights} has {n_out} outputs but the dataset has {len(classes)} classes "
                              f"({root}): pass a checkpoint trained on this dataset, or arch=torchvision:NAME "
                              "(labels mapped)")


def output_name(profile: str, arch: str = "zfnet", weights: str | Path = "", data_root: str | Path | None = None,
                *, notebook: str | Path | None = None, params: dict[str, Any] | None = None) -> str:
    """The name under which a run's results (``results/<name>/``), figures and executed notebooks
    (``build/<name>/``) are kept: ``profile`` itself only for the canonical run (this package's ZFNet,
    its own trained weights, Imagenette, every parameter of ``notebook`` at its canonical value),
    else ``profile-<arch>[-<weights>][-<data>]`` for another model or dataset, and
    ``profile-<changed parameters>`` when ``params`` (a notebook passes its ``globals()``) differ from
    the canonical ones of ``notebook`` (:func:`zfrepro.reproduce.changed_parameters`: e.g.
    ``default-layer_conv3``; a hash when the values are long), so a rerun never overwrites the
    committed ``default`` results and gallery — from ``zfrepro reproduce`` or from JupyterLab.
    A profile with overrides (``"smoke:epochs=3"``, :func:`profile_of`) is ``smoke-epochs_3``; a
    validation split other than ``val/`` (``ZFREPRO_VAL_SPLIT``) adds ``split_<name>``."""
    parse_arch(arch)
    name, overrides = split_profile(profile)
    if overrides:  # a profile with field overrides trains its own network: apart, named by them
        profile_of(profile)
        parts = [name, _parameters_tag(dict(sorted(overrides.items())))]
    else:
        parts = [profile]
    if arch != "zfnet":
        parts.append(arch.replace("torchvision:", "tv-"))
    if weights:
        parts.append(Path(weights).stem + "-" + hashlib.sha1(str(Path(weights).expanduser().resolve()).encode())
                     .hexdigest()[:6])
    from .datasets import data_tag

    tag = data_tag(data_root or None)  # "" for Imagenette wherever it lies
    if tag:
        parts.append(tag.lstrip("-"))
    from .datasets import val_split

    if val_split() != "val":  # another folder is the validation split (--val-split): another dataset
        parts.append(f"split_{val_split()}")
    if notebook is not None and len(parts) == 1:  # a rerun on another model or dataset is apart already
        from .reproduce import changed_parameters

        changed = changed_parameters(notebook, dict(params or {}))
        if changed:
            parts.append(_parameters_tag(changed))
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def _parameters_tag(changed: dict[str, Any]) -> str:
    """``layer_conv3`` / ``device_cpu-k_3`` for short plain values, else ``set<8 hex digits>``."""
    import json

    plain = all(re.fullmatch(r"[A-Za-z0-9.]+|-?[0-9.]+", str(v)) for v in changed.values())
    text = "-".join(f"{k}_{v}" for k, v in changed.items())
    if plain and len(text) <= 40:
        return text
    return "set" + hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
