"""Datasets, the decode-once cache and the paper's preprocessing (§3), scaled by profile.

- :func:`image_folder` reads any ImageFolder root with ``train/`` and ``val/`` (ImageNet itself,
  or an Imagenette copy); :func:`imagenette` fetches Imagenette through torchvision.
- :func:`resolve_root` picks the root: the argument, else ``ZFREPRO_DATA``, else a download of
  Imagenette into the cache directory; :func:`check_data_root` checks a root's layout up front.
- The validation split is the folder ``val/`` unless the setting ``ZFREPRO_VAL_SPLIT`` (``zfrepro
  reproduce --val-split test``, ``zfrepro train --val-split test``) names another: every reader of
  split ``"val"`` (:func:`image_folder`, the notebooks, training) then reads that folder.
- :func:`decode_split` decodes every image once (shorter side resized, centre square crop, as the
  paper's "resize smallest side to 256, centre 256×256 crop") into a memory-mapped uint8 array
  under the cache directory, keyed by root, split, size and the file list.
- :func:`load_split` gives model-ready tensors for notebooks (per-pixel mean subtracted, centre crop);
  :func:`iterate_batches` gives augmented training batches (random crops and flips, batched).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
import queue
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import ConfigError, DataError
from .io import atomic_path, atomic_save, atomic_write_json, cache_dir

__all__ = [
    "IMG_EXTENSIONS", "IMAGENETTE_WNIDS", "ImageFolderDataset", "image_folder", "imagenette", "resolve_root", "load_image",
    "DecodedSplit", "decode_split", "pixel_mean", "ModelInputs", "load_split", "iterate_batches",
    "normalize", "center_crop", "ten_crop", "random_crop_flip", "random_resized_crop_flip", "class_names",
    "VAL_SPLIT_ENV", "val_split", "split_folder", "check_data_root",
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


def _decode_square(path: str | Path, size: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------- decode-once cache


@dataclass
class DecodedSplit:
    """A split decoded once: ``images`` N×3×S×S uint8 (memory-mapped), ``labels`` N int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str]
    size: int
    root: Path
    split: str
    cache_path: Path

    def __len__(self) -> int:
        return len(self.labels)


def _cache_files(dataset: ImageFolderDataset, size: int, n: int) -> tuple[Path, Path]:
    key = hashlib.sha1(f"{dataset.root.resolve()}\0{dataset.split}\0{size}\0{n}".encode()).hexdigest()[:16]
    try:
        d = cache_dir() / "decoded"
    except OSError as exc:  # cache_dir() creates the folder: a read-only or full disk
        raise _cache_error(exc, Path(os.environ.get("ZFREPRO_CACHE") or "~/.cache/zfrepro") / "decoded") from None
    stem = f"{dataset.root.name}-{dataset.split}-{size}px-{n}-{key}"
    return d / f"{stem}.npy", d / f"{stem}.json"


def _cache_error(exc: OSError, path: Path) -> Exception:
    from .io import storage_error

    return storage_error(exc, path, "the decode cache", " (or set ZFREPRO_CACHE to a folder on another disk)")


def _cached(npy: Path, meta_path: Path, fp: str, dataset: ImageFolderDataset, size: int) -> DecodedSplit | None:
    """The decoded split if its cache files exist and match the fingerprint, else ``None``."""
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fp:
            return None
        arr = np.load(npy, mmap_mode="c")
        return DecodedSplit(torch.from_numpy(arr), torch.tensor(meta["labels"], dtype=torch.long),
                            meta["classes"], meta["paths"], size, dataset.root, dataset.split, npy)
    except (ValueError, OSError, KeyError):
        return None  # unreadable cache: rebuild


class _CacheLock:
    """An exclusive ``flock`` on ``<cache dir>/.locks/<cache file>.lock``: one process decodes a cache
    file while the others wait, then reuse it (released when the holder exits or dies)."""

    def __init__(self, npy: Path, progress: bool):
        self.fh: Any = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = npy.parent.parent / ".locks" / f"{npy.stem}.lock"
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(exist_ok=True)
            self.fh = open(path, "a+")
        except OSError as exc:  # a read-only or full cache disk
            raise _cache_error(exc, npy) from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if progress:
                print(f"zfrepro: waiting for another process decoding into {npy.name}", file=sys.stderr, flush=True)
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)

    def __enter__(self) -> "_CacheLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _reserve(fh: Any, total: int) -> None:
    """Claim ``total`` bytes for ``fh`` up front: a full disk fails here (``ENOSPC``), before any decoding."""
    try:
        os.posix_fallocate(fh.fileno(), 0, total)
    except AttributeError:  # not available on this platform
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1), errno.ENOSYS):
            raise


def decode_split(dataset: ImageFolderDataset, size: int, *, progress: bool = True,
                 threads: int | None = None) -> DecodedSplit:
    """Decode ``dataset`` once into a memory-mapped uint8 cache (shorter side → ``size``, centre crop).

    The cache lives in :func:`zfrepro.io.cache_dir`, keyed by dataset root, split and size; it is
    rebuilt when the file list, a file's size or modification time changes. Written atomically,
    through ordinary writes into space claimed up front (a full disk is one
    :class:`~zfrepro.errors.StorageError` line, never a SIGBUS of a memory-mapped write), under a
    per-file lock: a second process decoding the same split waits for the first and reuses its cache.
    """
    npy, meta_path = _cache_files(dataset, size, len(dataset))
    fp = dataset.fingerprint()
    hit = _cached(npy, meta_path, fp, dataset, size)
    if hit is not None:
        return hit
    with _CacheLock(npy, progress):
        hit = _cached(npy, meta_path, fp, dataset, size)  # decoded by the process we waited for
        if hit is not None:
            return hit
        paths = [p for p, _ in dataset.samples]
        if progress:
            print(f"zfrepro: decoding {len(paths)} {dataset.split} images at {size}px into {npy.parent} (once)",
                  file=sys.stderr)
        for stale in npy.parent.glob(f".{npy.name}.*.tmp"):  # left by a killed decode (writers hold the lock)
            stale.unlink(missing_ok=True)
        shape = (len(paths), 3, size, size)
        try:
            with atomic_path(npy) as tmp, open(tmp, "r+b") as fh:
                np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
                _reserve(fh, fh.tell() + int(np.prod(shape)))
                bar = _progress(len(paths), f"decode {dataset.split}", progress)
                pool = ThreadPoolExecutor(max_workers=threads or min(8, (os.cpu_count() or 2) * 2))
                try:
                    for arr in pool.map(lambda p: _decode_square(p, size), paths):
                        fh.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                        bar.update(1)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)  # a bad file stops the decode at once
                    bar.close()
                fh.flush()
            atomic_write_json({"fingerprint": fp, "labels": dataset.targets, "classes": dataset.classes,
                               "paths": dataset.relative_paths(), "size": size}, meta_path)
        except OSError as exc:
            raise _cache_error(exc, npy) from None
    arr = np.load(npy, mmap_mode="c")
    return DecodedSplit(torch.from_numpy(arr), torch.tensor(dataset.targets, dtype=torch.long),
                        dataset.classes, dataset.relative_paths(), size, dataset.root, dataset.split, npy)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr, mininterval=1.0)


def pixel_mean(decoded: DecodedSplit, chunk: int = 512) -> torch.Tensor:
    """Per-pixel mean image (3×S×S float32, 0..255) over a decoded split (§3: "subtracting the
    per-pixel mean"); cached next to the decoded images."""
    npy = decoded.cache_path
    mean_path = npy.with_suffix(".mean.pt")
    if mean_path.is_file() and mean_path.stat().st_mtime_ns >= npy.stat().st_mtime_ns:
        return torch.load(mean_path, weights_only=True)
    acc = torch.zeros(decoded.images.shape[1:], dtype=torch.float64)
    for s in range(0, len(decoded), chunk):
        acc += decoded.images[s:s + chunk].to(torch.float64).sum(0)
    mean = (acc / max(1, len(decoded))).to(torch.float32)
    try:
        atomic_save(mean, mean_path)
    except OSError as exc:
        raise _cache_error(exc, mean_path) from None
    return mean



# ----------------------------------------------------------------------------- tensor transforms


def normalize(x: torch.Tensor, mean: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """uint8 images (N×3×S×S) → float ``(x - mean) / scale`` (mean: 3×S×S per-pixel or 3×1×1; scale a
    number or one per channel, 3×1×1)."""
    if isinstance(scale, torch.Tensor):
        scale = scale.to(x.device)
    return (x.to(torch.float32) - mean.to(x.device)) / scale


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size``×``size`` crop of N×C×S×S (or C×S×S) images."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def ten_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's 10 test crops: 4 corners + centre, and their horizontal flips; (10·N)×C×size×size,
    crop-major (crop k of image i at index k·N + i)."""
    h, w = x.shape[-2:]
    boxes = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    crops = [x[..., t:t + size, l:l + size] for t, l in boxes]
    crops += [c.flip(-1) for c in crops]
    return torch.cat(crops, 0)


def random_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random ``size`` crops and random horizontal flips of a batch (N×C×S×S), batched
    with one gather (the paper's training augmentation)."""
    n, c, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator)
    left = torch.randint(0, w - size + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    ar = torch.arange(size)
    rows = (top[:, None] + ar)                                   # n×size
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - ar, ar)
    rows, cols = rows.to(x.device), cols.to(x.device)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return x[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def random_resized_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
                             scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized crops (area fraction in ``scale``, aspect in ``ratio``) with random flips,
    resampled bilinearly to ``size`` in one batched ``grid_sample``. Float input."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=generator)
    logr = torch.empty(n).uniform_(float(np.log(ratio[0])), float(np.log(ratio[1])), generator=generator)
    r = torch.exp(logr)
    bw = torch.sqrt(area * r).clamp(max=1.0)      # box width / image width
    bh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * (1 - bw) + bw / 2) * 2 - 1
    cy = (torch.rand(n, generator=generator) * (1 - bh) + bh / 2) * 2 - 1
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = bw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = bh
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------- model-ready data


class _IndexError(ConfigError, IndexError):
    """An image index outside a split: a one-line :class:`ConfigError`, and an ``IndexError`` so that plain
    iteration over a :class:`ModelInputs` stops at its end."""


class ModelInputs(Dataset):
    """Model-ready evaluation tensors of a decoded split: ``(pixels - mean) / scale``, centre crop.

    Yields ``(image C×H×W float32, label)`` — what the scans, occlusion and notebooks consume.
    ``to_display(x)`` maps model inputs back to RGB in 0..1 for plotting.
    """

    def __init__(self, decoded: DecodedSplit, mean: torch.Tensor, scale: float | torch.Tensor, input_size: int, *,
                 class_index: Sequence[int] | None = None, output_names: Sequence[str] | None = None):
        self.decoded = decoded
        self.mean = mean
        # a number, or one per channel (3×1×1) for models trained with per-channel normalisation
        self.scale = scale.reshape(-1, 1, 1).float() if isinstance(scale, torch.Tensor) else float(scale)
        self.input_size = int(input_size)
        self.classes = decoded.classes
        # labels are indices of the model's outputs: the dataset's own, or mapped (an ImageNet model's 1000)
        labels = torch.as_tensor(decoded.labels)
        self.labels = torch.as_tensor(list(class_index), dtype=torch.long)[labels] if class_index is not None else labels
        self.class_names = list(output_names) if output_names is not None else class_names(decoded.classes)

    def __len__(self) -> int:
        return len(self.decoded)

    def _check_index(self, indices: Sequence[int]) -> None:
        n = len(self)
        bad = [int(i) for i in indices if not 0 <= int(i) < n]
        if bad:
            raise _IndexError(f"image index {bad[0]} is out of range: the {self.decoded.split} split has {n} images "
                              f"here, so indices (image_index and the like) run from 0 to {n - 1}")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self._check_index([i])
        x = normalize(self.decoded.images[i], self.mean, self.scale)
        return center_crop(x, self.input_size).contiguous(), int(self.labels[i])

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Stacked model inputs for ``indices`` (N×3×H×W)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        self._check_index(idx.tolist())
        x = normalize(self.decoded.images[idx], self.mean, self.scale)
        return center_crop(x, self.input_size).contiguous()

    def crop_mean(self) -> torch.Tensor:
        """The mean image cropped like the inputs (3×H×W, 0..255)."""
        return center_crop(self.mean, self.input_size)

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        """Model input(s) → RGB in [0, 1] (adds back the centre-cropped mean)."""
        return ((x.detach().cpu() * self.scale + self.crop_mean()) / 255.0).clamp(0, 1)

    def path(self, i: int) -> Path:
        """The source file of image ``i``."""
        return self.decoded.root / self.decoded.split / self.decoded.paths[i]


def load_split(profile: Any, split: str, data_root: str | Path | None = None, *,
               progress: bool = True, arch: str = "zfnet") -> ModelInputs:
    """Model-ready tensors of ``split`` for a profile (a name or :class:`~zfrepro.config.Profile`).

    For this package's networks (``arch`` ``"zfnet"``/``"alexnet"``): decoded once at
    ``profile.resize``, per-pixel mean of the *training* split subtracted, divided by
    ``profile.pixel_scale``, centre ``profile.input_size`` crop. For ``"torchvision:NAME"``
    (ImageNet-trained): 256 → 224 crop with ImageNet's per-channel mean/std, labels mapped to the
    model's 1000 outputs (:func:`zfrepro.pretrained.input_spec`)."""
    from .pretrained import input_spec, profile_of

    prof = profile_of(profile)  # a name, a Profile, or a name with overrides ("smoke:epochs=3")
    root = resolve_root(data_root)
    per_class = prof.train_per_class if split == "train" else prof.val_per_class
    folder = image_folder(root, split)
    spec = input_spec(prof, arch, folder.classes)
    decoded = decode_split(folder.subset_per_class(per_class), spec.resize, progress=progress)
    if spec.mean is None:
        mean, scale = training_mean(prof, root, progress=progress), prof.pixel_scale
    else:
        mean, scale = spec.channel_constants(spec.resize)
    return ModelInputs(decoded, mean, scale, spec.input_size, class_index=spec.class_index,
                       output_names=spec.class_names)


def training_mean(profile: Any, data_root: str | Path | None = None, *, progress: bool = True) -> torch.Tensor:
    """The per-pixel mean (3×S×S) of the profile's training split."""
    from .pretrained import profile_of

    profile = profile_of(profile)
    root = resolve_root(data_root)
    train = decode_split(image_folder(root, "train").subset_per_class(profile.train_per_class),
                         profile.resize, progress=progress)
    return pixel_mean(train)


def iterate_batches(decoded: DecodedSplit, mean: torch.Tensor, profile: Any, *, train: bool,
                    batch_size: int | None = None, generator: torch.Generator | None = None,
                    indices: torch.Tensor | None = None, prefetch: int = 2,
                    device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(inputs, labels)`` over ``decoded``: shuffled with random crops/flips (``profile.augment``)
    when ``train``, in order with centre crops otherwise. A background thread prepares the next
    ``prefetch`` batches while the model runs (torch ops release the GIL)."""
    bs = batch_size or profile.batch_size
    n = len(decoded)
    if indices is None:
        indices = torch.randperm(n, generator=generator) if train else torch.arange(n)
    chunks = [indices[s:s + bs] for s in range(0, len(indices), bs)]
    if train and len(chunks) > 1 and len(chunks[-1]) < bs:
        chunks = chunks[:-1]  # drop the last partial batch (BatchNorm-free, but keeps steps equal-sized)
    # draw all augmentation randomness up front in the calling thread: deterministic per generator
    seeds = torch.randint(0, 2**62, (len(chunks),), generator=generator).tolist() if train else [0] * len(chunks)

    def make(chunk: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        order, _ = torch.sort(chunk)             # sequential reads from the memory map
        x = decoded.images[order]
        y = decoded.labels[order]
        x = normalize(x, mean, profile.pixel_scale)
        if train:
            g = torch.Generator().manual_seed(seed)
            if profile.augment == "rrc-flip":
                x = random_resized_crop_flip(x, profile.input_size, g)
            else:
                x = random_crop_flip(x, profile.input_size, g)
        else:
            x = center_crop(x, profile.input_size)
        return x.contiguous().to(device, non_blocking=True), y.to(device, non_blocking=True)

    if prefetch <= 0:
        for c, s in zip(chunks, seeds):
            yield make(c, s)
        return
    q: "queue.Queue[Any]" = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def worker() -> None:
        try:
            for c, s in zip(chunks, seeds):
                if stop.is_set():
                    return
                q.put(make(c, s))
            q.put(None)
        except BaseException as exc:  # surface errors in the consumer
            q.put(exc)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():
            try:
                q.get_nowait()
            except queue.Empty:
                break
        t.join(timeout=5)
