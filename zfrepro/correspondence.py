"""Correspondence analysis (Fig. 8, Table 1, §4.3): does masking the same object part change the
representation in the same way across images?

The paper masks the right eye, the left eye and the nose of 5 frontal dog images (and, as a control,
squares at random positions), takes ε_i^l = x_i^l − x̃_i^l (features of the original minus those of
the masked image at layer l) and reports Δ_l = Σ_{i≠j} H(sign ε_i^l, sign ε_j^l). Lower Δ = the
masking changes every image the same way = the network implicitly matches the part across images.

Our annotations (``data/springer_faces.csv``) give eye and nose centres of hand-picked frontal
English springer faces; :func:`correspondence_table` draws 5 of them at a time.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .errors import ConfigError, DataError
from .layers import LayerStack, classifier_grid, eval_mode, pool_to_grid

__all__ = ["PARTS", "FaceAnnotation", "FaceSet", "load_annotations", "prepare_faces", "mask_images",
           "layer_features", "sign_change", "correspondence_table", "PAPER_TABLE1", "MASK_SCALE",
           "correspondence_layers", "faces_for_dataset", "parts_below_random", "part_margins", "PAPER_MARGINS", "table1_claims",
           "table1_view"]

#: The masked parts, in the paper's order. "Right eye" is the dog's right eye (image left in a frontal view).
PARTS = ("right_eye", "left_eye", "nose")
#: Side of a mask as a fraction of the distance between the eyes (the face's scale): squares that cover
#: one eye without touching the other, as in the paper's Fig. 8.
MASK_SCALE = 0.7
#: Table 1 (layer 5, layer 7): mean and ± of Δ, verbatim.
PAPER_TABLE1 = {
    ("right_eye", "layer 5"): (0.067, 0.007), ("right_eye", "layer 7"): (0.069, 0.015),
    ("left_eye", "layer 5"): (0.069, 0.007), ("left_eye", "layer 7"): (0.068, 0.013),
    ("nose", "layer 5"): (0.079, 0.017), ("nose", "layer 7"): (0.069, 0.011),
    ("random", "layer 5"): (0.107, 0.017), ("random", "layer 7"): (0.073, 0.014),
}
_COLUMNS = ("file", "width", "height", "right_eye_x", "right_eye_y", "left_eye_x", "left_eye_y", "nose_x", "nose_y")


@dataclass(frozen=True)
class FaceAnnotation:
    """One annotated face: ``file`` relative to the split root, the image size it was annotated at,
    and the part centres (x, y) in that image's pixels."""

    file: str
    width: int
    height: int
    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    nose: tuple[float, float]
    entry: str = ""  # "path:line", for error messages

    def point(self, part: str) -> tuple[float, float]:
        return getattr(self, part)

    @property
    def eye_distance(self) -> float:
        return math.dist(self.right_eye, self.left_eye)


def default_annotations() -> Path:
    """``data/springer_faces.csv`` of the project."""
    from .io import project_root

    return project_root() / "data" / "springer_faces.csv"


def load_annotations(path: str | Path | None = None) -> list[FaceAnnotation]:
    """Read a face-annotation CSV (columns ``file,width,height,right_eye_x,right_eye_y,left_eye_x,
    left_eye_y,nose_x,nose_y``; ``#`` lines are comments). Every entry is checked: a point outside
    its image, or a mask that would leave it, raises :class:`ConfigError` naming the entry."""
    path = Path(path) if path is not None else default_annotations()
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist: pass the path of a CSV with columns {','.join(_COLUMNS)}")
    out: list[FaceAnnotation] = []
    with open(path, newline="") as fh:
        lines = [(n, ln) for n, ln in enumerate(fh, start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"annotation file {path} has no entries")
    header = [c.strip() for c in next(csv.reader([lines[0][1]]))]
    if tuple(header) != _COLUMNS:
        raise DataError(f"{path}:{lines[0][0]}: header must be {','.join(_COLUMNS)}, got {','.join(header)}")
    for n, ln in lines[1:]:
        row = [c.strip() for c in next(csv.reader([ln]))]
        entry = f"{path.name}:{n} ({row[0] if row else ''})"
        if len(row) != len(_COLUMNS):
            raise ConfigError(f"{entry}: expected {len(_COLUMNS)} fields, got {len(row)}")
        try:
            w, h = int(row[1]), int(row[2])
            v = [float(x) for x in row[3:]]
        except ValueError:
            raise ConfigError(f"{entry}: width/height must be integers and coordinates numbers") from None
        ann = FaceAnnotation(row[0], w, h, (v[0], v[1]), (v[2], v[3]), (v[4], v[5]), entry)
        _check_entry(ann)
        out.append(ann)
    return out


def _check_entry(ann: FaceAnnotation, scale: float = MASK_SCALE) -> None:
    side = min(ann.width, ann.height)
    left, top = (ann.width - side) / 2, (ann.height - side) / 2
    if ann.eye_distance <= 0:
        raise ConfigError(f"{ann.entry}: the two eyes are at the same point; re-annotate the entry")
    half = scale * ann.eye_distance / 2
    for part in PARTS:
        x, y = ann.point(part)
        if not (0 <= x < ann.width and 0 <= y < ann.height):
            raise ConfigError(f"{ann.entry}: {part} ({x:g}, {y:g}) lies outside the {ann.width}×{ann.height} image; "
                              "fix the coordinates (x, y in pixels of the annotated image)")
        if not (left <= x - half and x + half <= left + side and top <= y - half and y + half <= top + side):
            raise ConfigError(f"{ann.entry}: the {part} mask ({2 * half:.0f} px square) leaves the image's central "
                              f"{side}×{side} square; choose a face farther from the border")


@dataclass
class FaceSet:
    """Model-ready annotated faces: ``images`` N×3×S×S (the centred square of each image resized to
    the network's input, mean-subtracted like the validation data), part centres in those pixels
    (``points[part]``: N×2, x/y), and the mask side of each face (``mask_size``: N, pixels)."""

    images: torch.Tensor
    points: dict[str, torch.Tensor]
    mask_size: torch.Tensor
    annotations: list[FaceAnnotation]
    mean: torch.Tensor
    scale: float | torch.Tensor  # per channel (3×1×1) for ImageNet-normalised models

    def __len__(self) -> int:
        return len(self.images)

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs → RGB in [0, 1]."""
        return ((x.detach().cpu() * self.scale + self.mean) / 255.0).clamp(0, 1)


def prepare_faces(annotations: Sequence[FaceAnnotation], profile: Any = "default",
                  data_root: str | Path | None = None, split: str = "val", arch: str = "zfnet") -> FaceSet:
    """Load the annotated images from ``data_root/split`` and make them model inputs of ``profile``
    (the centred square resized to ``input_size``; the per-pixel training mean subtracted, divided
    by ``pixel_scale``) — or of ``arch`` ``"torchvision:NAME"`` (224 px, ImageNet mean/std, see
    :func:`zfrepro.data.input_spec`); the annotations are rescaled to the image as found (a
    copy of the dataset at another resolution works). A missing file raises :class:`DataError`
    naming the entry."""
    import numpy as np
    from PIL import Image

    from .data import center_crop, training_mean
    from .datasets import load_image, resolve_root, split_folder
    from .config import profile_of
    from .data import input_spec

    prof = profile_of(profile)
    if not annotations:
        raise ConfigError("no face annotations given")
    root = resolve_root(data_root)
    split = split_folder(split)
    spec = input_spec(prof, arch)
    s = spec.input_size
    if spec.mean is None:
        mean, scale = center_crop(training_mean(prof, root, progress=False), s), float(prof.pixel_scale)
    else:
        mean, scale = spec.channel_constants(s)
    imgs, pts, sizes = [], {p: [] for p in PARTS}, []
    for ann in annotations:
        path = root / split / ann.file
        if not path.is_file():
            raise DataError(f"{ann.entry}: {path} does not exist; is data_root the right dataset (Imagenette val)?")
        img = load_image(path)
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((s, s), Image.BILINEAR)
        imgs.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()))
        fx, fy = w / ann.width, h / ann.height  # annotated size → size found
        k = s / side
        for part in PARTS:
            x, y = ann.point(part)
            pts[part].append(((x * fx - left) * k, (y * fy - top) * k))
        sizes.append(max(2, round(MASK_SCALE * ann.eye_distance * fx * k)))
    x = (torch.stack(imgs).float() - mean) / scale
    return FaceSet(x, {p: torch.tensor(v) for p, v in pts.items()}, torch.tensor(sizes), list(annotations),
                   mean, scale)


def _how_to_annotate() -> str:
    return ("write a CSV with the columns " + ",".join(_COLUMNS) + " (file relative to the validation split, the "
            "size it was annotated at, the dog's right eye, left eye and nose in its pixels; see data/README.md) and "
            "pass it as the notebook's annotations parameter (zfrepro reproduce --set annotations=PATH)")


def faces_for_dataset(annotations: str | Path | None, profile: Any = "default", data_root: str | Path | None = None,
                      arch: str = "zfnet") -> tuple[FaceSet | None, str]:
    """Notebook 07's faces: ``(FaceSet, "")``, or ``(None, why)`` when the dataset has no annotated faces
    for Fig. 8 / Table 1 — the default annotations (``data/springer_faces.csv``, 12 Imagenette val images)
    given and their images not in this dataset's validation split. ``why`` says what the figure needs and
    how to give it. Annotations passed explicitly (``annotations`` a path) are used as given: a missing
    file or a bad entry is the usual one-line error."""
    from .datasets import resolve_root, split_folder

    if annotations:
        return prepare_faces(load_annotations(annotations), profile, data_root, arch=arch), ""
    anns = load_annotations(None)
    root = resolve_root(data_root)
    split = split_folder("val")
    missing = [a for a in anns if not (root / split / a.file).is_file()]
    if missing:
        why = (f"Fig. 8 and Table 1 need annotated frontal dog faces (eyes and nose) in the dataset's validation "
               f"split; the default annotations ({default_annotations().relative_to(default_annotations().parents[1])}"
               f") are {len(anns)} Imagenette val images, and {len(missing)} of them are not under {root / split} "
               f"(e.g. {missing[0].file}). To run them on this dataset, {_how_to_annotate()}.")
        return None, why
    return prepare_faces(anns, profile, data_root, arch=arch), ""


def correspondence_layers(model: nn.Module, layers: str | Sequence[str] = "conv5,fc7"
                          ) -> tuple[list[str], dict[str, str], list[str]]:
    """The layers Table 1 compares, checked against ``model``: ``layers`` (comma-separated or a list)
    where the model has them; the paper's ``conv5`` (layer 5) and ``fc7`` (layer 7) stand for the model's
    last convolution and its penultimate fully connected layer (the last hidden one) where it has no layer
    of that name (a Table 3 variant without fc7, another network); any other unknown name is a
    :class:`ConfigError` listing the valid ones. Returns ``(layers, paper_layers, notes)``:
    ``paper_layers`` maps each stand-in to the paper's name (for :func:`correspondence_table`), ``notes``
    say what stands for what."""
    stack = LayerStack(model)
    names = stack.names
    wanted = [n.strip() for n in (layers.split(",") if isinstance(layers, str) else layers) if str(n).strip()]
    if not wanted:
        raise ConfigError(f"layers is empty: give comma-separated layer names, e.g. conv5,fc7 (valid: {', '.join(names)})")
    fcs = [n for n in names if n.startswith("fc")]
    convs = [n for n in names if n.startswith("conv")]
    stand_in = {"conv5": convs[-1] if convs else None, "fc7": fcs[-2] if len(fcs) >= 2 else None}
    out, alias, notes = [], {}, []
    for n in wanted:
        if n in names:
            out.append(n)
        elif stand_in.get(n):
            out.append(stand_in[n])
            alias[stand_in[n]] = n
            what = "last convolution" if n == "conv5" else "penultimate fully connected layer"
            notes.append(f"{n} is not a layer of this network: its {what}, {stand_in[n]}, stands for the paper's "
                         f"layer {n[-1]}")
        else:
            raise stack.unknown(n)
    return list(dict.fromkeys(out)), alias, notes


def mask_images(images: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Copies of ``images`` (N×C×H×W) with a ``sizes[i]``-pixel square centred on ``centres[i]``
    (x, y) set to ``fill`` (0: the dataset mean for model inputs). A square leaving its image
    raises :class:`ConfigError` naming the image index. Fig. 8's masked columns."""
    out = images.clone()
    n, _, h, w = images.shape
    for i in range(n):
        s = int(sizes[i])
        x0 = int(round(float(centres[i][0]) - s / 2))
        y0 = int(round(float(centres[i][1]) - s / 2))
        if x0 < 0 or y0 < 0 or x0 + s > w or y0 + s > h:
            raise ConfigError(f"image {i}: a {s}-px mask at ({float(centres[i][0]):.0f}, {float(centres[i][1]):.0f}) "
                              f"leaves the {w}×{h} image")
        out[i, :, y0:y0 + s, x0:x0 + s] = fill
    return out


def layer_features(model: nn.Module, images: torch.Tensor, layers: Sequence[str], batch_size: int = 64,
                   grid: int | None = None) -> dict[str, torch.Tensor]:
    """Each layer's rectified output, flattened: ``{layer: N×d}`` (the paper's x_i^l). ``grid=None`` keeps
    a conv layer's whole map; an integer max-pools it over a ``grid``×``grid`` grid first
    (:func:`~zfrepro.layers.pool_to_grid`), ``0`` at the grid fc6 reads (:func:`~zfrepro.layers.classifier_grid`),
    where conv5's feature is pool5's output, the paper's layer-5 vector."""
    stack = LayerStack(model)
    layers = stack.check(layers)
    if grid is not None and grid < 0:
        raise ConfigError(f"grid must be None (whole maps), 0 (the grid fc6 reads) or a positive side, got {grid}")
    dev = next(model.parameters()).device
    got: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with stack.capture(layers) as feats, eval_mode(model), torch.no_grad():
        g = classifier_grid(model, images[:1].to(dev)) if grid == 0 else grid
        for s in range(0, len(images), batch_size):
            feats(images[s:s + batch_size].to(dev))
            for n in layers:
                a = feats[n].detach()
                got[n].append((a.flatten(1) if g is None else pool_to_grid(a, g)).cpu())
    return {n: torch.cat(v) for n, v in got.items()}


def sign_change(eps: torch.Tensor) -> float:
    """The paper's Δ for one layer, normalised: ``eps`` holds ε_i = x_i − x̃_i (feature vector of
    image i minus that of its occluded version), one row per image (n×d). Returns the mean over
    ordered pairs i ≠ j of the fraction of the d coordinates whose signs differ (a normalised
    Hamming distance; Table 1's values are below 1, so the paper normalised H). Lower = the
    occlusion changes every image the same way = tighter correspondence."""
    if eps.dim() != 2 or eps.shape[0] < 2:
        raise ConfigError(f"sign_change needs an n×d tensor with n >= 2 images, got shape {tuple(eps.shape)}")
    s = torch.sign(eps)
    n, d = s.shape
    total = 0.0
    for i in range(n):  # n is small (5 in the paper): O(n²·d) without an n×n×d tensor
        total += float((s[i][None] != s).float().sum())
    return total / (n * (n - 1) * d)


def random_centres(faces: FaceSet, idx: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """One random position, the same (in pixels) for every image of ``idx``, such that each image's
    mask lies inside it: the control of Table 1."""
    s = int(faces.mask_size[list(idx)].max())
    size = faces.images.shape[-1]
    lo, hi = s / 2, size - s / 2
    x = lo + float(torch.rand(1, generator=generator)) * (hi - lo)
    y = lo + float(torch.rand(1, generator=generator)) * (hi - lo)
    return torch.tensor([[x, y]] * len(idx))


def correspondence_table(model: nn.Module, faces: FaceSet, layers: Sequence[str] = ("conv5", "fc7"), *,
                         n: int = 5, draws: int = 20, random_per_draw: int = 5, seed: int = 0,
                         paper_layers: dict[str, str] | None = None, grid: int | None = None) -> Any:
    """Table 1: Δ (:func:`sign_change`) of each part and of random masks at each layer, mean ± std
    over ``draws`` random draws of ``n`` faces (and ``random_per_draw`` random positions per draw
    for the control). Returns a DataFrame with columns ``part, layer, mean, std, draws`` plus the
    paper's values where the layer is conv5 / fc7 (the paper's layers 5 and 7), or where
    ``paper_layers`` maps a layer to ``"conv5"``/``"fc7"`` (a stand-in of :func:`correspondence_layers`).
    ``grid`` is :func:`layer_features`' (``None``: conv layers' whole maps; ``0``: pooled to the grid fc6 reads)."""
    import pandas as pd

    if not 2 <= n <= len(faces):
        raise ConfigError(f"n must be between 2 and the {len(faces)} annotated faces, got {n}")
    if draws < 1 or random_per_draw < 1:
        raise ConfigError(f"draws and random_per_draw must be at least 1, got {draws} and {random_per_draw}")
    g = torch.Generator().manual_seed(seed)
    base = layer_features(model, faces.images, layers, grid=grid)
    # a part's mask depends on the face only, not on the draw: ε of every face once per part
    eps = {part: {ly: base[ly] - f for ly, f in layer_features(
        model, mask_images(faces.images, faces.points[part], faces.mask_size), layers, grid=grid).items()} for part in PARTS}
    values: dict[tuple[str, str], list[float]] = {(p, ly): [] for p in (*PARTS, "random") for ly in layers}
    for _ in range(draws):
        idx = torch.randperm(len(faces), generator=g)[:n].tolist()
        imgs, sizes = faces.images[idx], faces.mask_size[idx]
        for part in PARTS:
            for ly in layers:
                values[(part, ly)].append(sign_change(eps[part][ly][idx]))
        for _ in range(random_per_draw):
            feats = layer_features(model, mask_images(imgs, random_centres(faces, idx, g), sizes), layers, grid=grid)
            for ly in layers:
                values[("random", ly)].append(sign_change(base[ly][idx] - feats[ly]))
    paper_name = {"conv5": "layer 5", "fc7": "layer 7"}
    alias = dict(paper_layers or {})
    rows = []
    for (part, ly), v in values.items():
        t = torch.tensor(v)
        ref = PAPER_TABLE1.get((part, paper_name.get(alias.get(ly, ly), "")), (float("nan"), float("nan")))
        rows.append(dict(part=part, layer=ly, mean=float(t.mean()), std=float(t.std()) if len(v) > 1 else 0.0,
                         draws=len(v), paper_mean=ref[0], paper_std=ref[1]))
    return pd.DataFrame(rows)


def parts_below_random(table: Any, layers: Sequence[str]) -> dict[str, dict[str, bool]]:
    """Per layer of a :func:`correspondence_table`, whether each part's mean Δ is below the random masks'."""
    out = {}
    for ly in layers:
        t = table[table.layer == ly].set_index("part")["mean"]
        out[ly] = {p: bool(t[p] < t["random"]) for p in PARTS}
    return out


def part_margins(table: Any, layers: Sequence[str]) -> dict[str, float]:
    """Per layer of a :func:`correspondence_table`, how far the parts' Δ lies below the random masks',
    as a share of the random masks' Δ: ``(Δ_random − mean over parts of Δ_part) / Δ_random``. Positive
    where masking a part changes the faces more consistently than a random mask; scale-free, so the
    layers can be compared (the paper's Table 1 gives 0.33 at layer 5 and 0.06 at layer 7)."""
    out = {}
    for ly in layers:
        t = table[table.layer == ly].set_index("part")["mean"]
        parts = sum(float(t[p]) for p in PARTS) / len(PARTS)
        out[ly] = (float(t["random"]) - parts) / float(t["random"]) if float(t["random"]) > 0 else float("nan")
    return out


#: The paper's Table 1 margins (:func:`part_margins` of its own values) at layers 5 and 7.
PAPER_MARGINS = {ly: (PAPER_TABLE1[("random", name)][0] - sum(PAPER_TABLE1[(p, name)][0] for p in PARTS) / len(PARTS))
                 / PAPER_TABLE1[("random", name)][0] for ly, name in (("conv5", "layer 5"), ("fc7", "layer 7"))}


def table1_claims(below: dict[str, dict[str, bool]], margins: dict[str, float] | None = None,
                  paper_layers: dict[str, str] | None = None) -> list[Any]:
    """Table 1's two claims, as the paper's caption states them: at layer 5 (``conv5``, or the layer
    that ``paper_layers`` maps to it) "the lower scores for the eyes and nose (compared to random object
    parts)" — every part's Δ below random (:func:`parts_below_random`); at layer 7 (``fc7``) "the scores
    are more similar" — the parts' lead over random (:func:`part_margins`) that layer 5 shows is
    smaller at layer 7 (so it fails where layer 5 shows no lead: there is nothing to shrink). The
    layer-7 claim needs ``margins`` of both layers (else it is "not tested"); layers that are neither
    of the paper's get no claim."""
    from .claims import Claim

    role = {ly: (paper_layers or {}).get(ly, ly) for ly in below}
    five = next((ly for ly, r in role.items() if r == "conv5"), None)
    claims = []
    for ly, r in role.items():
        if r == "conv5":
            claims.append(Claim("Table 1", f"{ly}: every part below random",
                                "every part below random (layer 5: 0.067-0.079 vs 0.107)", below[ly], all(below[ly].values())))
        elif r == "fc7":
            m = margins or {}
            ok = five is not None and five in m and ly in m
            ours = {five: round(m[five], 3), ly: round(m[ly], 3)} if ok else None
            claims.append(Claim("Table 1", f"{ly}: the parts' lead over random at {five or 'layer 5'} shrinks (lead: share of random's Δ)",
                                f"layer 7 \"more similar\": lead {PAPER_MARGINS['fc7']:.2f} vs {PAPER_MARGINS['conv5']:.2f} at layer 5",
                                ours, bool(m[five] > 0 and m[ly] < m[five]) if ok else None))
    return claims


def table1_view(table: Any) -> Any:
    """A :func:`correspondence_table` as Table 1 prints it: ``mean ± std`` of ours and the paper's, one row
    per part (random last), one column per layer."""
    shown = table.assign(ours=lambda d: d["mean"].map("{:.3f}".format) + " ± " + d["std"].map("{:.3f}".format),
                         paper=lambda d: d.paper_mean.map("{:.3f}".format) + " ± " + d.paper_std.map("{:.3f}".format))
    return shown.pivot(index="part", columns="layer", values=["ours", "paper"]).loc[list(PARTS) + ["random"]]
