"""Atomic file writes and the project's cache/run directories.

Nothing is ever half-written: every file goes to a temporary name in the same
directory and is renamed into place (``os.replace`` is atomic on POSIX and Windows).
A failed write (a full disk, a kill) leaves the previous file untouched.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["atomic_path", "atomic_save", "atomic_write_text", "cache_dir", "runs_dir", "project_root",
           "storage_error", "free_bytes"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_bytes(path: str | Path) -> int | None:
    """Bytes available to this user on the disk holding ``path`` (``None`` where unknown)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically; returns ``path``. A failed write is an ``OSError``
    (``ENOSPC`` when the disk is full): torch reports a short write as ``RuntimeError: [enforce fail
    at inline_container.cc] ... unexpected pos``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            text = str(exc)
            if not any(s in text for s in ("inline_container", "unexpected pos", "PytorchStreamWriter",
                                           "file write failed")):
                raise
            free = free_bytes(tmp.parent)  # the torn temporary file still holds the space it took
            code = errno.ENOSPC if free is not None and free < (1 << 20) else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from None
    return path


def storage_error(exc: OSError, path: str | Path, what: str, fix: str = "") -> "Any":
    """One :class:`~zfrepro.errors.StorageError` line for a failed write of ``what`` at ``path``: a full
    disk, a read-only or unwritable folder, or another I/O error, each with its fix."""
    from .errors import StorageError

    path = Path(path)
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return StorageError(f"disk full: cannot write {what} {path} ({reason}); free space on the disk holding "
                            f"{path.parent}{fix} and rerun the same command (what was written before is intact)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(f"cannot write {what} in {path.parent} ({reason}): make it writable{fix}, "
                            "then rerun the same command")
    return StorageError(f"cannot write {what} {path} ({reason}): check the disk holding {path.parent}{fix}, "
                        "then rerun the same command")


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (Python or numpy scalar) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        return _finite(obj.item())
    return obj


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented, key-sorted, standard JSON atomically: NaN and infinities (a
    value a table does not have, e.g. Fig. 6's layer-2 share of the network shown without
    layer-2 projections) become ``null``, so that every JSON reader accepts the file."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(text + "\n", path)


def project_root() -> Path:
    """The checkout holding the package when installed editable (has ``pyproject.toml``),
    else the current directory. ``ZFREPRO_HOME`` overrides."""
    env = os.environ.get("ZFREPRO_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "zfrepro").is_dir():
        return here
    return Path.cwd()


def cache_dir() -> Path:
    """Where decoded datasets and downloads go: ``ZFREPRO_CACHE``, else ``~/.cache/zfrepro``.
    Never inside a data root (which may be read-only)."""
    env = os.environ.get("ZFREPRO_CACHE")
    base = Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zfrepro"
    base.mkdir(parents=True, exist_ok=True)
    return base


def runs_dir() -> Path:
    """Where training runs and snapshots go: ``ZFREPRO_RUNS``, else ``<project root>/runs``."""
    env = os.environ.get("ZFREPRO_RUNS")
    return Path(env).expanduser() if env else project_root() / "runs"


def results_dir(output: str = "default") -> Path:
    """Where notebooks write the numbers they compute: ``ZFREPRO_RESULTS/<output>``, else
    ``<project root>/results/<output>``. ``output`` is a run's output name
    (:func:`zfrepro.outputs.output_name`: the profile's name for its canonical run, e.g.
    ``default``, which is committed; ``smoke-k_3`` etc. for the others, which are ignored)."""
    env = os.environ.get("ZFREPRO_RESULTS")
    base = Path(env).expanduser() if env else project_root() / "results"
    return base / output


def write_results(name: str, values: Any, output: str = "default") -> Path:
    """Write one notebook's numbers to ``results/<output>/<name>.json`` atomically (sorted keys,
    so a rerun with the same numbers leaves the file unchanged); ``output``: see :func:`results_dir`."""
    return atomic_write_json(values, results_dir(output) / f"{name}.json")
