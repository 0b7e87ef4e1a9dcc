"""Device selection shared by training, scans and notebooks (``device="auto"|"cpu"|"cuda[:N]"``)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import ConfigError

__all__ = ["resolve_device"]


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
    layers of a deconvnet that moves a projection by ~2 % relative to the CPU (measured on an
    H200), and can flip max-pool switches on near ties. Projections, activation scans and
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
