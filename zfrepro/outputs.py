"""Where a notebook's results, figures and executed copy go: output names, so that a rerun on another
model, dataset, profile or parameter never overwrites the committed ``default`` run.

- :data:`CANONICAL_PARAMETERS` — the parameters (and defaults) of the committed notebooks;
- :func:`changed_parameters` — a notebook's parameters that differ from them;
- :func:`output_name` — ``results/<name>/``, ``build/<name>/``: the profile's own name only for the
  canonical run (this package's ZFNet, its own trained weights, Imagenette, canonical parameters).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from .config import profile_of, split_profile
from .datasets import data_tag, val_split
from .io import project_root
from .models import parse_arch

__all__ = ["CANONICAL_PARAMETERS", "notebook_parameters", "notebook_defaults", "changed_parameters", "output_name"]

#: The parameters (and defaults) of the committed notebooks: the canonical run. A notebook run with any
#: other value writes apart from the committed results and figures (see :func:`changed_parameters`).
#: tests/test_robustness.py checks that every notebook's ``parameters`` cell declares exactly these.
CANONICAL_PARAMETERS: dict[str, dict[str, Any]] = {
    "01_architecture": {"profile": "default", "input_size": 224, "num_classes": 1000, "profile_classes": 10,
                        "data_root": "", "device": "auto", "comparison_epochs": 5, "comparison_eval_crops": 1,
                        "comparison_first_lr_mult": 0.0, "renorm_first_lr_mult": 32.0, "maps_per_layer": 4, "seed": 0},
    "02_deconvnet": {"profile": "default", "data_root": "", "device": "auto", "layer": "conv5", "image_index": 0,
                     "norm": "identity", "arch": "zfnet", "weights": "", "interactive": False},
    "03_feature_visualization": {"profile": "default", "data_root": "", "device": "auto", "maps_per_layer": 6,
                                 "k": 9, "seed": 0, "interactive": False, "arch": "zfnet", "weights": ""},
    "04_training_evolution": {"profile": "default", "data_root": "", "device": "auto", "maps_per_layer": 2,
                              "train_images": 2000, "seed": 0, "interactive": False},
    "05_invariance": {"profile": "default", "data_root": "", "device": "auto", "n_images": 5, "seed": 0,
                      "arch": "zfnet", "weights": ""},
    "06_occlusion": {"profile": "default", "data_root": "", "device": "auto", "layer": "conv5", "n_examples": 3,
                     "occluder": 0, "stride": 0, "others": 4, "sample": 200, "seed": 0, "arch": "zfnet",
                     "weights": "", "interactive": False},
    "07_correspondence": {"profile": "default", "data_root": "", "device": "auto", "annotations": "",
                          "layers": "conv5,fc7", "pooled": True, "n": 5, "draws": 20, "random_per_draw": 5, "seed": 0,
                          "arch": "zfnet", "weights": ""},
    "08_feature_generalization": {"profile": "default", "data_root": "", "caltech_root": "", "device": "auto",
                                  "classes": 0, "folds": 0, "scratch_folds": 0, "scratch_epochs": 0,
                                  "overlap_threshold": 0.99, "seed": 0, "arch": "zfnet", "weights": ""},
    "09_ablations": {"profile": "default", "data_root": "", "device": "auto", "epochs": 0, "seeds": 0,
                     "variants": ""},
}
#: Parameters that are parts of the output name of their own (the profile; the dataset, model and
#: weights by :func:`zfrepro.outputs.output_name`) or change nothing written (widgets shown).
_NAMED_APART = ("profile", "data_root", "arch", "weights")
_DISPLAY_ONLY = ("interactive",)


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names, types and defaults declared in a notebook's ``parameters`` cell."""
    import papermill

    return papermill.inspect_notebook(str(path))


def _literal(text: Any) -> Any:
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """The canonical parameter values of ``notebook`` (a name such as ``"02_deconvnet"`` or a path):
    :data:`CANONICAL_PARAMETERS` for the committed notebooks, else the defaults its ``parameters``
    cell declares (a path, or ``notebooks/<name>.ipynb`` under the project root)."""
    stem = Path(str(notebook)).stem
    if stem in CANONICAL_PARAMETERS:
        return dict(CANONICAL_PARAMETERS[stem])
    path = Path(notebook) if str(notebook).endswith(".ipynb") else project_root() / "notebooks" / f"{stem}.ipynb"
    if not path.is_file():
        return {}
    return {k: _literal(v.get("default")) for k, v in notebook_parameters(path).items()}


def changed_parameters(notebook: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``notebook`` whose value in ``values`` (e.g. the notebook's ``globals()``)
    differs from the canonical one, in name order; the profile, dataset, model and weights (named
    apart by :func:`zfrepro.outputs.output_name`) and display-only switches excluded."""
    out = {}
    for k, default in sorted(notebook_defaults(notebook).items()):
        if k in _NAMED_APART or k in _DISPLAY_ONLY or k not in values:
            continue
        v = values[k]
        if v != default or isinstance(v, bool) != isinstance(default, bool):
            out[k] = v
    return out


def output_name(profile: str, arch: str = "zfnet", weights: str | Path = "", data_root: str | Path | None = None,
                *, notebook: str | Path | None = None, params: dict[str, Any] | None = None) -> str:
    """The name under which a run's results (``results/<name>/``), figures and executed notebooks
    (``build/<name>/``) are kept: ``profile`` itself only for the canonical run (this package's ZFNet,
    its own trained weights, Imagenette, every parameter of ``notebook`` at its canonical value),
    else ``profile-<arch>[-<weights>][-<data>]`` for another model or dataset, and
    ``profile-<changed parameters>`` when ``params`` (a notebook passes its ``globals()``) differ from
    the canonical ones of ``notebook`` (:func:`changed_parameters`: e.g.
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
    tag = data_tag(data_root or None)  # "" for Imagenette wherever it lies
    if tag:
        parts.append(tag.lstrip("-"))
    if val_split() != "val":  # another folder is the validation split (--val-split): another dataset
        parts.append(f"split_{val_split()}")
    if notebook is not None and len(parts) == 1:  # a rerun on another model or dataset is apart already
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
