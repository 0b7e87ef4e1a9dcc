"""Device selection shared by training, scans and notebooks (``device="auto"|"cpu"|"cuda[:N]"``)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "full_precision", "keep_freed_memory", "inference_layout"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; a CUDA device without CUDA is a ConfigError."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here: use --device cpu or auto")
    return dev


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Run convolutions and matrix products in true float32 on CUDA (TF32 off) inside the block.

    PyTorch lets cuDNN use TF32 (10-bit mantissa) for convolutions by default; through five
    layers of a deconvnet that moves a projection measurably relative to the CPU (README, "A GPU"), and can flip max-pool switches on near ties. Projections, activation scans and
    occlusion maps are measurements, so :class:`zfrepro.deconv.DeconvNet` runs under this.
    The previous settings are restored on exit; on the CPU it changes nothing."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


def inference_layout(x: torch.Tensor) -> torch.Tensor:
    """A 4-D CPU batch in channels-last memory (the values unchanged), anything else as it is.

    The layout the trainer uses: on the CPU the convolutions and max pooling with switches run faster
    in it (``benchmarks/bench_scan.py`` measures a dataset scan both ways), and a layer's output stays
    channels-last, so the scans (Fig. 2, 4), Table 7's features and the 10-crop evaluation feed their
    batches through this. Results equal the NCHW forward's to float rounding, not bit for bit."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


_ALLOCATOR_TUNED: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap for reuse instead of returning it to the kernel.

    A training step allocates and frees the same large activation and gradient buffers every
    batch. With glibc's defaults each buffer over the mmap threshold is a fresh ``mmap`` whose
    pages fault in one by one and go back with ``munmap`` (or a heap trim) when freed: tens of
    thousands of minor page faults a second and a large share of the process's CPU time in the
    kernel. ``mallopt(M_MMAP_MAX, 0)`` and a huge ``M_TRIM_THRESHOLD`` keep those pages mapped, so
    the next step reuses them; ``benchmarks/bench_malloc.py`` measures the gain and the README keeps
    the numbers. Peak resident memory grows a few per cent; freed memory is not returned to the
    system until the process ends.

    Called by :func:`zfrepro.train.train` (every figure's network). Process-wide and idempotent;
    a no-op (returns False) off glibc, or when the environment sets ``ZFREPRO_MALLOC=system``.
    Returns whether the setting is in force."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    import ctypes
    import ctypes.util
    import os
    import platform

    _ALLOCATOR_TUNED = False
    if os.environ.get("ZFREPRO_MALLOC", "").strip().lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED
