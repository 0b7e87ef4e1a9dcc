"""Training as in §3 of the paper, scaled by profile, with snapshots, exact resume and DDP.

The recipe (all per :class:`~zfrepro.config.Profile`): SGD with momentum, mini-batches of
``batch_size``, learning rate ``lr`` under a schedule (``plateau``: ×0.1 when the validation
loss plateaus, the paper's manual annealing; ``onecycle``; ``cosine``; ``constant``; optional
linear warm-up), dropout, weight decay, label smoothing, and after *every* update the paper's
filter renormalisation (:func:`renormalize_filters`): each convolutional filter whose RMS
exceeds ``renorm_radius`` (10⁻¹) is rescaled to exactly that RMS.

Run directory (default ``runs_dir()/<profile>/<arch>``, with a ``-<hash>`` suffix when fields
are overridden, see :func:`run_dir_for`)::

    profile.json        the full profile, arch, overrides, data root (rewritten at each start)
    metrics.csv         one row per epoch, appended and flushed as training runs
    epoch_001.pt ...    snapshots at the profile's snapshot_epochs within epochs, and the last epoch
    latest.pt           the newest state: end of the last epoch (a hard link to epoch_NNN.pt when
                        that epoch has one), or mid-epoch with snapshot_every; resume reads it
    .lock               flock held by the training process (released when it dies)

Every snapshot is a ``torch.save`` dict, written atomically (a killed run leaves only whole
files) and loadable by :func:`zfrepro.models.load_checkpoint` (keys ``spec`` and
``state_dict``); it also holds ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (CPU/CUDA
generator states per rank, and the data-order seed), ``profile``, ``arch``, ``epoch`` (epochs
completed), ``batch`` (batches done in the next epoch, 0 at an epoch end), ``metrics``.

Resume (the default) continues from the newest snapshot and reproduces an uninterrupted run
bit for bit on the CPU: data order and augmentation come from a generator seeded by
``(seed, epoch)``, dropout's global RNG state is saved and restored.

Multi-process data parallel training uses PyTorch's launcher and DDP::

    torchrun --standalone --nproc_per_node=2 -m zfrepro.train --profile smoke

Every rank draws the same globally shuffled, augmented batch of ``batch_size`` images and
trains on its contiguous slice, so the update equals the single-process one up to float
rounding (dropout masks differ: each rank has its own dropout RNG stream).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import data as _data
from . import io as _io
from . import models as _models
from .config import PROFILES, Profile, get_profile
from .devices import keep_freed_memory, resolve_device
from .errors import CheckpointError, ConfigError, DataError, StorageError, ZFReproError

__all__ = [
    "train", "main", "add_train_arguments", "run_from_args", "renormalize_filters", "load_trained",
    "list_snapshots", "run_dir_for", "read_metrics", "evaluate", "resolve_device", "resolve_profile",
    "build_network", "steps_per_epoch", "SCHEDULES", "METRIC_COLUMNS",
]

SCHEDULES = ("plateau", "onecycle", "cosine", "constant")
AUGMENTS = ("crop-flip", "rrc-flip")
METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_crops", "lr", "seconds")
SNAPSHOT_FORMAT = 1
#: ReduceLROnPlateau settings of the ``plateau`` schedule (the paper anneals "manually" by ×0.1).
PLATEAU_FACTOR, PLATEAU_PATIENCE, PLATEAU_MIN_SCALE = 0.1, 3, 1e-3
_LATEST = "latest.pt"
_FIELDS_IGNORED = ("name", "deviations", "arch", "num_workers")  # not part of a run's identity


# ============================================================================ profile and run dir


def resolve_profile(profile: str | Profile = "default", arch: str = "zfnet",
                    **overrides: Any) -> tuple[Profile, str]:
    """``(profile with overrides, arch)``, validated. ``arch`` may also come as an override
    (``--set arch=alexnet``); an unknown profile, field, arch, schedule or augmentation is a
    :class:`ConfigError`."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    o_arch = overrides.pop("arch", None)
    if o_arch is not None:
        if arch not in (None, "zfnet") and o_arch != arch:
            raise ConfigError(f"arch given twice ({arch!r} and arch={o_arch!r}): give it once")
        arch = str(o_arch)
    arch = arch or "zfnet"
    if arch not in _models.ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}: use one of {', '.join(sorted(_models.ARCHS))}")
    prof = get_profile(profile, **overrides, arch=arch)
    if prof.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {prof.schedule!r}: use one of {', '.join(SCHEDULES)}")
    if prof.augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {prof.augment!r}: use one of {', '.join(AUGMENTS)}")
    if prof.init not in _models.INIT_SCHEMES:
        raise ConfigError(f"unknown init {prof.init!r}: use one of {', '.join(_models.INIT_SCHEMES)}")
    if prof.epochs < 1 or prof.batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be positive, got {prof.epochs} and {prof.batch_size}")
    if not 0.0 <= prof.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {prof.dropout}")
    if prof.lr <= 0 or prof.renorm_radius <= 0 or prof.warmup_epochs < 0:
        raise ConfigError("lr and renorm_radius must be positive and warmup_epochs >= 0")
    mults = {k: getattr(prof, k) for k in ("first_lr_mult", "conv_lr_mult", "conv_init_mult")}
    bad = [f"{k}={v}" for k, v in mults.items() if not v > 0] + \
        [f"{k}={getattr(prof, k)}" for k in ("first_decay_mult", "conv_decay_mult") if not getattr(prof, k) >= 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: learning-rate and init multipliers must be positive, decay multipliers >= 0")
    return prof, arch


def _identity(prof: Profile) -> dict[str, Any]:
    """The fields that determine a run's results."""
    return {k: v for k, v in prof.as_dict().items() if k not in _FIELDS_IGNORED}


def _changed_fields(prof: Profile) -> dict[str, Any]:
    """Fields of ``prof`` that differ from its named base profile (all non-defaults for a custom name)."""
    base = PROFILES.get(prof.name) or Profile(name=prof.name)
    mine, theirs = _identity(prof), _identity(base)
    return {k: v for k, v in mine.items() if theirs.get(k) != v}


#: sha1 of Imagenette's file list (``train/<wnid>/<file>`` and ``val/...``, sorted, newline-joined): the
#: relative paths of torchvision's imagenette2 (the 160-px, 320-px and full downloads share them; only
#: the sizes differ) and of offline copies such as the 224-px one CI uses (9,469 + 3,925 files).
IMAGENETTE_FILES_SHA1 = "fe8cb2413435c614fe7893265785a26117819f09"


def _dataset_files(root: str | Path) -> list[tuple[str, int, int]]:
    """``(split/class/file, size, mtime_ns)`` of every file in the class folders of ``root/train`` and
    ``root/val`` (hidden entries skipped), sorted: a stat per file, no file read (~0.1 s for
    Imagenette). A dangling or self-referencing link is a :class:`DataError` naming it."""
    import stat as _stat

    root = Path(root).expanduser()
    out: list[tuple[str, int, int]] = []
    for split in ("train", _data.val_split()):  # the validation split by its folder name: "test" is another dataset
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
    for rel, size, mtime in _dataset_files(data_root):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def is_imagenette(data_root: str | Path) -> bool:
    """Whether ``data_root`` holds Imagenette: exactly its file names in train/ and val/ (any of
    torchvision's sizes, or a resized copy that kept the names), none of them empty."""
    files = _dataset_files(data_root)
    names = hashlib.sha1("\n".join(rel for rel, _, _ in files).encode()).hexdigest()
    return names == IMAGENETTE_FILES_SHA1 and all(size > 0 for _, size, _ in files)


def _data_tag(data_root: str | Path | None) -> str:
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


def _run_name(prof: Profile, arch: str, data_root: str | Path | None = None) -> str:
    changed = _changed_fields(prof)
    name = arch
    if changed:
        name += "-" + hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return name + _data_tag(data_root)


def run_dir_for(profile: str | Profile = "default", arch: str = "zfnet", *, data_root: str | Path | None = None,
                **overrides: Any) -> Path:
    """Where ``train(profile, arch=arch, data_root=data_root, **overrides)`` writes:
    ``runs_dir()/<profile>/<arch>``, plus ``-<8 hex digits>`` (a hash of the overridden fields) when
    any field differs from the named profile, plus ``-data<8 hex digits>`` for a dataset other than
    Imagenette, so that different configurations and datasets never share a directory."""
    prof, arch = resolve_profile(profile, arch, **overrides)
    return _io.runs_dir() / prof.name / _run_name(prof, arch, data_root)


# ============================================================================ renormalisation


_RENORM_TOL = 1e-6


@torch.no_grad()
def _renorm_(model: nn.Module, radius: float) -> list[torch.Tensor]:
    """Renormalise in place without a host sync; returns per-layer boolean masks of clipped filters."""
    masks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            rms = w.detach().double().pow(2).mean(dim=tuple(range(1, w.dim()))).sqrt()
            # "exceeds": beyond float32 rounding of the radius, so a renormalised filter stays put
            over = rms > radius * (1.0 + _RENORM_TOL)
            scale = torch.where(over, radius / rms.clamp_min(1e-30), torch.ones_like(rms))
            w.mul_(scale.view(-1, *([1] * (w.dim() - 1))).to(w.dtype))  # ×1.0 elsewhere: bit-exact no-op
            masks.append(over)
    return masks


def renormalize_filters(model: nn.Module, radius: float = 0.1) -> int:
    """§3: "renormalize each filter in the convolutional layers whose RMS value exceeds a fixed
    radius of 10⁻¹ to this fixed radius". For every ``nn.Conv2d`` in ``model``, each output
    filter (its k·k·C_in weights; biases untouched) with RMS > ``radius`` is scaled to RMS
    exactly ``radius``. Returns how many filters were clipped. Training calls it after every
    update unless ``profile.renorm`` is False (Fig. 6a)."""
    return int(sum(int(m.sum()) for m in _renorm_(model, float(radius))))


# ============================================================================ data and model


@dataclass
class _Data:
    train: _data.DecodedSplit
    val: _data.DecodedSplit
    mean: torch.Tensor
    classes: list[str]
    root: Path


def _prepare_data(prof: Profile, data_root: str | Path | None, progress: bool) -> _Data:
    root = _data.resolve_root(data_root)
    train_ds = _data.image_folder(root, "train")
    val_ds = _data.image_folder(root, "val")   # both splits checked before any decoding
    if train_ds.classes != val_ds.classes:
        only_train = sorted(set(train_ds.classes) - set(val_ds.classes))
        only_val = sorted(set(val_ds.classes) - set(train_ds.classes))
        raise DataError(f"{root}/train and {root}/val have different class folders (only in train: "
                        f"{', '.join(only_train[:5]) or 'none'}; only in val: {', '.join(only_val[:5]) or 'none'}): "
                        "both splits need the same class folders")
    tr = _data.decode_split(train_ds.subset_per_class(prof.train_per_class), prof.resize, progress=progress)
    va = _data.decode_split(val_ds.subset_per_class(prof.val_per_class), prof.resize, progress=progress)
    return _Data(tr, va, _data.pixel_mean(tr), list(train_ds.classes), root)


def _set_dropout(model: nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(p)
    if isinstance(getattr(model, "spec", None), dict):
        model.spec["dropout"] = float(p)


def build_network(prof: Profile, arch: str, num_classes: int) -> nn.Module:
    """The profile's network (width, fc width, dropout, and Table 3's ``conv_maps`` / ``remove_layers``
    when set) initialised per ``prof.init``."""
    variant: dict[str, Any] = {}
    if getattr(prof, "conv_maps", ()):
        variant["conv_maps"] = tuple(prof.conv_maps)
    if getattr(prof, "remove_layers", ()):
        variant["remove"] = tuple(prof.remove_layers)
    model = _models.build_model(arch, num_classes=num_classes, input_size=prof.input_size,
                                width=prof.width, fc_width=prof.fc_width, **variant)
    _set_dropout(model, prof.dropout)
    model = _models.init_weights(model, prof.init)
    if prof.conv_init_mult != 1.0:
        with torch.no_grad():
            for conv in _later_convs(model):
                conv.weight.mul_(prof.conv_init_mult)
    return model


def _later_convs(model: nn.Module) -> list[nn.Conv2d]:
    """Every convolution after the first (conv2-5 of ZFNet): what the ``conv_*_mult`` fields act on."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch of :func:`zfrepro.data.iterate_batches` (a last partial batch is dropped)."""
    chunks = math.ceil(n / batch_size)
    if chunks > 1 and n % batch_size:
        chunks -= 1
    return chunks


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data-order/augmentation generator of ``epoch``: independent of how we got there."""
    return int.from_bytes(hashlib.sha256(f"zfrepro-data:{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


def _param_groups(model: nn.Module, prof: Profile) -> list[dict[str, Any]]:
    """SGD parameter groups with Caffe's per-layer ``lr_mult`` / ``decay_mult``: the first convolution
    (weight and bias) at ``lr × first_lr_mult`` and weight decay ``weight_decay × first_decay_mult`` when
    either differs from 1; then conv2-5 at ``lr × conv_lr_mult`` and ``weight_decay × conv_decay_mult``
    when either differs from 1; the rest at ``lr`` and ``weight_decay``. One group when all are 1."""
    params = list(model.parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    groups: list[dict[str, Any]] = []
    taken: set[int] = set()
    if (prof.first_lr_mult != 1.0 or prof.first_decay_mult != 1.0) and convs:
        ids = {id(p) for p in convs[0].parameters()}
        groups.append({"params": [p for p in params if id(p) in ids], "lr": prof.lr * prof.first_lr_mult,
                       "weight_decay": prof.weight_decay * prof.first_decay_mult})
        taken |= ids
    if (prof.conv_lr_mult != 1.0 or prof.conv_decay_mult != 1.0) and len(convs) > 1:
        ids = {id(p) for c in convs[1:] for p in c.parameters()}
        weights = {id(c.weight) for c in convs[1:]}
        later = [p for p in params if id(p) in ids]
        decay = prof.weight_decay * prof.conv_decay_mult
        groups.append({"params": [p for p in later if id(p) in weights], "lr": prof.lr * prof.conv_lr_mult,
                       "weight_decay": decay})
        biases = [p for p in later if id(p) not in weights]
        if biases:  # decay_mult is the weights' (Caffe's bias decay_mult is its own field); biases keep the base
            groups.append({"params": biases, "lr": prof.lr * prof.conv_lr_mult})
        taken |= ids
    return groups + [{"params": [p for p in params if id(p) not in taken], "lr": prof.lr}]


class _Schedule:
    """Learning rate per profile: a per-batch torch scheduler and/or the epoch-level plateau one."""

    def __init__(self, opt: torch.optim.Optimizer, prof: Profile, steps: int):
        from torch.optim import lr_scheduler as ls

        total = prof.epochs * steps
        self.warm = int(round(prof.warmup_epochs * steps))
        warm = self.warm

        def warmup(s: int) -> float:
            return min(1.0, (s + 1) / warm) if warm > 0 else 1.0

        self.batch: Any = None
        self.plateau: Any = None
        self.batch_until = total  # step the per-batch scheduler while global_step <= this
        if prof.schedule == "onecycle":
            pct = min(0.9, warm / total) if warm > 0 else 0.3
            self.batch = ls.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=pct,
                                       cycle_momentum=False)
        elif prof.schedule == "cosine":
            def cosine(s: int) -> float:
                t = min(1.0, max(0.0, (s - warm) / max(1, total - warm)))
                return warmup(s) * 0.5 * (1.0 + math.cos(math.pi * t))
            self.batch = ls.LambdaLR(opt, cosine)
        elif prof.schedule == "constant":
            self.batch = ls.LambdaLR(opt, warmup)
        else:  # plateau
            if warm > 0:
                self.batch = ls.LambdaLR(opt, warmup)
                self.batch_until = warm - 1   # afterwards the plateau scheduler owns the lr
            self.plateau = ls.ReduceLROnPlateau(opt, mode="min", factor=PLATEAU_FACTOR,
                                                patience=PLATEAU_PATIENCE, min_lr=prof.lr * PLATEAU_MIN_SCALE)

    def after_batch(self, global_step: int) -> None:
        if self.batch is not None and global_step <= self.batch_until:
            self.batch.step()

    def after_epoch(self, val_loss: float, global_step: int) -> None:
        if self.plateau is not None and global_step >= self.warm:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"batch": self.batch.state_dict() if self.batch is not None else None,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.batch is not None and state.get("batch") is not None:
            self.batch.load_state_dict(state["batch"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


class _Trainer:
    """Model, optimiser, schedule and one training step: what :func:`train` and the benchmark run."""

    def __init__(self, prof: Profile, arch: str, num_classes: int, device: torch.device,
                 amp: bool | None = None, steps: int = 1, channels_last: bool = True):
        self.prof, self.arch, self.device = prof, arch, device
        self.raw = build_network(prof, arch, num_classes).to(device)
        # channels-last on every device: on CPU it makes max pooling with switches ~10x faster and the
        # whole step faster (benchmarks/bench_train_step.py); the same maths, other rounding
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.raw = self.raw.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.raw
        self.amp = (device.type == "cuda") if amp is None else bool(amp)
        self.amp_dtype = torch.bfloat16
        if self.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self.amp_dtype = torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None
        self.opt = torch.optim.SGD(_param_groups(self.raw, prof), lr=prof.lr, momentum=prof.momentum,
                                   weight_decay=prof.weight_decay)
        self.sched = _Schedule(self.opt, prof, steps)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=prof.label_smoothing)

    def autocast(self) -> Any:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One SGD update on ``(x, y)`` then renormalisation; returns (loss·n, correct, lr used)
        without a host sync."""
        lr = self.opt.param_groups[-1]["lr"]
        x = self.prepare(x)
        with self.autocast():
            out = self.model(x)
            loss = self.criterion(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        if self.prof.renorm:
            _renorm_(self.raw, self.prof.renorm_radius)
        n = y.shape[0]
        return (loss.detach().double() * n, (out.detach().argmax(1) == y).sum().double(), lr)


# ============================================================================ evaluation


@torch.no_grad()
def _eval_sums(model: nn.Module, decoded: _data.DecodedSplit, mean: torch.Tensor, prof: Profile,
               device: torch.device, indices: torch.Tensor, crops: int, prepare: Callable[[Any], Any],
               autocast: Callable[[], Any], batch_size: int | None = None) -> torch.Tensor:
    """[loss sum, top-1 correct, top-5 correct, count] (float64) over ``indices`` of ``decoded``;
    ``crops`` 1 (centre) or 10 (corners + centre and flips, softmax averaged)."""
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    per = max(1, (batch_size or prof.batch_size) // crops)
    k5 = None
    try:
        for s in range(0, len(indices), per):
            idx = indices[s:s + per]
            x = _data.normalize(decoded.images[idx], mean, prof.pixel_scale)
            y = decoded.labels[idx].to(device)
            x = _data.ten_crop(x, prof.input_size) if crops == 10 else _data.center_crop(x, prof.input_size)
            x = prepare(x.contiguous().to(device))
            with autocast():
                logits = model(x).float()
            n = len(idx)
            probs = logits.softmax(-1).view(crops, n, -1).mean(0)
            loss = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().sum()
            k5 = min(5, probs.shape[1])
            top = probs.topk(k5, dim=1).indices
            hit = top == y[:, None]
            sums += torch.stack([loss.double(), hit[:, 0].sum().double(), hit.any(1).sum().double(),
                                 torch.tensor(float(n), dtype=torch.float64, device=device)])
    finally:
        model.train(was)
    return sums


def evaluate(model: nn.Module, profile: str | Profile = "default", *, data_root: str | Path | None = None,
             split: str = "val", crops: int | None = None, device: str | torch.device | None = None,
             batch_size: int | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (fractions) and loss of ``model`` on ``split`` preprocessed per
    ``profile`` (per-pixel training mean, ``pixel_scale``; ``crops`` defaults to
    ``profile.eval_crops``: 1 centre crop or the paper's 10 crops)."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    crops = crops or prof.eval_crops
    if crops not in (1, 10):
        raise ConfigError(f"crops must be 1 or 10, got {crops}")
    root = _data.resolve_root(data_root)
    per_class = prof.train_per_class if split == "train" else prof.val_per_class
    dec = _data.decode_split(_data.image_folder(root, split).subset_per_class(per_class), prof.resize)
    mean = _data.training_mean(prof, root)
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    sums = _eval_sums(model, dec, mean, prof, dev, torch.arange(len(dec)), crops, lambda x: x,
                      contextlib.nullcontext, batch_size).tolist()
    n = max(1.0, sums[3])
    return {"loss": sums[0] / n, "top1": sums[1] / n, "top5": sums[2] / n, "n": int(sums[3])}


# ============================================================================ distributed


class _Dist:
    """Single-process or torchrun/DDP context (WORLD_SIZE/RANK/LOCAL_RANK)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0) if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)) or 0) if self.world > 1 else 0
        self.device = device
        self.owned = False
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
                self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 and give its result (or its error) to every rank."""
        res: Any = None
        if self.main:
            try:
                res = ("ok", fn())
            except ZFReproError as exc:
                res = ("err", type(exc).__name__, str(exc))
                if self.world == 1:
                    raise
            except BaseException as exc:
                if self.world > 1:
                    self.broadcast(("err", "RuntimeError", f"rank 0 failed: {type(exc).__name__}: {exc}"))
                raise
        res = self.broadcast(res)
        if res[0] == "err":
            cls = {"DataError": DataError, "ConfigError": ConfigError}.get(res[1], CheckpointError)
            if res[1] == "RuntimeError":
                raise RuntimeError(res[2])
            raise cls(res[2])
        return res[1]

    def main_first(self, fn: Callable[[], Any]) -> Any:
        """Rank 0 runs ``fn`` first (e.g. fills a cache), then the others run it; only success or
        the error travels between ranks, never the (possibly large) result."""
        out: Any = None

        def first() -> None:
            nonlocal out
            out = fn()
        self.on_main(first)
        return out if self.main else fn()


# ============================================================================ snapshots


def list_snapshots(run_dir: str | Path) -> dict[int, Path]:
    """The epoch snapshots of a run: ``{epoch: run_dir/epoch_NNN.pt}`` in epoch order (not ``latest.pt``)."""
    run_dir = Path(run_dir)
    out: dict[int, Path] = {}
    if run_dir.is_dir():
        for p in run_dir.glob("epoch_*.pt"):
            try:
                out[int(p.stem.split("_", 1)[1])] = p
            except ValueError:
                continue
    return dict(sorted(out.items()))


def _snapshot_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


class RunStorageError(StorageError, CheckpointError):
    """A snapshot, metrics or profile file of a run cannot be written (a :class:`StorageError`; also a
    :class:`CheckpointError`, as it was before storage faults had their own type)."""


def _disk_error(exc: OSError, path: Path, what: str) -> CheckpointError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return RunStorageError(
            f"disk full: cannot write {what} {path} ({exc.strerror or exc}); free space on the disk holding "
            f"{path.parent} and rerun the same command to resume (the snapshots already there are intact)")
    return RunStorageError(f"cannot write {what} {path} ({exc.strerror or exc}): check that {path.parent} "
                           "is writable, then rerun the same command to resume")


def _save_snapshot(payload: dict[str, Any], path: Path) -> None:
    try:
        _io.atomic_save(payload, path)
    except OSError as exc:
        raise _disk_error(exc, path, "snapshot") from None


def _point_latest(src: Path, payload: dict[str, Any]) -> None:
    """Make ``latest.pt`` the same snapshot as ``src`` (an atomic hard link, else a second write)."""
    dst = src.parent / _LATEST
    tmp = src.parent / f".{_LATEST}.{os.getpid()}.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
        return
    except OSError:
        tmp.unlink(missing_ok=True)
    _save_snapshot(payload, dst)


def _read_snapshot(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read snapshot {path} ({type(exc).__name__}): it is corrupt or not a "
                              f"zfrepro snapshot; move it out of {path.parent}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a zfrepro training snapshot (no state_dict): "
                              f"move it out of {path.parent}")
    return payload


def _spec_text(spec: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items() if k != "arch")


def _check_belongs(path: Path, payload: dict[str, Any], prof: Profile, arch: str,
                   data_tag: str | None = None) -> None:
    spec = payload.get("spec") or {}
    theirs = spec.get("arch") or payload.get("arch")
    if theirs != arch:
        raise CheckpointError(
            f"{path} is a snapshot of {theirs or 'an unknown architecture'} ({_spec_text(spec) or 'no spec'}), "
            f"not of this {arch} run: it does not belong in {path.parent}; move it elsewhere "
            "(nothing was overwritten) or use another --out-dir")
    if "epoch" not in payload or "profile" not in payload:
        raise CheckpointError(f"{path} is a model checkpoint, not a training snapshot (no epoch/profile): "
                              f"move it out of {path.parent} (nothing was overwritten)")
    mine, stored = _identity(prof), payload["profile"]
    diff = [k for k in mine if k in stored and _norm(stored[k]) != _norm(mine[k])]
    if data_tag is not None and "data_tag" in payload and payload["data_tag"] != data_tag:
        raise CheckpointError(f"{path} was trained on another dataset (data tag {payload['data_tag'] or 'Imagenette'}, "
                              f"this run: {data_tag or 'Imagenette'}); this run would overwrite it: use another "
                              "--out-dir or move the old run away (nothing was overwritten)")
    if diff:
        shown = ", ".join(f"{k}={stored[k]!r} (this run: {mine[k]!r})" for k in diff[:4])
        raise CheckpointError(f"{path} was trained with another configuration ({shown}); this run would "
                              "overwrite it: use another --out-dir or move the old run away (nothing was overwritten)")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _refuse_foreign_dir(run_dir: Path, prof: Profile, arch: str, data_tag: str) -> None:
    """Refuse to train into an existing, non-empty ``run_dir`` that is not a run of this identity
    (profile fields, arch, dataset): nothing in it is written or deleted. A folder with snapshots
    is judged by them (:func:`_check_belongs`); one without, by its ``profile.json``."""
    if not run_dir.is_dir():
        return
    entries = sorted(p.name for p in run_dir.iterdir()
                     if p.name != ".lock" and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if not entries or list_snapshots(run_dir) or (run_dir / _LATEST).is_file():
        return
    why = "no profile.json"
    try:
        info = json.loads((run_dir / "profile.json").read_text()) if "profile.json" in entries else None
    except (OSError, ValueError):
        info, why = None, "an unreadable profile.json"
    if isinstance(info, dict) and isinstance(info.get("profile"), dict):
        stored, mine = info["profile"], _identity(prof)
        diff = [k for k in mine if k in stored and _norm(stored[k]) != _norm(mine[k])]
        if info.get("arch") != arch:
            diff.insert(0, "arch")
        if "data_tag" in info and info["data_tag"] != data_tag:
            diff.append("dataset")
        if not diff:
            return  # this run, killed before its first snapshot: start it again
        why = f"a run with another {', '.join(diff[:4])}"
    elif info is not None:
        why = "a profile.json that is not a zfrepro run's"
    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    raise CheckpointError(f"{run_dir} is not empty ({shown}) and holds {why}, not this run: choose an empty "
                          "or new --out-dir, or move its files away (nothing was written or deleted)")


@dataclass
class _RunState:
    snapshot: str | None  # path of the snapshot to resume from
    complete: bool


def _inspect_run(run_dir: Path, prof: Profile, arch: str, resume: bool, data_tag: str | None = None) -> _RunState:
    """Check every snapshot in ``run_dir`` belongs to this run; pick the newest (resume) or
    delete this run's old files (no resume). Called on rank 0 under the run lock."""
    for tmp in run_dir.glob(".*.tmp"):          # leftovers of a killed writer
        tmp.unlink(missing_ok=True)
    files = list(list_snapshots(run_dir).values())
    if (run_dir / _LATEST).is_file():
        files.append(run_dir / _LATEST)
    best: tuple[tuple[int, int], Path] | None = None
    for p in files:
        payload = _read_snapshot(p)
        _check_belongs(p, payload, prof, arch, data_tag)
        key = (int(payload["epoch"]), int(payload.get("batch", 0)))
        if best is None or key > best[0]:
            best = (key, p)
        del payload
    if not resume:
        if files or (run_dir / "metrics.csv").exists():
            print(f"zfrepro: --no-resume: deleting the previous snapshots of {run_dir}", file=sys.stderr)
        for p in files:
            p.unlink(missing_ok=True)
        (run_dir / "metrics.csv").unlink(missing_ok=True)
        return _RunState(None, False)
    if best is None:
        return _RunState(None, False)
    (epoch, batch), path = best
    complete = epoch >= prof.epochs and batch == 0
    if complete and not (run_dir / _snapshot_name(prof.epochs)).is_file():
        payload = _read_snapshot(path)
        _save_snapshot(dict(payload), run_dir / _snapshot_name(prof.epochs))
    return _RunState(str(path), complete)


class _RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``: two trainers never write one run (released on kill)."""

    def __init__(self, run_dir: Path):
        self.fh: Any = None
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.fh = open(run_dir / ".lock", "a+")
        except OSError as exc:  # a read-only or full runs disk
            raise _disk_error(exc, run_dir / ".lock", "the run lock") from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise CheckpointError(f"{run_dir} is being trained by another process: wait for it to finish "
                                  "or use another --out-dir") from None

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


# ============================================================================ metrics


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _write_metrics(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    text = ",".join(METRIC_COLUMNS) + "\n" + "".join(
        ",".join(_fmt(r.get(c, "")) for c in METRIC_COLUMNS) + "\n" for r in rows)
    try:
        _io.atomic_write_text(text, path)
    except OSError as exc:
        raise _disk_error(exc, path, "metrics") from None


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    try:
        with open(path, "a", newline="") as fh:
            fh.write(",".join(_fmt(row.get(c, "")) for c in METRIC_COLUMNS) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _disk_error(exc, path, "metrics") from None


def read_metrics(run_dir: str | Path) -> "Any":
    """``run_dir/metrics.csv`` as a pandas DataFrame (one row per finished epoch; accuracies as
    fractions). Readable while the run trains."""
    import pandas as pd

    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: train first (zfrepro train) or fix the run directory")
    return pd.read_csv(path)


# ============================================================================ training


@dataclass
class _Acc:
    loss: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    lr: float = 0.0


def train(profile: str | Profile = "default", *, arch: str = "zfnet", data_root: str | Path | None = None,
          device: str | torch.device = "auto", out_dir: str | Path | None = None, resume: bool = True,
          amp: bool | None = None, snapshot_every: int = 0, progress: bool = True, **overrides: Any) -> Path:
    """Train ``arch`` under ``profile`` (a name or Profile; ``overrides`` are profile fields) and
    return the run directory (see the module docstring for its layout).

    ``resume`` continues from the newest snapshot of the same run (bit-exact on the CPU);
    ``resume=False`` deletes that run's old snapshots first. A finished run returns at once.
    ``amp`` (mixed precision, bf16 where supported) defaults to on for CUDA, off for the CPU;
    ``snapshot_every`` > 0 also writes ``latest.pt`` every that many batches within an epoch.
    Under ``torchrun`` it trains with DDP (gloo on CPU, nccl on CUDA); rank 0 writes the files.
    """
    prof, arch = resolve_profile(profile, arch, **overrides)
    run_dir = Path(out_dir).expanduser() if out_dir is not None else \
        _io.runs_dir() / prof.name / _run_name(prof, arch, data_root)
    dist = _Dist(resolve_device(device))
    lock: _RunLock | None = None
    try:
        data_tag = _data_tag(data_root)
        dist.on_main(lambda: _refuse_foreign_dir(run_dir, prof, arch, data_tag))

        def take_lock() -> None:
            nonlocal lock
            lock = _RunLock(run_dir)
        dist.on_main(take_lock)
        state: _RunState = dist.on_main(lambda: _inspect_run(run_dir, prof, arch, resume, data_tag))
        if state.complete:
            if dist.main and progress:
                print(f"zfrepro: {run_dir} is already trained ({prof.epochs} epochs)", file=sys.stderr)
            return run_dir
        cuda_devs = [dist.device.index or 0] if dist.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devs):  # leave the caller's RNG state alone
            _train_loop(prof, arch, run_dir, data_root, dist, state, amp, max(0, int(snapshot_every)), progress,
                        data_tag)
        return run_dir
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def _rng_state(dev: torch.device) -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if dev.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(dev)
    return st


def _set_rng_state(st: dict[str, Any], dev: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if dev.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], dev)


def _train_loop(prof: Profile, arch: str, run_dir: Path, data_root: str | Path | None, dist: _Dist,
                state: _RunState, amp: bool | None, snapshot_every: int, progress: bool,
                data_tag: str = "") -> None:
    from tqdm.auto import tqdm

    dev = dist.device
    show = progress and dist.main
    keep_freed_memory()  # reuse freed step buffers instead of re-faulting them (1.16-1.34x on the CPU)
    world, rank = dist.world, dist.rank
    if prof.batch_size % world:
        raise ConfigError(f"batch_size {prof.batch_size} is not divisible by the {world} processes: "
                          "the global batch is split evenly across ranks")
    d: _Data = dist.main_first(lambda: _prepare_data(prof, data_root, show))
    steps = steps_per_epoch(len(d.train), prof.batch_size)
    if len(d.train) < prof.batch_size and world > 1:
        raise ConfigError(f"{len(d.train)} training images are fewer than one batch of {prof.batch_size}")
    torch.manual_seed(prof.seed)
    tr = _Trainer(prof, arch, len(d.classes), dev, amp=amp, steps=steps)
    if world > 1:
        torch.manual_seed(_epoch_seed(prof.seed, -1 - rank))  # own dropout stream per rank

    metrics: list[dict[str, Any]] = []
    start_epoch, start_batch, acc = 1, 0, _Acc()
    if state.snapshot is not None:
        snap = torch.load(state.snapshot, map_location="cpu", weights_only=True)
        tr.raw.load_state_dict(snap["state_dict"])
        tr.opt.load_state_dict(snap["optimizer"])
        tr.sched.load_state_dict(snap["scheduler"])
        if tr.scaler is not None and snap.get("scaler"):
            tr.scaler.load_state_dict(snap["scaler"])
        rngs = snap["rng"]["ranks"]
        _set_rng_state(rngs[rank] if len(rngs) == world else rngs[0], dev)
        if len(rngs) != world and world > 1:
            torch.manual_seed(_epoch_seed(prof.seed, 1000 * int(snap["epoch"]) + int(snap["batch"]) + rank))
        metrics = [dict(r) for r in snap["metrics"]]
        start_epoch, start_batch = int(snap["epoch"]) + 1, int(snap["batch"])
        p = snap.get("partial") or {}
        if dist.main:  # the (all-reduced) partial sums live on rank 0
            acc = _Acc(float(p.get("loss", 0.0)), float(p.get("correct", 0.0)), int(p.get("seen", 0)),
                       float(p.get("seconds", 0.0)), float(p.get("lr", 0.0)))
        if show:
            where = f"epoch {start_epoch} batch {start_batch}" if start_batch else f"the end of epoch {start_epoch - 1}"
            print(f"zfrepro: resuming {run_dir} from {where} ({Path(state.snapshot).name})", file=sys.stderr)
        del snap
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        tr.model = DDP(tr.raw, device_ids=[dev.index] if dev.type == "cuda" else None)

    if dist.main:
        _write_profile_json(run_dir, prof, arch, d, dev, world, tr.amp, data_tag)
        _write_metrics(run_dir / "metrics.csv", metrics)

    snap_epochs = sorted({e for e in prof.snapshot_epochs if 1 <= e <= prof.epochs} | {prof.epochs})
    val_idx = torch.tensor_split(torch.arange(len(d.val)), world)[rank]
    shard = prof.batch_size // world

    def payload(epoch_done: int, batch_done: int, partial: _Acc, rngs: list[Any]) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "spec": _models.model_spec(tr.raw),
            "state_dict": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tr.raw.state_dict().items()},
            "arch": arch, "profile": prof.as_dict(), "classes": list(d.classes), "data_tag": data_tag,
            "epoch": epoch_done, "batch": batch_done, "steps_per_epoch": steps,
            "optimizer": tr.opt.state_dict(), "scheduler": tr.sched.state_dict(),
            "scaler": tr.scaler.state_dict() if tr.scaler is not None else None,
            "rng": {"ranks": rngs,
                    "data_seed": _epoch_seed(prof.seed, epoch_done + (1 if batch_done else 0))},
            "metrics": [dict(r) for r in metrics],
            "partial": {"loss": partial.loss, "correct": partial.correct, "seen": partial.seen,
                        "seconds": partial.seconds, "lr": partial.lr},
            "world_size": world, "device": str(dev), "amp": tr.amp,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def write(paths: list[Path], epoch_done: int, batch_done: int, partial: _Acc) -> None:
        rngs = dist.all_gather(_rng_state(dev))   # collective: every rank's dropout RNG state

        def do() -> None:
            pl = payload(epoch_done, batch_done, partial, rngs)
            _save_snapshot(pl, paths[0])
            if paths[0].name != _LATEST:
                _point_latest(paths[0], pl)
        dist.on_main(do)

    for epoch in range(start_epoch, prof.epochs + 1):
        skip = start_batch if epoch == start_epoch else 0
        if not skip:
            acc = _Acc()
        run_loss = torch.tensor(acc.loss, dtype=torch.float64, device=dev)
        run_correct = torch.tensor(acc.correct, dtype=torch.float64, device=dev)
        seen_here = 0
        g = torch.Generator().manual_seed(_epoch_seed(prof.seed, epoch))
        batches = _data.iterate_batches(d.train, d.mean, prof, train=True, generator=g, device=dev)
        bar = tqdm(total=steps, initial=skip, desc=f"epoch {epoch}/{prof.epochs}", unit="batch",
                   disable=not show, file=sys.stderr, mininterval=1.0, dynamic_ncols=True, leave=True)
        t0 = time.perf_counter()
        t_img = None

        def totals() -> torch.Tensor:
            # this rank's sums (rank 0 also holds the restored partial sums of a resumed epoch)
            return torch.stack([run_loss, run_correct,
                                torch.tensor(float(acc.seen + seen_here), dtype=torch.float64, device=dev)])
        try:
            for b, (x, y) in enumerate(batches):
                if b < skip:
                    continue        # same order and augmentation as an uninterrupted epoch
                if world > 1:
                    x, y = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]
                if t_img is None:
                    t_img = time.perf_counter()
                loss_n, correct, acc.lr = tr.step(x, y)
                run_loss += loss_n
                run_correct += correct
                seen_here += y.shape[0]
                tr.sched.after_batch((epoch - 1) * steps + b + 1)
                bar.update(1)
                if show and (b % 5 == 4 or b + 1 == steps):
                    dt = time.perf_counter() - t_img
                    bar.set_postfix({"img/s": f"{seen_here * world / max(dt, 1e-9):.0f}",
                                     "loss": f"{run_loss.item() / max(1, acc.seen + seen_here):.3f}"},
                                    refresh=False)
                if snapshot_every and (b + 1) % snapshot_every == 0 and b + 1 < steps:
                    sums = dist.all_reduce(totals())
                    part = _Acc(float(sums[0]), float(sums[1]), int(sums[2]),
                                acc.seconds + time.perf_counter() - t0, acc.lr)
                    write([run_dir / _LATEST], epoch - 1, b + 1, part)
        finally:
            batches.close()
            bar.close()
        # ---- end of epoch: all-reduce the training sums, evaluate, schedule, record, snapshot
        sums = dist.all_reduce(totals())
        seen = int(sums[2])
        # centre crop every epoch (10 crops cost ~10 forward passes per image); the profile's crops at the end
        crops = prof.eval_crops if epoch == prof.epochs else 1
        ev = _eval_sums(tr.raw, d.val, d.mean, prof, dev, val_idx, crops, tr.prepare, tr.autocast)
        ev = dist.all_reduce(ev).tolist()
        nval = max(1.0, ev[3])
        val_loss = ev[0] / nval
        tr.sched.after_epoch(val_loss, epoch * steps)
        row = {"epoch": epoch, "train_loss": float(sums[0]) / max(1, seen), "train_top1": float(sums[1]) / max(1, seen),
               "val_loss": val_loss, "val_top1": ev[1] / nval, "val_top5": ev[2] / nval, "val_crops": crops,
               "lr": float(acc.lr),
               "seconds": round(acc.seconds + time.perf_counter() - t0, 3)}
        if not math.isfinite(row["train_loss"]):
            raise ConfigError(f"training diverged at epoch {epoch} (loss {row['train_loss']}): "
                              f"lower lr (now {prof.lr}) or check the data")
        metrics.append(row)
        if dist.main:
            _append_metrics(run_dir / "metrics.csv", row)
            if show:
                print(f"zfrepro: epoch {epoch}/{prof.epochs} train loss {row['train_loss']:.4f} "
                      f"top-1 {row['train_top1']:.3f} | val top-1 {row['val_top1']:.3f} top-5 {row['val_top5']:.3f}"
                      f" ({crops} crop{'s' if crops > 1 else ''}) | lr {row['lr']:.3g}"
                      f" | {row['seconds']:.0f} s", file=sys.stderr)
        target = run_dir / (_snapshot_name(epoch) if epoch in snap_epochs else _LATEST)
        write([target], epoch, 0, _Acc())
        start_batch = 0
    dist.barrier()


def _write_profile_json(run_dir: Path, prof: Profile, arch: str, d: _Data, dev: torch.device,
                        world: int, amp: bool, data_tag: str = "") -> None:
    info = {"profile": prof.as_dict(), "arch": arch, "overrides": _changed_fields(prof),
            "data_root": str(d.root), "data_tag": data_tag, "classes": d.classes, "num_classes": len(d.classes),
            "train_images": len(d.train), "val_images": len(d.val),
            "steps_per_epoch": steps_per_epoch(len(d.train), prof.batch_size),
            "device": str(dev), "world_size": world, "amp": amp, "torch": torch.__version__}
    try:
        _io.atomic_write_json(info, run_dir / "profile.json")
    except OSError as exc:
        raise _disk_error(exc, run_dir / "profile.json", "profile") from None


# ============================================================================ loading


def load_trained(profile: str | Profile = "default", arch: str = "zfnet", epoch: int | None = None, *,
                 data_root: str | Path | None = None, device: str | torch.device = "cpu",
                 **overrides: Any) -> nn.Module:
    """The network of a finished run (eval mode, on ``device``), training it first (on the best
    available device, resuming if interrupted) when the run is not complete. ``epoch=None`` → the
    final epoch; an int → that snapshot. Once trained, a call only loads the file."""
    prof, arch = resolve_profile(profile, arch, **overrides)
    device = resolve_device(device)
    run_dir = _io.runs_dir() / prof.name / _run_name(prof, arch, data_root)
    snaps = list_snapshots(run_dir)
    if prof.epochs not in snaps:  # the final snapshot is written last: its presence means complete
        # say so before a long training starts: what, for how long, and how to pick the quick profile instead
        per_epoch = {"smoke": (5, 15), "default": (77, 127)}.get(prof.name)  # s/epoch measured on 2 CPU cores
        done = max(snaps) if snaps else 0
        left = prof.epochs - done
        if per_epoch:
            lo, hi = (left * t / 60 for t in per_epoch)
            how_long = f"about {lo:.0f}-{hi:.0f} min" if hi >= 2 else "under a minute" if hi < 1 else "about a minute"
            how_long += " on a 2-core CPU" + (", much less on this GPU" if torch.cuda.is_available() else "")
        else:
            how_long = "no measured estimate for this profile"
        resume = f", resuming after epoch {done}" if done else ""
        smoke = "" if prof.name == "smoke" else \
            "; for a first read set profile = \"smoke\" in the parameters cell (or --profile smoke): about a minute"
        print(f"zfrepro: no trained {arch} network for profile {prof.name} yet: training it first, {left} epochs"
              f"{resume} ({how_long}) into {run_dir}{smoke}", file=sys.stderr, flush=True)
        train(prof, arch=arch, data_root=data_root, device="auto")
        snaps = list_snapshots(run_dir)
    want = prof.epochs if epoch is None else int(epoch)
    if want not in snaps:
        have = ", ".join(str(e) for e in snaps) or "none"
        raise CheckpointError(f"no snapshot of epoch {want} in {run_dir} (available epochs: {have}); "
                              f"snapshots are written at snapshot_epochs={list(prof.snapshot_epochs)} and the last epoch")
    model = _models.load_checkpoint(snaps[want], map_location=device)
    spec = _models.model_spec(model)
    if spec.get("arch") != arch:
        raise CheckpointError(f"{snaps[want]} is a snapshot of {spec.get('arch')}, not {arch}: "
                              f"it does not belong in {run_dir}; move it elsewhere")
    _set_dropout(model, prof.dropout)
    return model.to(device).eval()


# ============================================================================ command line


def _parse_sets(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got {item!r} (e.g. --set epochs=10)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (used by ``python -m zfrepro.train`` and ``zfrepro train``)."""
    parser.add_argument("--profile", default="default", help="profile name: smoke, default or paper (default: default)")
    parser.add_argument("--arch", default="zfnet", help="zfnet (Fig. 3) or alexnet (the paper's Krizhevsky replica)")
    parser.add_argument("--data-root", default=None, help="ImageFolder root with train/ and val/ (default: $ZFREPRO_DATA)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--out-dir", default=None, help="run directory (default: runs/<profile>/<arch>[-hash])")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over: delete this run's previous snapshots")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set epochs=10 --set renorm=false (repeatable)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on for CUDA, off for the CPU)")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                        help="also write latest.pt every N batches within an epoch (cheap kill/resume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def run_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`train` from parsed :func:`add_train_arguments` options; returns the run directory."""
    sets = _parse_sets(args.overrides)
    arch = args.arch
    if "arch" in sets:  # --set arch=alexnet, as the docstring of resolve_profile allows
        if arch not in ("zfnet", sets["arch"]):
            raise ConfigError(f"arch given twice (--arch {arch} and --set arch={sets['arch']}): give it once")
        arch = sets.pop("arch")
    return train(args.profile, arch=arch, data_root=args.data_root, device=args.device,
                 out_dir=args.out_dir, resume=args.resume, amp=args.amp, snapshot_every=args.snapshot_every,
                 progress=not args.quiet, **sets)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zfrepro.train --profile NAME [...]``; returns the exit status (0 ok, 2 bad input,
    130 interrupted). Prints the run directory on success."""
    parser = add_train_arguments(argparse.ArgumentParser(
        prog="python -m zfrepro.train", description="Train ZFNet/AlexNet as in §3 of Zeiler & Fergus (2013)."))
    args = parser.parse_args(argv)
    try:
        run_dir = run_from_args(args)
    except ZFReproError as exc:
        print(f"zfrepro train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zfrepro train: interrupted; rerun the same command to resume from the last snapshot",
              file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
