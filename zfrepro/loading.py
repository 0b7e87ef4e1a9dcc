"""Loading the network a notebook looks into (Figs. 1, 2, 5, 7, 8): this package's trained ZFNet / AlexNet,
a checkpoint file, or torchvision's AlexNet / VGG with weights the user supplies.

Every notebook that looks into a trained network (02, 03, 05, 06, 07) takes ``arch`` and ``weights``
parameters, so that ``zfrepro reproduce --set arch=torchvision:alexnet --set weights=alexnet.pth``
repeats Figs. 1, 2, 5, 7, 8 on an ImageNet-trained network:

- :func:`load_model` — the network: a finished run of the profile (training it if needed), a
  checkpoint file, or a torchvision model with the state dict in ``weights`` (``""``: torchvision's
  own ImageNet weights, downloaded when online);
- :func:`check_outputs` — a checkpoint must have one output per class of the dataset it is shown.

The names of architectures are :func:`zfrepro.models.parse_arch`; what a model expects of its inputs is
:func:`zfrepro.data.input_spec`; where a rerun writes is :func:`zfrepro.outputs.output_name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import profile_of
from .errors import CheckpointError, DataError
from .models import TORCHVISION_ARCHS, parse_arch

__all__ = ["load_torchvision", "load_model", "check_outputs"]


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
