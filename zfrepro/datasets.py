"""Where the images are: ImageFolder roots, Imagenette, the validation split's folder, and a dataset's
identity (what run and result names are keyed by).

- :func:`image_folder` reads any ImageFolder root with ``train/`` and ``val/`` (ImageNet itself,
  or an Imagenette copy); :func:`imagenette` fetches Imagenette through torchvision.
- :func:`resolve_root` picks the root: the argument, else ``ZFREPRO_DATA``, else a download of
  Imagenette into the cache directory; :func:`check_data_root` checks a root's layout up front.
- The validation split is the folder ``val/`` unless the setting ``ZFREPRO_VAL_SPLIT`` (``zfrepro
  reproduce --val-split test``, ``zfrepro train --val-split test``) names another: every reader of
  split ``"val"`` (:func:`image_folder`, the notebooks, training) then reads that folder.
- :func:`dataset_identity` / :func:`data_tag`: a hash of a dataset's files, ``""`` for Imagenette, so
  that runs and results on other data never share a name with the Imagenette ones.
"""


from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from .errors import DataError
from .io import atomic_write_json, cache_dir

__all__ = [
    "IMG_EXTENSIONS", "IMAGENETTE_WNIDS", "ImageFolderDataset", "image_folder", "imagenette", "resolve_root",
    "load_image", "decode_square", "class_names", "VAL_SPLIT_ENV", "val_split", "split_folder", "check_data_root",
    "IMAGENETTE_FILES_SHA1", "dataset_files", "dataset_identity", "is_imagenette", "data_tag",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

#: Human-readable names of the Imagenette / ImageNet WordNet ids used in figure legends.
_WNID_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}

#: The class folders (WordNet ids) of Imagenette, sorted.
IMAGENETTE_WNIDS: tuple[str, ...] = tuple(sorted(_WNID_NAMES))

_HOW_TO_GET_DATA = ("download Imagenette with zfrepro.data.imagenette(root, download=True) "
                    "(or run without a root), or set ZFREPRO_DATA / --data-root to an ImageFolder with train/ and val/")


def class_names(classes: Sequence[str]) -> list[str]:
    """Readable names for class folder names (WordNet ids of Imagenette), else the folder names."""
    return [_WNID_NAMES.get(c, c) for c in classes]


# ----------------------------------------------------------------------------- reading images


def _open_rgb(path: str | Path, draft: int | None = None) -> "Any":
    """Open ``path`` as RGB (JPEG ``draft``: decode at the smallest scale still >= draft×draft)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if draft:
                img.draft("RGB", (draft, draft))
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode.startswith("I") or img.mode == "F":
                img = _to_8bit(img, path)
            return img.convert("RGB")
    except DataError:
        raise  # already one line naming the problem (an unsupported pixel format)
    except Image.DecompressionBombError as exc:  # over twice Pillow's pixel limit: a bomb, or a huge scan
        raise DataError(f"cannot read image {path} ({exc}): it decodes to more pixels than Pillow allows; "
                        "shrink it or delete it (or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({exc}): the file is corrupt or truncated; "
                        "replace or delete it") from None


def _to_8bit(img: "Any", path: str | Path) -> "Any":
    """A 16/32-bit integer or float greyscale image as 8-bit greyscale, scaled by its bit depth
    (Pillow's own ``convert("RGB")`` clips them: a 16-bit PNG comes out almost white)."""
    from PIL import Image

    a = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
            raise DataError(f"cannot read image {path}: a float image with values in [{lo:g}, {hi:g}], not 0..1; "
                            "convert it to an 8-bit image")
        a = a * 255.0
    elif img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
        if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
            raise DataError(f"cannot read image {path}: 32-bit integer pixels outside 0..65535; convert it to an 8-bit image")
        a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # 8-bit greyscale ("L")


def load_image(path: str | Path) -> "Any":
    """Open ``path`` as an RGB PIL image (greyscale, palette, CMYK and alpha images are converted).

    A corrupt or truncated file raises :class:`DataError` naming the path.
    """
    return _open_rgb(path)


def decode_square(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path``, resize its shorter side to ``size`` and centre-crop ``size``×``size``; 3×S×S uint8."""
    from PIL import Image

    img = _open_rgb(path, draft=size)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


# ----------------------------------------------------------------------------- datasets


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder root (``root/split/<class>/<image>``), validated on creation.

    Yields ``(PIL RGB image, label)``. ``samples`` lists ``(path, label)`` in sorted order.
    """

    def __init__(self, root: str | Path, split: str, samples: list[tuple[str, int]], classes: list[str]):
        self.root = Path(root)
        self.split = split
        self.samples = samples
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.targets = [s[1] for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        return load_image(path), label

    def subset_per_class(self, n: int) -> "ImageFolderDataset":
        """The first ``n`` images of each class (sorted by file name); ``n=0`` keeps all."""
        if n <= 0:
            return self
        counts: dict[int, int] = {}
        keep = []
        for path, label in self.samples:
            if counts.get(label, 0) < n:
                keep.append((path, label))
                counts[label] = counts.get(label, 0) + 1
        return ImageFolderDataset(self.root, self.split, keep, self.classes)

    def relative_paths(self) -> list[str]:
        """Paths relative to the split directory, e.g. ``n02102040/ILSVRC2012_val_00001.JPEG``."""
        base = self.root / self.split
        return [os.path.relpath(p, base) for p, _ in self.samples]

    def fingerprint(self) -> str:
        """Hash of the file list with sizes and modification times: changes when any file does."""
        h = hashlib.sha1()
        for p, label in self.samples:
            try:
                st = os.stat(p)
            except OSError as exc:  # a dangling or self-referencing link, or a file removed meanwhile
                kind = "a self-referencing link" if exc.errno == errno.ELOOP else \
                    "a dangling link" if os.path.islink(p) else "unreadable"
                raise DataError(f"{p} is {kind} ({exc.strerror}): fix it or delete it") from None
            h.update(f"{p}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


#: The setting that names the validation split's folder (default ``val``).
VAL_SPLIT_ENV = "ZFREPRO_VAL_SPLIT"


def val_split() -> str:
    """The folder of the validation split: ``$ZFREPRO_VAL_SPLIT`` (e.g. ``test``), else ``val``. A name that
    is not one plain folder name (a path, ``train``, hidden) is a :class:`~zfrepro.errors.ConfigError`."""
    from .errors import ConfigError

    name = (os.environ.get(VAL_SPLIT_ENV) or "").strip() or "val"
    if name in ("train", ".", "..") or name.startswith(".") or "/" in name or os.sep in name:
        raise ConfigError(f"validation split {name!r} ({VAL_SPLIT_ENV} / --val-split): give the name of the folder "
                          "beside train/ that holds the validation images, e.g. val or test")
    return name


def split_folder(split: str) -> str:
    """The folder that holds ``split``: :func:`val_split` for ``"val"``, the name itself otherwise."""
    return val_split() if split == "val" else split


def check_data_root(root: str | Path | None = None) -> Path | None:
    """Check a dataset root before any work: it exists, holds ``train/`` and the validation split
    (:func:`val_split`), each with class folders of images, and both splits have the same classes.
    ``root`` ``None``/``""`` takes ``$ZFREPRO_DATA``; with neither, ``None`` (Imagenette is downloaded
    when needed). A :class:`DataError` names what is missing and the fix. Returns the root."""
    if root is None or str(root) == "":
        root = os.environ.get("ZFREPRO_DATA") or None
    if root is None:
        return None
    path = resolve_root(root, download=False)
    train, val = image_folder(path, "train"), image_folder(path, "val")
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        what = (f"{len(train.classes)} vs {len(val.classes)} class folders" if len(train.classes) != len(val.classes)
                else "the same number of class folders but other names")
        raise DataError(f"{path}/train and {path}/{val.split} have different classes ({what}; only in train: "
                        f"{', '.join(only_train[:5]) or 'none'}; only in {val.split}: {', '.join(only_val[:5]) or 'none'}): "
                        "both splits need the same class folders")
    return path


def image_folder(root: str | Path, split: str) -> ImageFolderDataset:
    """The ``split`` ("train" or "val") of an ImageFolder ``root`` with one folder per class; ``"val"``
    reads the folder :func:`val_split` names (``val/`` unless ``ZFREPRO_VAL_SPLIT`` says otherwise).

    Checks the layout up front: a missing root or split, an empty class folder, or a file that
    is not an image each raise :class:`DataError` with the path and the fix. Hidden files are
    skipped. Used by every notebook through :func:`load_split`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist: {_HOW_TO_GET_DATA}")
    role, split = split, split_folder(split)
    split_dir = root / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        fix = "point to a folder holding train/ and val/ with one sub-folder per class"
        if role == "val":
            others = [h for h in have if h not in ("train", split)]
            fix = (f"name the validation split (--val-split {others[0]}, or {VAL_SPLIT_ENV}={others[0]}), or " + fix
                   if others else fix)
        raise DataError(f"data root {root} has no {split}/ folder (it has: {', '.join(have) or 'nothing'}): {fix}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    samples: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        files = sorted(f for f in (split_dir / cls).iterdir() if not f.name.startswith("."))
        imgs = []
        for f in files:
            if f.is_dir():
                continue
            if f.suffix.lower() not in IMG_EXTENSIONS:
                raise DataError(f"{f} is not an image (expected {', '.join(IMG_EXTENSIONS)}): "
                                "move it out of the class folder")
            imgs.append((str(f), label))
        if not imgs:
            raise DataError(f"class folder {split_dir / cls} is empty: add its images or remove the folder")
        samples.extend(imgs)
    return ImageFolderDataset(root, split, samples, classes)


def imagenette(root: str | Path | None = None, split: str = "train", size: str = "320px",
               download: bool = False) -> ImageFolderDataset:
    """Imagenette through torchvision's ``Imagenette`` (checksums verified by torchvision).

    ``size`` is torchvision's ("full", "320px", "160px"). With ``download=True`` the archive is
    fetched into ``root`` (default: the cache directory) unless already there; progress is shown.
    """
    from torchvision import datasets

    base = Path(root).expanduser() if root is not None else cache_dir() / "imagenette"
    done = base / f".imagenette-{size}.complete"  # written only after a whole download and extraction
    if download and not done.is_file():
        print(f"zfrepro: downloading Imagenette ({size}) into {base} ...", file=sys.stderr)
        staging = base / f".imagenette-{size}.partial"
        if staging.exists():
            shutil.rmtree(staging)  # a download killed earlier: start it again
        try:
            tv = datasets.Imagenette(str(staging), split=split, size=size, download=True)
        except (OSError, RuntimeError) as exc:  # network errors, checksum mismatch, full disk
            raise DataError(f"downloading Imagenette into {base} failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}): check the network and disk space, "
                            "or set ZFREPRO_DATA to a local copy") from None
        final = base / tv._size_root.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tv._size_root, final)  # the extracted folder appears whole or not at all
        for f in staging.iterdir():  # keep the verified archive beside it (no second download)
            os.replace(f, base / f.name)
        shutil.rmtree(staging, ignore_errors=True)
        atomic_write_json({"size": size}, done)
    try:
        tv = datasets.Imagenette(str(base), split=split, size=size, download=False)
    except RuntimeError:
        raise DataError(f"Imagenette ({size}) is not under {base}: pass download=True or {_HOW_TO_GET_DATA}") from None
    return image_folder(tv._size_root, split)


def resolve_root(root: str | Path | None = None, *, download: bool = True) -> Path:
    """The dataset root: ``root``, else ``$ZFREPRO_DATA``, else Imagenette (320 px) downloaded into
    the cache directory (announced first, with progress). Raises :class:`DataError` if the root
    does not exist."""
    if root is None or str(root) == "":
        root = os.environ.get("ZFREPRO_DATA") or None
    if root is None:
        if not download:
            raise DataError(f"no data root given: {_HOW_TO_GET_DATA}")
        ds = imagenette(None, "train", "320px", download=True)
        imagenette(None, "val", "320px", download=True)
        return ds.root
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist: {_HOW_TO_GET_DATA}")
    return path


# ----------------------------------------------------------------------------- identity


#: sha1 of Imagenette's file list (``train/<wnid>/<file>`` and ``val/...``, sorted, newline-joined): the
#: relative paths of torchvision's imagenette2 (the 160-px, 320-px and full downloads share them; only
#: the sizes differ) and of offline copies such as the 224-px one CI uses (9,469 + 3,925 files).
IMAGENETTE_FILES_SHA1 = "fe8cb2413435c614fe7893265785a26117819f09"


def dataset_files(root: str | Path) -> list[tuple[str, int, int]]:
    """``(split/class/file, size, mtime_ns)`` of every file in the class folders of ``root/train`` and
    ``root/val`` (hidden entries skipped), sorted: a stat per file, no file read (~0.1 s for
    Imagenette). A dangling or self-referencing link is a :class:`DataError` naming it."""
    import stat as _stat

    root = Path(root).expanduser()
    out: list[tuple[str, int, int]] = []
    for split in ("train", val_split()):  # the validation split by its folder name: "test" is another dataset
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        try:
            with os.scandir(split_dir) as it:
                classes = sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
            for cls in classes:
                with os.scandir(split_dir / cls) as it:
                    names = sorted(e.name for e in it if not e.name.startswith("."))
                for name in names:
                    path = split_dir / cls / name
                    try:
                        st = os.stat(path)
                    except OSError as exc:
                        kind = "a self-referencing link" if exc.errno == errno.ELOOP else \
                            "a dangling link" if os.path.islink(path) else "unreadable"
                        raise DataError(f"{path} is {kind} ({exc.strerror}): fix it or delete it") from None
                    if not _stat.S_ISDIR(st.st_mode):
                        out.append((f"{split}/{cls}/{name}", st.st_size, st.st_mtime_ns))
        except DataError:
            raise
        except OSError as exc:
            raise DataError(f"cannot list {split_dir} ({exc.strerror or exc}): check its permissions") from None
    return out


def dataset_identity(data_root: str | Path) -> str:
    """A hash of a dataset's files (relative paths, sizes, modification times): changes when any file is
    added, removed, replaced or touched — the same information the decode cache fingerprints."""
    h = hashlib.sha1()
    for rel, size, mtime in dataset_files(data_root):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def is_imagenette(data_root: str | Path) -> bool:
    """Whether ``data_root`` holds Imagenette: exactly its file names in train/ and val/ (any of
    torchvision's sizes, or a resized copy that kept the names), none of them empty."""
    files = dataset_files(data_root)
    names = hashlib.sha1("\n".join(rel for rel, _, _ in files).encode()).hexdigest()
    return names == IMAGENETTE_FILES_SHA1 and all(size > 0 for _, size, _ in files)


def data_tag(data_root: str | Path | None) -> str:
    """``""`` for Imagenette (wherever it lies, at whatever size: :func:`is_imagenette`) or when no
    root is set (the download is Imagenette); else ``-data<8 hex digits>``, a hash of the dataset's
    files (paths, sizes, modification times: :func:`dataset_identity`), so that runs on another
    dataset — another ImageNet folder, or a subset of Imagenette with its class names — never share
    a directory (or results) with the Imagenette runs, and a changed dataset trains afresh."""
    root = data_root or os.environ.get("ZFREPRO_DATA") or None
    if root is None:
        return ""
    train_dir = Path(root).expanduser() / "train"
    if not train_dir.is_dir():
        return ""  # the data layer reports the missing folder when data are needed
    if is_imagenette(root):
        return ""
    return "-data" + dataset_identity(root)[:8]
