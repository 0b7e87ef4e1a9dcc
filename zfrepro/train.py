"""Training as in §3 of the paper, scaled by profile, with snapshots, exact resume and DDP.

The recipe (all per :class:`~zfrepro.config.Profile`): SGD with momentum, mini-batches of
``batch_size``, learning rate ``lr`` under a schedule (``plateau``: ×0.1 when the validation
loss plateaus, the paper's manual annealing; ``onecycle``; ``cosine``; ``constant``; optional
linear warm-up), dropout, weight decay, label smoothing, and after *every* update the paper's
filter renormalisation (:func:`renormalize_filters`): each convolutional filter whose RMS
exceeds ``renorm_radius`` (10⁻¹) is rescaled to exactly that RMS.

A run's directory, snapshots, lock and metrics are :mod:`zfrepro.runs`; evaluation is
:mod:`zfrepro.evaluation`; the process group is :mod:`zfrepro.distributed`; the command line is
``zfrepro train`` (:mod:`zfrepro.cli`). What is here: the parameter groups, the schedule, the
:class:`Trainer` (one step: forward, backward, SGD, renormalisation) and the epoch loop.

Resume (the default) continues from the newest snapshot and reproduces an uninterrupted run
bit for bit on the CPU: data order and augmentation come from a generator seeded by
``(seed, epoch)``, dropout's global RNG state is saved and restored.

Multi-process data parallel training uses PyTorch's launcher and DDP::

    torchrun --standalone --nproc_per_node=2 -m zfrepro train --profile smoke

Every rank draws the same globally shuffled, augmented batch of ``batch_size`` images and
trains on its contiguous slice, so the update equals the single-process one up to float
rounding (dropout masks differ: each rank has its own dropout RNG stream).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as _data
from . import datasets as _datasets
from . import models as _models
from . import runs as _runs
from .config import Profile, resolve_profile
from .devices import keep_freed_memory, resolve_device
from .distributed import Distributed
from .evaluation import eval_sums
from .errors import CheckpointError, ConfigError, DataError
from .io import atomic_write_json
from .runs import (LATEST, SNAPSHOT_FORMAT, RunLock, RunState, append_metrics, changed_fields,
                   disk_error, inspect_run, list_snapshots, point_latest, refuse_foreign_dir,
                   save_snapshot, snapshot_name, write_metrics)

__all__ = ["train", "Trainer", "prepare_data", "TrainingData", "renormalize_filters", "load_trained", "build_network",
           "steps_per_epoch"]

#: ReduceLROnPlateau settings of the ``plateau`` schedule (the paper anneals "manually" by ×0.1).
PLATEAU_FACTOR, PLATEAU_PATIENCE, PLATEAU_MIN_SCALE = 0.1, 3, 1e-3

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
class TrainingData:
    train: _data.DecodedSplit
    val: _data.DecodedSplit
    mean: torch.Tensor
    classes: list[str]
    root: Path


def prepare_data(prof: Profile, data_root: str | Path | None, progress: bool) -> TrainingData:
    root = _datasets.resolve_root(data_root)
    train_ds = _datasets.image_folder(root, "train")
    val_ds = _datasets.image_folder(root, "val")   # both splits checked before any decoding
    if train_ds.classes != val_ds.classes:
        only_train = sorted(set(train_ds.classes) - set(val_ds.classes))
        only_val = sorted(set(val_ds.classes) - set(train_ds.classes))
        raise DataError(f"{root}/train and {root}/val have different class folders (only in train: "
                        f"{', '.join(only_train[:5]) or 'none'}; only in val: {', '.join(only_val[:5]) or 'none'}): "
                        "both splits need the same class folders")
    tr = _data.decode_split(train_ds.subset_per_class(prof.train_per_class), prof.resize, progress=progress)
    va = _data.decode_split(val_ds.subset_per_class(prof.val_per_class), prof.resize, progress=progress)
    return TrainingData(tr, va, _data.pixel_mean(tr), list(train_ds.classes), root)


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


class Trainer:
    """Model, optimiser, schedule and one training step: what :func:`train` and the benchmark run."""

    def __init__(self, prof: Profile, arch: str, num_classes: int, device: torch.device,
                 amp: bool | None = None, steps: int = 1, channels_last: bool = True):
        self.prof, self.arch, self.device = prof, arch, device
        self.raw = build_network(prof, arch, num_classes).to(device)
        # channels-last on every device: on CPU it makes max pooling with switches several times faster
        # and the whole step faster (benchmarks/bench_train_step.py); the same maths, other rounding
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
        _runs.run_dir_of(prof, arch, data_root)
    dist = Distributed(resolve_device(device))
    lock: RunLock | None = None
    try:
        data_tag = _datasets.data_tag(data_root)
        dist.on_main(lambda: refuse_foreign_dir(run_dir, prof, arch, data_tag))

        def take_lock() -> None:
            nonlocal lock
            lock = RunLock(run_dir)
        dist.on_main(take_lock)
        state: RunState = dist.on_main(lambda: inspect_run(run_dir, prof, arch, resume, data_tag))
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


def _train_loop(prof: Profile, arch: str, run_dir: Path, data_root: str | Path | None, dist: Distributed,
                state: RunState, amp: bool | None, snapshot_every: int, progress: bool,
                data_tag: str = "") -> None:
    from tqdm.auto import tqdm

    dev = dist.device
    show = progress and dist.main
    keep_freed_memory()  # reuse freed step buffers instead of re-faulting them (benchmarks/bench_malloc.py)
    world, rank = dist.world, dist.rank
    if prof.batch_size % world:
        raise ConfigError(f"batch_size {prof.batch_size} is not divisible by the {world} processes: "
                          "the global batch is split evenly across ranks")
    d: TrainingData = dist.main_first(lambda: prepare_data(prof, data_root, show))
    steps = steps_per_epoch(len(d.train), prof.batch_size)
    if len(d.train) < prof.batch_size and world > 1:
        raise ConfigError(f"{len(d.train)} training images are fewer than one batch of {prof.batch_size}")
    torch.manual_seed(prof.seed)
    tr = Trainer(prof, arch, len(d.classes), dev, amp=amp, steps=steps)
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
        write_metrics(run_dir / "metrics.csv", metrics)

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
            save_snapshot(pl, paths[0])
            if paths[0].name != LATEST:
                point_latest(paths[0], pl)
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
                    write([run_dir / LATEST], epoch - 1, b + 1, part)
        finally:
            batches.close()
            bar.close()
        # ---- end of epoch: all-reduce the training sums, evaluate, schedule, record, snapshot
        sums = dist.all_reduce(totals())
        seen = int(sums[2])
        # centre crop every epoch (10 crops cost ~10 forward passes per image); the profile's crops at the end
        crops = prof.eval_crops if epoch == prof.epochs else 1
        ev = eval_sums(tr.raw, d.val, d.mean, prof, dev, val_idx, crops, tr.prepare, tr.autocast)
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
            append_metrics(run_dir / "metrics.csv", row)
            if show:
                print(f"zfrepro: epoch {epoch}/{prof.epochs} train loss {row['train_loss']:.4f} "
                      f"top-1 {row['train_top1']:.3f} | val top-1 {row['val_top1']:.3f} top-5 {row['val_top5']:.3f}"
                      f" ({crops} crop{'s' if crops > 1 else ''}) | lr {row['lr']:.3g}"
                      f" | {row['seconds']:.0f} s", file=sys.stderr)
        target = run_dir / (snapshot_name(epoch) if epoch in snap_epochs else LATEST)
        write([target], epoch, 0, _Acc())
        start_batch = 0
    dist.barrier()


def _write_profile_json(run_dir: Path, prof: Profile, arch: str, d: TrainingData, dev: torch.device,
                        world: int, amp: bool, data_tag: str = "") -> None:
    info = {"profile": prof.as_dict(), "arch": arch, "overrides": changed_fields(prof),
            "data_root": str(d.root), "data_tag": data_tag, "classes": d.classes, "num_classes": len(d.classes),
            "train_images": len(d.train), "val_images": len(d.val),
            "steps_per_epoch": steps_per_epoch(len(d.train), prof.batch_size),
            "device": str(dev), "world_size": world, "amp": amp, "torch": torch.__version__}
    try:
        atomic_write_json(info, run_dir / "profile.json")
    except OSError as exc:
        raise disk_error(exc, run_dir / "profile.json", "profile") from None


# ============================================================================ loading


def load_trained(profile: str | Profile = "default", arch: str = "zfnet", epoch: int | None = None, *,
                 data_root: str | Path | None = None, device: str | torch.device = "cpu",
                 **overrides: Any) -> nn.Module:
    """The network of a finished run — **training it first when there is none: tens of minutes for
    ``default`` on a laptop CPU** (on the best available device, resuming if interrupted; it says so
    before it starts). Eval mode, on ``device``. ``epoch=None`` → the final epoch; an int → that
    snapshot. Once trained, a call only loads the file."""
    prof, arch = resolve_profile(profile, arch, **overrides)
    device = resolve_device(device)
    run_dir = _runs.run_dir_of(prof, arch, data_root)
    snaps = list_snapshots(run_dir)
    if prof.epochs not in snaps:  # the final snapshot is written last: its presence means complete
        # say so before a long training starts: what, for how long, and how to pick the quick profile instead
        per_epoch = {"smoke": (5, 15), "default": (45, 65)}.get(prof.name)  # s/epoch measured on 2 CPU cores
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
