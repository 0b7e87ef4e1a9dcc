"""A training run on disk: its name, snapshots, lock and metrics (what training, model loading and the
notebooks share).

Run directory (default ``runs_dir()/<profile>/<arch>``, with a ``-<hash>`` suffix when fields are
overridden and a ``-data<hash>`` suffix for a dataset other than Imagenette, see :func:`run_dir_for`)::

    profile.json        the full profile, arch, overrides, data root (rewritten at each start)
    metrics.csv         one row per epoch, appended and flushed as training runs
    epoch_001.pt ...    snapshots at the profile's snapshot_epochs within epochs, and the last epoch
    latest.pt           the newest state: end of the last epoch (a hard link to epoch_NNN.pt when
                        that epoch has one), or mid-epoch with snapshot_every; resume reads it
    .lock               flock held by the training process (released when it dies)

Every snapshot is a ``torch.save`` dict, written atomically (a killed run leaves only whole files) and
loadable by :func:`zfrepro.models.load_checkpoint` (keys ``spec`` and ``state_dict``); it also holds
``optimizer``, ``scheduler``, ``scaler``, ``rng`` (CPU/CUDA generator states per rank, and the
data-order seed), ``profile``, ``arch``, ``epoch`` (epochs completed), ``batch`` (batches done in the
next epoch, 0 at an epoch end), ``metrics``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import io as _io
from .config import PROFILES, Profile, resolve_profile
from .datasets import data_tag
from .errors import CheckpointError, StorageError

__all__ = ["run_dir_for", "run_dir_of", "run_name", "list_snapshots", "read_metrics", "snapshot_name", "RunState",
           "RunLock", "RunBusyError", "RunStorageError", "METRIC_COLUMNS", "SNAPSHOT_FORMAT", "LATEST"]

METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_crops", "lr", "seconds")
SNAPSHOT_FORMAT = 1
LATEST = "latest.pt"
FIELDS_IGNORED = ("name", "deviations", "arch", "num_workers")  # not part of a run's identity


# ============================================================================ names


def identity(prof: Profile) -> dict[str, Any]:
    """The fields that determine a run's results."""
    return {k: v for k, v in prof.as_dict().items() if k not in FIELDS_IGNORED}


def changed_fields(prof: Profile) -> dict[str, Any]:
    """Fields of ``prof`` that differ from its named base profile (all non-defaults for a custom name)."""
    base = PROFILES.get(prof.name) or Profile(name=prof.name)
    mine, theirs = identity(prof), identity(base)
    return {k: v for k, v in mine.items() if theirs.get(k) != v}


def run_name(prof: Profile, arch: str, data_root: str | Path | None = None) -> str:
    changed = changed_fields(prof)
    name = arch
    if changed:
        name += "-" + hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return name + data_tag(data_root)


def run_dir_of(prof: Profile, arch: str, data_root: str | Path | None = None) -> Path:
    """The directory of the run of a resolved profile: ``runs_dir()/<profile>/<run_name>``."""
    return _io.runs_dir() / prof.name / run_name(prof, arch, data_root)


def run_dir_for(profile: str | Profile = "default", arch: str = "zfnet", *, data_root: str | Path | None = None,
                **overrides: Any) -> Path:
    """Where ``train(profile, arch=arch, data_root=data_root, **overrides)`` writes:
    ``runs_dir()/<profile>/<arch>``, plus ``-<8 hex digits>`` (a hash of the overridden fields) when
    any field differs from the named profile, plus ``-data<8 hex digits>`` for a dataset other than
    Imagenette, so that different configurations and datasets never share a directory."""
    prof, arch = resolve_profile(profile, arch, **overrides)
    return run_dir_of(prof, arch, data_root)


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


def snapshot_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


class RunBusyError(CheckpointError):
    """Another process holds the run's lock (it is training that run now)."""


class RunStorageError(StorageError, CheckpointError):
    """A snapshot, metrics or profile file of a run cannot be written (a :class:`StorageError`; also a
    :class:`CheckpointError`, as it was before storage faults had their own type)."""


def disk_error(exc: OSError, path: Path, what: str) -> CheckpointError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return RunStorageError(
            f"disk full: cannot write {what} {path} ({exc.strerror or exc}); free space on the disk holding "
            f"{path.parent} and rerun the same command to resume (the snapshots already there are intact)")
    return RunStorageError(f"cannot write {what} {path} ({exc.strerror or exc}): check that {path.parent} "
                           "is writable, then rerun the same command to resume")


def save_snapshot(payload: dict[str, Any], path: Path) -> None:
    try:
        _io.atomic_save(payload, path)
    except OSError as exc:
        raise disk_error(exc, path, "snapshot") from None


def point_latest(src: Path, payload: dict[str, Any]) -> None:
    """Make ``latest.pt`` the same snapshot as ``src`` (an atomic hard link, else a second write)."""
    dst = src.parent / LATEST
    tmp = src.parent / f".{LATEST}.{os.getpid()}.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
        return
    except OSError:
        tmp.unlink(missing_ok=True)
    save_snapshot(payload, dst)


def read_snapshot(path: Path) -> dict[str, Any]:
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


def check_belongs(path: Path, payload: dict[str, Any], prof: Profile, arch: str,
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
    mine, stored = identity(prof), payload["profile"]
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


def refuse_foreign_dir(run_dir: Path, prof: Profile, arch: str, data_tag: str) -> None:
    """Refuse to train into an existing, non-empty ``run_dir`` that is not a run of this identity
    (profile fields, arch, dataset): nothing in it is written or deleted. A folder with snapshots
    is judged by them (:func:`check_belongs`); one without, by its ``profile.json``."""
    if not run_dir.is_dir():
        return
    entries = sorted(p.name for p in run_dir.iterdir()
                     if p.name != ".lock" and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if not entries or list_snapshots(run_dir) or (run_dir / LATEST).is_file():
        return
    why = "no profile.json"
    try:
        info = json.loads((run_dir / "profile.json").read_text()) if "profile.json" in entries else None
    except (OSError, ValueError):
        info, why = None, "an unreadable profile.json"
    if isinstance(info, dict) and isinstance(info.get("profile"), dict):
        stored, mine = info["profile"], identity(prof)
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
class RunState:
    snapshot: str | None  # path of the snapshot to resume from
    complete: bool


def inspect_run(run_dir: Path, prof: Profile, arch: str, resume: bool, data_tag: str | None = None) -> RunState:
    """Check every snapshot in ``run_dir`` belongs to this run; pick the newest (resume) or
    delete this run's old files (no resume). Called on rank 0 under the run lock."""
    for tmp in run_dir.glob(".*.tmp"):          # leftovers of a killed writer
        tmp.unlink(missing_ok=True)
    files = list(list_snapshots(run_dir).values())
    if (run_dir / LATEST).is_file():
        files.append(run_dir / LATEST)
    best: tuple[tuple[int, int], Path] | None = None
    for p in files:
        payload = read_snapshot(p)
        check_belongs(p, payload, prof, arch, data_tag)
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
        return RunState(None, False)
    if best is None:
        return RunState(None, False)
    (epoch, batch), path = best
    complete = epoch >= prof.epochs and batch == 0
    if complete and not (run_dir / snapshot_name(prof.epochs)).is_file():
        payload = read_snapshot(path)
        save_snapshot(dict(payload), run_dir / snapshot_name(prof.epochs))
    return RunState(str(path), complete)


class RunLock:
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
            raise disk_error(exc, run_dir / ".lock", "the run lock") from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise RunBusyError(f"{run_dir} is being trained by another process: wait for it to finish "
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


def write_metrics(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    text = ",".join(METRIC_COLUMNS) + "\n" + "".join(
        ",".join(_fmt(r.get(c, "")) for c in METRIC_COLUMNS) + "\n" for r in rows)
    try:
        _io.atomic_write_text(text, path)
    except OSError as exc:
        raise disk_error(exc, path, "metrics") from None


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    try:
        with open(path, "a", newline="") as fh:
            fh.write(",".join(_fmt(row.get(c, "")) for c in METRIC_COLUMNS) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise disk_error(exc, path, "metrics") from None


def read_metrics(run_dir: str | Path) -> "Any":
    """``run_dir/metrics.csv`` as a pandas DataFrame (one row per finished epoch; accuracies as
    fractions). Readable while the run trains."""
    import pandas as pd

    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: train first (zfrepro train) or fix the run directory")
    return pd.read_csv(path)


