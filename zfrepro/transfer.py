"""Feature generalisation (§5.2, Tables 4 and 7): Caltech-101 folds, frozen-network features, linear classifiers.

The paper keeps layers 1-7 of its ImageNet network fixed, trains a new softmax on top of them on
Caltech-101 (15 or 30 training images per class, up to 50 test images of each class, mean per-class
accuracy, 5 folds), and compares that with the same network trained from scratch (Table 4); Table 7
puts a linear SVM or a softmax on each layer's features in turn. Notebook 08 runs both through this
module:

- :func:`resolve_caltech_root` finds the data (``caltech_root``, ``$ZFREPRO_CALTECH``, or torchvision's
  ``Caltech101`` download into the cache directory); :func:`caltech_categories` and
  :func:`caltech_splits` draw the folds.
- :func:`decode_caltech` decodes the images once through the package's decode cache
  (:func:`zfrepro.data.decode_split`); :func:`caltech_inputs` preprocesses them the way the
  network was trained (its own training mean, scale and crop).
- :func:`layer_features` reads every layer's rectified output in one forward pass per batch,
  max-pooled over a fixed spatial grid; :func:`evaluate_layers` fits the objectives of
  scikit-learn's ``LinearSVC`` ("SVM") and multinomial ``LogisticRegression`` ("softmax") on
  standardised features (:mod:`zfrepro.linear`) and scores them by mean per-class accuracy over the
  folds.
- :func:`train_from_scratch` trains the same architecture on one fold's training images with the
  package's own :func:`zfrepro.train.train` (the "non-pretrained" row).
- :func:`find_overlap` looks for Caltech images that also appear in the network's training set by
  normalised correlation of small thumbnails, as §5.2 did.

Categories: torchvision's 101 (``BACKGROUND_Google`` left out — it is clutter, not an object class —
as in torchvision's ``Caltech101`` and the usual 101-way protocol); ``Faces`` and ``Faces_easy`` are
both kept, as there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .devices import inference_layout
from .errors import CheckpointError, ConfigError, DataError
from .io import cache_dir
from .layers import LayerStack, classifier_grid, eval_mode, pool_to_grid

__all__ = [
    "CALTECH_FOLDER", "BACKGROUND", "PAPER_TABLE4", "PAPER_TABLE7", "TransferPlan", "TRANSFER_PLANS", "transfer_plan",
    "resolve_caltech_root", "caltech_categories", "caltech_splits", "decode_caltech", "caltech_inputs",
    "feature_layers", "layer_features", "per_class_accuracy", "fit_classifier", "evaluate_layers",
    "pretrained_row", "effective_dimension", "layer_dimensions",
    "scratch_profile", "train_from_scratch", "scratch_row", "thumbnails", "best_matches", "find_overlap", "training_overlap",
    "transfer_claims", "plan_dict", "caltech_inputs_size", "table7_frame", "table4_frame",
]

#: The image folder of Caltech-101 (torchvision's layout: ``<root>/caltech101/101_ObjectCategories/<category>/``).
CALTECH_FOLDER = "101_ObjectCategories"
#: The clutter folder that is not one of the 101 categories.
BACKGROUND = "BACKGROUND_Google"

#: Table 4 (Caltech-101, mean per-class accuracy %, mean ± std over 5 folds), by training images per class.
PAPER_TABLE4: dict[str, dict[int, tuple[float, float]]] = {
    "non-pretrained": {15: (22.8, 1.5), 30: (46.5, 1.7)},
    "pretrained": {15: (83.8, 0.5), 30: (86.5, 0.5)},
}
#: Table 7 (Caltech-101 at 30 per class): (classifier, layer) → (mean, std) %.
PAPER_TABLE7: dict[tuple[str, int], tuple[float, float]] = {
    ("svm", 1): (44.8, 0.7), ("svm", 2): (66.2, 0.5), ("svm", 3): (72.3, 0.4), ("svm", 4): (76.6, 0.4),
    ("svm", 5): (86.2, 0.8), ("svm", 7): (85.5, 0.4), ("softmax", 5): (82.9, 0.4), ("softmax", 7): (85.4, 0.4),
}

_HOW_TO_GET = ("set caltech_root (--set caltech_root=DIR) or $ZFREPRO_CALTECH to the folder that holds "
               "caltech101/101_ObjectCategories, or leave both unset to download it with torchvision")


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TransferPlan:
    """How much of §5.2's protocol a profile runs.

    ``classes`` 0 = all 101 categories; ``train_sizes`` = training images per class (Table 4's
    columns); ``folds`` and ``test_per_class`` as the paper (5, 50); ``scratch_folds`` folds of the
    from-scratch row (each a complete training), ``scratch_epochs`` its epochs at the largest training
    size (smaller sizes train for as many updates, :meth:`scratch_epochs_for`); ``C_svm`` and
    ``C_softmax`` the inverse regularisation strengths (chosen on training folds only, see
    ``benchmarks/transfer_c.py``)."""

    classes: int = 0
    train_sizes: tuple[int, ...] = (15, 30)
    folds: int = 5
    test_per_class: int = 50
    scratch_folds: int = 5
    scratch_epochs: int = 30
    C_svm: float = 0.001
    C_softmax: float = 0.01

    def scratch_epochs_for(self, per_class: int) -> int:
        """Epochs of the from-scratch run at ``per_class`` training images: ``scratch_epochs`` at the largest
        size, more at smaller ones so that every run gets the same number of updates."""
        return max(1, round(self.scratch_epochs * max(self.train_sizes) / per_class))

    @property
    def C(self) -> dict[str, float]:
        """``{"svm": C_svm, "softmax": C_softmax}``, as :func:`evaluate_layers` takes it."""
        return {"svm": self.C_svm, "softmax": self.C_softmax}


TRANSFER_PLANS: dict[str, TransferPlan] = {
    "smoke": TransferPlan(classes=5, train_sizes=(5, 10), folds=2, test_per_class=10, scratch_folds=1,
                          scratch_epochs=1),
    "default": TransferPlan(scratch_folds=1, scratch_epochs=10),
    "paper": TransferPlan(),
}


def plan_dict(plan: TransferPlan) -> dict[str, Any]:
    """A plan as a plain dict (lists for tuples), for results files."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()}


def transfer_plan(profile: str, **overrides: Any) -> TransferPlan:
    """The :class:`TransferPlan` of a profile name with fields overridden (``None`` or 0 values keep the
    plan's own, so notebook parameters can default to 0)."""
    plan = TRANSFER_PLANS.get(profile, TRANSFER_PLANS["default"])
    valid = set(TransferPlan.__dataclass_fields__)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown transfer plan field {', '.join(unknown)}: valid fields are {', '.join(sorted(valid))}")
    clean = {k: (tuple(int(s) for s in v) if k == "train_sizes" else v) for k, v in overrides.items() if v}
    plan = replace(plan, **clean)
    if plan.folds < 1 or plan.test_per_class < 1 or not plan.train_sizes or min(plan.train_sizes) < 1:
        raise ConfigError(f"folds, test_per_class and train_sizes must be positive, got {plan.folds}, "
                          f"{plan.test_per_class}, {plan.train_sizes}")
    return plan


# ----------------------------------------------------------------------------- data


def resolve_caltech_root(root: str | Path | None = None, *, download: bool = True) -> Path:
    """The folder that holds ``101_ObjectCategories/``: from ``root`` (the folder holding ``caltech101/``,
    as torchvision's ``root``, or ``caltech101/`` itself), else ``$ZFREPRO_CALTECH``, else torchvision's
    ``Caltech101`` downloaded (checksums verified) into ``<cache>/caltech``. Nothing is written into a
    given root."""
    given = root if root not in (None, "") else (os.environ.get("ZFREPRO_CALTECH") or None)
    if given is None:
        if not download:
            raise DataError(f"no Caltech-101 root given: {_HOW_TO_GET}")
        base = cache_dir() / "caltech"
        if not (base / "caltech101" / CALTECH_FOLDER).is_dir():
            from torchvision import datasets

            print(f"zfrepro: downloading Caltech-101 (about 130 MB) into {base} ...", file=sys.stderr)
            try:
                datasets.Caltech101(str(base), download=True)
            except (OSError, RuntimeError, ImportError) as exc:
                raise DataError(f"downloading Caltech-101 into {base} failed ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}): check the network and disk space, "
                                f"or {_HOW_TO_GET}") from None
        given = base
    path = Path(given).expanduser()
    for cand in (path / "caltech101", path):
        if (cand / CALTECH_FOLDER).is_dir():
            return cand
    if not path.is_dir():
        raise DataError(f"Caltech-101 root {path} does not exist: {_HOW_TO_GET}")
    raise DataError(f"Caltech-101 root {path} has no {CALTECH_FOLDER}/ (nor caltech101/{CALTECH_FOLDER}/): {_HOW_TO_GET}")


def _images_of(folder: Path) -> list[str]:
    from .datasets import IMG_EXTENSIONS

    return sorted(f.name for f in folder.iterdir()
                  if not f.name.startswith(".") and f.suffix.lower() in IMG_EXTENSIONS and f.is_file())


def caltech_categories(root: str | Path | None = None, classes: int = 0) -> list[str]:
    """The sorted object categories (torchvision's 101: ``BACKGROUND_Google`` left out); ``classes`` > 0
    keeps the first that many. An empty category is a :class:`DataError`."""
    base = resolve_caltech_root(root) / CALTECH_FOLDER
    cats = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != BACKGROUND)
    if not cats:
        raise DataError(f"{base} has no category folders: it should hold one folder per category")
    if classes < 0 or classes > len(cats):
        raise ConfigError(f"classes={classes}: {base} has {len(cats)} categories; use 0 (all) up to {len(cats)}")
    cats = cats[:classes] if classes else cats
    for c in cats:
        if not _images_of(base / c):
            raise DataError(f"category folder {base / c} has no images: add its images or remove the folder")
    return cats


def caltech_splits(root: str | Path | None, per_class: int, folds: int = 5, test_per_class: int = 50, seed: int = 0,
                   *, categories: Sequence[str] | None = None,
                   exclude: Collection[str] = ()) -> list[tuple[list[str], list[str]]]:
    """§5.2's folds: for each of ``folds`` independent draws (seeded by ``seed`` and the fold number),
    exactly ``per_class`` training images of every category and up to ``test_per_class`` test images
    of the rest, train and test disjoint. Paths are relative to ``101_ObjectCategories/``
    (``"accordion/image_0001.jpg"``), sorted within each list. ``categories`` defaults to
    :func:`caltech_categories`; images in ``exclude`` (relative paths: near-duplicates of the network's
    training images, :func:`find_overlap`) never enter a test set. A category with fewer than
    ``per_class + 1`` images is a :class:`ConfigError` naming it (Table 4's largest size, 30, fits
    every category: the smallest has 31)."""
    if per_class < 1 or folds < 1 or test_per_class < 1:
        raise ConfigError(f"per_class, folds and test_per_class must be positive, got {per_class}, {folds}, {test_per_class}")
    base = resolve_caltech_root(root) / CALTECH_FOLDER
    cats = list(categories) if categories is not None else caltech_categories(base.parent)
    files = {}
    for c in cats:
        if not (base / c).is_dir():
            raise DataError(f"{base} has no category {c!r}: use categories from caltech_categories()")
        files[c] = [f"{c}/{n}" for n in _images_of(base / c)]
        if not files[c]:
            raise DataError(f"category folder {base / c} has no images: add its images or remove the folder")
    small = [(c, len(v)) for c, v in files.items() if len(v) <= per_class]
    if small:
        c, n = min(small, key=lambda t: t[1])
        raise ConfigError(f"per_class={per_class} leaves no test image in category {c!r} ({n} images"
                          f"{f' and {len(small) - 1} more categories' if len(small) > 1 else ''}): "
                          f"use per_class <= {n - 1}")
    excluded = set(exclude)
    out = []
    for fold in range(folds):
        rng = np.random.default_rng([int(seed), fold])
        train, test = [], []
        for c in cats:
            order = [files[c][i] for i in rng.permutation(len(files[c]))]
            train += order[:per_class]
            test += [p for p in order[per_class:] if p not in excluded][:test_per_class]
        out.append((sorted(train), sorted(test)))
    return out


def decode_caltech(root: str | Path | None, size: int, categories: Sequence[str] | None = None, *,
                   progress: bool = True) -> "Any":
    """Every image of ``categories`` decoded once at ``size`` (shorter side resized, centre square crop)
    through the package's decode cache; labels are indices into ``categories``. Greyscale images
    become RGB. Returns a :class:`zfrepro.data.DecodedSplit` whose ``paths`` are relative to
    ``101_ObjectCategories/``."""
    from .data import ImageFolderDataset, decode_split

    base = resolve_caltech_root(root)
    cats = list(categories) if categories is not None else caltech_categories(base)
    samples = [(str(base / CALTECH_FOLDER / c / n), label) for label, c in enumerate(cats)
               for n in _images_of(base / CALTECH_FOLDER / c)]
    return decode_split(ImageFolderDataset(base, CALTECH_FOLDER, samples, cats), size, progress=progress)


def caltech_inputs_size(profile: Any, arch: str = "zfnet") -> int:
    """The side at which Caltech images are decoded for ``arch`` under ``profile`` (its ``resize``)."""
    from .config import get_profile
    from .data import input_spec

    return input_spec(get_profile(profile) if isinstance(profile, str) else profile, arch).resize


def caltech_inputs(decoded: "Any", profile: Any, arch: str = "zfnet", data_root: str | Path | None = None, *,
                   progress: bool = True) -> "Any":
    """Caltech images as the network expects its inputs (:class:`zfrepro.data.ModelInputs`): for this
    package's networks the per-pixel mean of *their* training split (Imagenette's), ``pixel_scale``
    and the centre crop; for torchvision's models ImageNet's per-channel constants."""
    from .config import get_profile
    from .data import ModelInputs, training_mean
    from .data import input_spec

    prof = get_profile(profile) if isinstance(profile, str) else profile
    spec = input_spec(prof, arch)
    if decoded.size != spec.resize:
        raise ConfigError(f"the Caltech images are decoded at {decoded.size} px but {arch} expects {spec.resize}: "
                          f"decode them with decode_caltech(root, {spec.resize})")
    if spec.mean is None:
        mean, scale = training_mean(prof, data_root, progress=progress), prof.pixel_scale
    else:
        mean, scale = spec.channel_constants(spec.resize)
    return ModelInputs(decoded, mean, scale, spec.input_size, output_names=decoded.classes)


# ----------------------------------------------------------------------------- features


def feature_layers(model: nn.Module) -> list[str]:
    """The layers whose features Table 7 reads: every layer but the classifier (``conv1…conv5, fc6, fc7``)."""
    return LayerStack(model).names[:-1]


def layer_features(model: nn.Module, inputs: Any, layers: Sequence[str] | None = None, *, grid: int = 0,
                   batch_size: int = 64, progress: bool = True) -> dict[str, torch.Tensor]:
    """Table 7's features of every image of ``inputs`` (a :class:`~zfrepro.data.ModelInputs`): for each
    layer its *rectified* output (§5.2), a conv layer's max-pooled over a ``grid``×``grid`` grid of
    equal cells (``0``: the grid of the map that fc6 reads, so every layer is read at the spatial
    resolution of the layer-5 feature the paper feeds to its classifier; at that grid conv5's pooled
    feature is exactly pool5's output), flattened. One forward per batch serves every layer and
    stops after the deepest; eval mode, no gradients, on the model's device. Returns float32 N×D
    tensors on the CPU, in the order of ``inputs``."""
    stack = LayerStack(model)
    layers = stack.check(layers) if layers is not None else feature_layers(model)
    if len(inputs) == 0:
        raise ConfigError("layer_features got no images: give at least one")
    dev = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(inputs), desc="features", unit="img", disable=not progress, file=sys.stderr, mininterval=1.0)
    try:
        with eval_mode(model):
            first = inputs.batch([0]).to(dev)
            g = grid or classifier_grid(model, first)
            with stack.capture(layers, stop=True) as store, torch.no_grad():
                for s in range(0, len(inputs), batch_size):
                    x = inference_layout(inputs.batch(range(s, min(s + batch_size, len(inputs)))).to(dev))
                    store(x)
                    for n in layers:
                        out[n].append(pool_to_grid(store[n], g).float().cpu())
                    bar.update(x.shape[0])
    finally:
        bar.close()
    return {n: torch.cat(v) for n, v in out.items()}


# ----------------------------------------------------------------------------- classifiers


def per_class_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Mean per-class accuracy (the paper's measure, §5.2): the mean over classes present in ``y_true``
    of the share of that class's images classified correctly."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.size == 0:
        raise ConfigError("per_class_accuracy got no test images")
    return float(np.mean([(p[t == c] == c).mean() for c in np.unique(t)]))


def fit_classifier(kind: str, x: np.ndarray, y: np.ndarray, C: float) -> Any:
    """Table 7's classifier ``kind`` fitted on ``(x, y)``: per-feature standardisation, then the objective
    of scikit-learn's ``LinearSVC`` (``kind="svm"``, one-vs-rest, squared hinge) or multinomial
    ``LogisticRegression`` (``kind="softmax"``) with inverse regularisation ``C``, solved to its unique
    minimiser by :func:`zfrepro.linear.fit_linear_classifier`."""
    from .linear import fit_linear_classifier

    return fit_linear_classifier(kind, x, y, C)


def _score(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           C: float) -> float:
    clf = fit_classifier(kind, x_train, y_train, C)
    return 100.0 * per_class_accuracy(y_test, clf.predict(x_test))


def evaluate_layers(features: dict[str, torch.Tensor], labels: Sequence[int] | torch.Tensor, paths: Sequence[str],
                    splits: Sequence[tuple[list[str], list[str]]], kinds: Sequence[str] = ("svm", "softmax"),
                    C: dict[str, float] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Mean per-class accuracy (%) of each classifier kind on each layer's features, per fold (Table 7;
    Table 4's pretrained row is the softmax on layer 7).

    ``features[layer]`` has one row per image of ``paths`` (relative paths, the decode order), labelled
    ``labels``; each split is a fold's ``(train paths, test paths)``. The fits run one after another,
    each on every core (:func:`fit_classifier`). Returns one
    row per (kind, layer): ``{"kind", "layer", "folds": [acc, ...], "mean", "std"}`` (std over folds, ddof 0)."""
    index = {p: i for i, p in enumerate(paths)}
    y = np.asarray(labels)
    C = {**TRANSFER_PLANS["default"].C, **(C or {})}
    folds = [(np.array([index[p] for p in tr]), np.array([index[p] for p in te])) for tr, te in splits]
    jobs = [(kind, layer, f) for kind in kinds for layer in features for f in range(len(folds))]
    arrays = {layer: feat.numpy() for layer, feat in features.items()}
    t0 = time.monotonic()
    scores = [_score(kind, arrays[layer][folds[f][0]], y[folds[f][0]], arrays[layer][folds[f][1]], y[folds[f][1]],
                     C[kind]) for kind, layer, f in jobs]
    acc: dict[tuple[str, str], list[float]] = {}
    for (kind, layer, _), a in zip(jobs, scores):
        acc.setdefault((kind, layer), []).append(float(a))
    rows = [{"kind": k, "layer": n, "folds": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
            for (k, n), v in acc.items()]
    if progress:
        print(f"{len(jobs)} fits in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    return rows


def pretrained_row(features: dict[str, torch.Tensor], labels: Sequence[int] | torch.Tensor, paths: Sequence[str],
                   splits: dict[int, Sequence[tuple[list[str], list[str]]]], layer: str,
                   C: dict[str, float] | None = None, *, scored: dict[int, Sequence[dict[str, Any]]] | None = None,
                   progress: bool = True) -> dict[int, dict[str, Any]]:
    """Table 4's "pretrained" row: the softmax on ``layer``'s frozen features at each training size of
    ``splits`` (a row of :func:`evaluate_layers`). Where ``scored[n]`` — Table 7's rows, fitted on the
    same folds ``splits[n]`` — already holds the softmax on ``layer``, that row is used as it is instead
    of fitting the same classifiers twice."""
    if layer not in features:
        raise ConfigError(f"no features for layer {layer!r}: the features hold {', '.join(features)}")
    out: dict[int, dict[str, Any]] = {}
    for n, sp in splits.items():
        known = [r for r in (scored or {}).get(n, ()) if r["kind"] == "softmax" and r["layer"] == layer]
        out[n] = known[0] if known else evaluate_layers({layer: features[layer]}, labels, paths, sp,
                                                        kinds=("softmax",), C=C, progress=progress)[0]
    return out


def effective_dimension(x: np.ndarray | torch.Tensor) -> float:
    """How many independent directions the rows of ``x`` (N×D features) spread over, as a linear
    classifier sees them (printed under Table 7 by notebook 08): the participation ratio
    ``(Σλ)² / Σλ²`` of the eigenvalues λ of the covariance of the standardised features (each column
    scaled as :func:`zfrepro.linear.standardise` does; constant columns add nothing). ``k`` equally
    strong independent directions give ``k``, whatever ``D`` is; one direction gives 1."""
    from .linear import standardise

    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    if xt.dim() != 2 or xt.shape[0] < 2 or xt.shape[1] < 1:
        raise ConfigError(f"effective_dimension needs an N×D array with N ≥ 2 rows, got shape {tuple(xt.shape)}")
    mean, scale = standardise(xt)
    z = (xt - mean) / scale
    # the nonzero eigenvalues of the D×D covariance are those of the N×N Gram matrix: use the smaller one
    g = z.T @ z if z.shape[1] <= z.shape[0] else z @ z.T
    lam = torch.linalg.eigvalsh(g).clamp(min=0)
    total = float(lam.sum())
    if total == 0.0:
        return 0.0
    return total ** 2 / float((lam ** 2).sum())


def layer_dimensions(features: dict[str, torch.Tensor], rows: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
    """:func:`effective_dimension` of each layer's features (``rows``: a subset of images, e.g. one
    fold's training images; ``None``: all), in the order of ``features``."""
    idx = None if rows is None else torch.as_tensor(np.asarray(rows), dtype=torch.long)
    return {n: round(effective_dimension(f if idx is None else f[idx]), 2) for n, f in features.items()}


def table7_frame(rows: Sequence[dict[str, Any]], per_class: int) -> "Any":
    """Table 7 as a DataFrame: our mean ± std per classifier and layer beside the paper's (layers numbered
    1… in the rows' order: conv1…conv5 = 1…5, fc6 = 6, fc7 = 7)."""
    import pandas as pd

    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for i, r in enumerate([r for r in rows if r["kind"] == kind], start=1):
            paper = PAPER_TABLE7.get((kind, i)) if per_class == 30 else None
            out.append({"classifier": f"{kind} ({i})", "layer": r["layer"],
                        "paper %": f"{paper[0]:.1f} ± {paper[1]:.1f}" if paper else "–",
                        f"ours % ({per_class}/class)": f"{r['mean']:.1f} ± {r['std']:.1f}"})
    return pd.DataFrame(out)


def table4_frame(table4: dict[str, dict[int, dict[str, Any]]]) -> "Any":
    """Table 4 as a DataFrame: rows non-pretrained / pretrained, a column per training size, ours beside the paper's."""
    import pandas as pd

    out = []
    for row in ("non-pretrained", "pretrained"):
        d: dict[str, Any] = {"method": row}
        for n, v in sorted(table4.get(row, {}).items()):
            paper = PAPER_TABLE4[row].get(int(n))
            d[f"paper {n}/class"] = f"{paper[0]:.1f} ± {paper[1]:.1f}" if paper else "–"
            d[f"ours {n}/class"] = f"{v['mean']:.1f} ± {v['std']:.1f} ({len(v['folds'])} folds)"
        out.append(d)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- from scratch


#: Test images per class that a from-scratch run validates on after each epoch (the score uses them all).
_MONITOR_PER_CLASS = 5


def scratch_profile(base: Any, epochs: int) -> Any:
    """The "non-pretrained" row's profile: ``base`` (a name or Profile: the network whose features are
    transferred), trained from scratch on a Caltech fold for ``epochs`` with every image of the fold,
    a centre-crop validation and its deviations listed."""
    from .config import get_profile

    prof = get_profile(base) if isinstance(base, str) else base
    if epochs < 1:
        raise ConfigError(f"scratch epochs must be positive, got {epochs}")
    return replace(prof, name=f"{prof.name}-caltech-scratch", epochs=int(epochs), train_per_class=0,
                   val_per_class=_MONITOR_PER_CLASS, snapshot_epochs=(int(epochs),), eval_crops=1,
                   deviations=tuple(prof.deviations) + (
                       f"from scratch on one Caltech-101 training fold for {epochs} epochs (same architecture, "
                       "recipe and augmentation as the pretrained network); the per-epoch validation watches "
                       f"{_MONITOR_PER_CLASS} test images per class, the final score all of the fold's test images",))


def _fold_root(root: Path, cats: Sequence[str], train: Sequence[str], test: Sequence[str]) -> Path:
    """An ImageFolder (``train/``, ``val/``) of symbolic links to one fold's images, in the cache
    directory (the Caltech root itself is never written), named by the fold's content."""
    key = hashlib.sha1(json.dumps([str(root.resolve()), list(cats), sorted(train), sorted(test)]).encode()).hexdigest()[:12]
    out = cache_dir() / "caltech-folds" / key
    done = out / ".complete"
    if done.is_file():
        return out
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=out.parent))
    for split, rel in (("train", train), ("val", test)):
        for c in cats:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        for p in rel:
            os.symlink(root / CALTECH_FOLDER / p, tmp / split / p)
    (tmp / ".complete").write_text("")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def train_from_scratch(root: str | Path | None, split: tuple[list[str], list[str]], profile: Any, epochs: int, *,
                       categories: Sequence[str] | None = None, arch: str = "zfnet", device: str = "auto",
                       progress: bool = True) -> dict[str, Any]:
    """Table 4's "non-pretrained" row for one fold: ``arch`` under :func:`scratch_profile` trained with
    :func:`zfrepro.train.train` on the fold's training images only, then its mean per-class accuracy
    (%) on the fold's test images (centre crop). Resumable like any run; the run lives in
    ``runs/<profile>-caltech-scratch/<fold key>``."""
    from . import io as _io
    from .data import load_split
    from .models import load_checkpoint
    from .runs import RunBusyError, list_snapshots
    from .train import train

    base = resolve_caltech_root(root)
    cats = list(categories) if categories is not None else caltech_categories(base)
    prof = scratch_profile(profile, epochs)
    fold = _fold_root(base, cats, *split)
    out_dir = _io.runs_dir() / prof.name / f"{arch}-{fold.name}"
    while True:
        try:
            run = train(prof, arch=arch, data_root=fold, device=device, progress=progress, out_dir=out_dir)
            break
        except RunBusyError:  # the same fold is being trained elsewhere: wait for it, then reuse it
            if progress:
                print(f"zfrepro: {out_dir} is being trained by another process; waiting for it", file=sys.stderr)
            time.sleep(15)
    model = load_checkpoint(list_snapshots(run)[prof.epochs]).eval()
    test = load_split(replace(prof, val_per_class=0), "val", fold, progress=progress)
    preds = []
    with torch.no_grad():
        for s in range(0, len(test), 128):
            preds.append(model(test.batch(range(s, min(s + 128, len(test))))).argmax(1))
    acc = 100.0 * per_class_accuracy(test.labels.numpy(), torch.cat(preds).numpy())
    return {"accuracy": acc, "run": str(run), "train_images": len(split[0]), "test_images": len(test)}


def scratch_row(root: str | Path | None, splits: Sequence[tuple[list[str], list[str]]], profile: Any, epochs: int, *,
                categories: Sequence[str] | None = None, arch: str = "zfnet", device: str = "auto",
                progress: bool = True) -> dict[str, Any]:
    """Table 4's "non-pretrained" cell: :func:`train_from_scratch` on each fold of ``splits``;
    ``{"folds": [acc, ...], "mean", "std", "runs"}``."""
    if not splits:
        raise ConfigError("scratch_row needs at least one fold: set scratch_folds >= 1")
    res = [train_from_scratch(root, sp, profile, epochs, categories=categories, arch=arch, device=device,
                              progress=progress) for sp in splits]
    accs = [r["accuracy"] for r in res]
    return {"folds": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)), "epochs": int(epochs),
            "runs": [r["run"] for r in res]}


# ----------------------------------------------------------------------------- overlap


def thumbnails(images: torch.Tensor, side: int = 32, chunk: int = 1024) -> torch.Tensor:
    """N×3×S×S uint8 images → N×(side²) greyscale thumbnails (area-averaged), each centred and scaled to
    unit norm, so that a dot product of two is their normalised correlation."""
    out = []
    for s in range(0, images.shape[0], chunk):
        x = images[s:s + chunk].float().mean(1, keepdim=True)
        t = F.adaptive_avg_pool2d(x, side).flatten(1)
        t = t - t.mean(1, keepdim=True)
        out.append(t / t.norm(dim=1, keepdim=True).clamp_min(1e-6))
    return torch.cat(out)


def best_matches(a: torch.Tensor, b: torch.Tensor, side: int = 32, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image of ``a`` (N×3×S×S uint8) its best match in ``b``: ``(r, j)``, the normalised
    correlation of ``side``×``side`` greyscale thumbnails (a horizontal flip of ``b`` allowed) and the index."""
    ta = thumbnails(a, side)
    best = torch.full((ta.shape[0],), -2.0)
    arg = torch.zeros(ta.shape[0], dtype=torch.long)
    for s in range(0, b.shape[0], chunk):
        part = b[s:s + chunk]
        r = torch.maximum(ta @ thumbnails(part, side).T, ta @ thumbnails(part.flip(-1), side).T)
        v, j = r.max(1)
        better = v > best
        best = torch.where(better, v, best)
        arg = torch.where(better, j + s, arg)
    return best, arg


def find_overlap(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.99, side: int = 32) -> list[tuple[int, int, float]]:
    """Near-duplicates between two image sets (e.g. Caltech-101 and the network's training split), as
    §5.2 found the Caltech/ImageNet overlap by normalised correlation (:func:`best_matches`): ``(i, j, r)``
    for every image ``i`` of ``a`` whose best match ``j`` in ``b`` reaches ``threshold``, by ``r`` descending.
    The default 0.99 at 32×32: a resized, recompressed copy correlates above it, while the most similar
    distinct photographs of Caltech-101 and Imagenette (a sail against sky and sea beside a parachute
    against sky and field) reach 0.95 — see notebook 08's overlap cell."""
    best, arg = best_matches(a, b, side)
    hits = [(int(i), int(arg[i]), float(best[i])) for i in torch.nonzero(best >= threshold).flatten()]
    return sorted(hits, key=lambda t: -t[2])


def training_overlap(caltech: "Any", profile: Any, arch: str = "zfnet", data_root: str | Path | None = None, *,
                     threshold: float = 0.99, progress: bool = True) -> dict[str, Any]:
    """§5.2's overlap check against the network's training split (for this package's networks the
    profile's; for torchvision's ImageNet models the data root's train split, a part of ImageNet's):
    ``{"compared", "threshold", "count", "max_correlation", "excluded": [Caltech paths], "pairs": [(caltech
    path, training path, r), ...]}``."""
    from .config import get_profile
    from .data import decode_split, image_folder, resolve_root

    prof = get_profile(profile) if isinstance(profile, str) else profile
    train = image_folder(resolve_root(data_root), "train").subset_per_class(prof.train_per_class)
    decoded = decode_split(train, caltech.size, progress=progress)
    best, arg = best_matches(caltech.images, decoded.images)
    hits = sorted((int(i) for i in torch.nonzero(best >= threshold).flatten()), key=lambda i: -float(best[i]))
    pairs = [(caltech.paths[i], decoded.paths[int(arg[i])], round(float(best[i]), 4)) for i in hits]
    return {"compared": len(decoded), "threshold": threshold, "count": len(hits),
            "max_correlation": round(float(best.max()), 4),
            "excluded": sorted({p for p, _, _ in pairs}), "pairs": pairs}


# ----------------------------------------------------------------------------- claims


def transfer_claims(table7: Sequence[dict[str, Any]], table4: dict[Any, dict[Any, dict[str, float]]]) -> list[Any]:
    """The paper's §5.2 claims, checked on our numbers, as :class:`~zfrepro.claims.Claim` records:

    - Table 7, "features get better with depth": for each classifier, accuracy rises from layer 1 to
      layer 5 and the best layer is layer 5 or above (SVM(5) 86.2 and SVM(7) 85.5 in the paper);
    - Table 4, "pretrained ≫ from scratch": at every training size the pretrained row beats the
      non-pretrained one by more than the sum of their fold spreads (2 std)."""
    from .claims import Claim

    claims: list[Claim] = []
    for kind in sorted({r["kind"] for r in table7}):
        rows = [r for r in table7 if r["kind"] == kind]
        means = [r["mean"] for r in rows]
        conv = [r["mean"] for r in rows if r["layer"].startswith("conv")]
        best = rows[int(np.argmax(means))]["layer"]
        later = [r["layer"] for r in rows][min(4, len(rows) - 1):]
        paper = " → ".join(f"{PAPER_TABLE7[(kind, i)][0]:.1f}" for i in range(1, 8) if (kind, i) in PAPER_TABLE7)
        claims.append(Claim("Table 7", f"{kind}: accuracy rises with depth up to layer 5 or 7",
                            f"layers {', '.join(str(i) for i in range(1, 8) if (kind, i) in PAPER_TABLE7)}: {paper}",
                            {r["layer"]: round(float(r["mean"]), 1) for r in rows},
                            bool(len(conv) >= 2 and all(b > a for a, b in zip(conv, conv[1:])) and best in later)))
    pre = {int(k): v for k, v in table4.get("pretrained", {}).items()}
    scratch = {int(k): v for k, v in table4.get("non-pretrained", {}).items()}
    for n in sorted(set(pre) & set(scratch)):
        p, s = pre[n], scratch[n]
        paper = (PAPER_TABLE4["pretrained"][n][0], PAPER_TABLE4["non-pretrained"][n][0]) if n in PAPER_TABLE4["pretrained"] else None
        claims.append(Claim("Table 4", f"{n}/class: pretrained beats from scratch by more than 2 std", paper,
                            (round(float(p["mean"]), 1), round(float(s["mean"]), 1)),
                            bool(p["mean"] - s["mean"] > 2 * (p.get("std", 0.0) + s.get("std", 0.0)))))
    return claims
