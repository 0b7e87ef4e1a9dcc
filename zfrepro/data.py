"""The decode-once cache and the paper's preprocessing (§3), scaled by profile.

- where the images are (ImageFolder roots, Imagenette, the validation split, dataset identity) is
  :mod:`zfrepro.datasets`.
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
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import profile_of
from .datasets import ImageFolderDataset, class_names, decode_square, image_folder, resolve_root
from .errors import ConfigError, DataError
from .io import atomic_path, atomic_save, atomic_write_json, cache_dir

__all__ = [
    "DecodedSplit", "decode_split", "pixel_mean", "ModelInputs", "load_split", "iterate_batches",
    "normalize", "center_crop", "ten_crop", "random_crop_flip", "random_resized_crop_flip",
    "InputSpec", "input_spec", "imagenet_indices", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENETTE_IMAGENET_INDEX",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation (RGB, 0..1)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Imagenette's ten WordNet ids and their indices among the 1000 ImageNet classes (sorted wnids)
IMAGENETTE_IMAGENET_INDEX = {
    "n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
    "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701,
}
_WNID = re.compile(r"^n\d{8}$")


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
                    for arr in pool.map(lambda p: decode_square(p, size), paths):
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


# ----------------------------------------------------------------------------- model inputs


@dataclass(frozen=True)
class InputSpec:
    """What a model expects of its inputs: decode at ``resize``, crop ``input_size``,
    ``(pixels - mean) / scale`` with ``mean``/``scale`` per channel (0..255 units) or ``None`` for the
    profile's per-pixel training mean and scalar ``pixel_scale``; ``class_index[k]`` is the model
    output of dataset class ``k`` (``None``: the same index); ``class_names`` name the model's outputs."""

    resize: int
    input_size: int
    mean: tuple[float, float, float] | None = None
    scale: tuple[float, float, float] | None = None
    class_index: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def channel_constants(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, scale)`` of a per-channel normalisation as tensors: the mean as a 3×size×size image (so it
        crops like the per-pixel training mean), the scale 3×1×1. Only for specs that have them."""
        if self.mean is None or self.scale is None:
            raise ConfigError("this model normalises with the profile's per-pixel training mean, not per channel")
        mean = torch.tensor(self.mean).view(3, 1, 1).expand(3, size, size).contiguous()
        return mean, torch.tensor(self.scale).view(3, 1, 1)


def imagenet_indices(classes: Sequence[str]) -> tuple[int, ...]:
    """Each dataset class (a WordNet id folder name) → its index among the 1000 ImageNet outputs.

    Imagenette's ten classes map through :data:`IMAGENETTE_IMAGENET_INDEX`; a folder of 1000
    WordNet ids (ImageNet itself) maps in sorted order, as torchvision's models were trained.
    Other class folders are a :class:`DataError`: an ImageNet model has no output for them."""
    classes = list(classes)
    if all(c in IMAGENETTE_IMAGENET_INDEX for c in classes):
        return tuple(IMAGENETTE_IMAGENET_INDEX[c] for c in classes)
    if len(classes) == 1000 and all(_WNID.match(c) for c in classes):
        return tuple(sorted(classes).index(c) for c in classes)
    odd = [c for c in classes if c not in IMAGENETTE_IMAGENET_INDEX][:3]
    raise DataError(f"the dataset's classes ({', '.join(odd)}, ...) are not ImageNet classes, so an ImageNet-trained "
                    "model has no output for them: use Imagenette or an ImageNet folder (WordNet-id class folders), "
                    "or arch=zfnet trained on this dataset")


def input_spec(profile: Any, arch: str = "zfnet", classes: Sequence[str] | None = None) -> InputSpec:
    """The inputs ``arch`` expects under ``profile``: this package's networks use the profile's sizes
    and per-pixel mean; torchvision's ImageNet models their own (256 → 224 crop, ImageNet mean/std,
    1000 outputs, dataset classes mapped by :func:`imagenet_indices`)."""
    from .models import parse_arch

    prof = profile_of(profile)
    source, name = parse_arch(arch)
    if source != "torchvision":
        return InputSpec(prof.resize, prof.input_size)
    from torchvision.models import AlexNet_Weights

    return InputSpec(256, 224, tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD),
                     imagenet_indices(classes) if classes is not None else None,
                     tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"]))


def load_split(profile: Any, split: str, data_root: str | Path | None = None, *,
               progress: bool = True, arch: str = "zfnet") -> ModelInputs:
    """Model-ready tensors of ``split`` for a profile (a name or :class:`~zfrepro.config.Profile`).

    For this package's networks (``arch`` ``"zfnet"``/``"alexnet"``): decoded once at
    ``profile.resize``, per-pixel mean of the *training* split subtracted, divided by
    ``profile.pixel_scale``, centre ``profile.input_size`` crop. For ``"torchvision:NAME"``
    (ImageNet-trained): 256 → 224 crop with ImageNet's per-channel mean/std, labels mapped to the
    model's 1000 outputs (:func:`input_spec`)."""
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
