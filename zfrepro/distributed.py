"""Single-process or ``torchrun`` data-parallel training: ranks, collectives, errors shared across ranks.

Every rank draws the same globally shuffled, augmented batch and trains on its contiguous slice (see
:mod:`zfrepro.train`); this module is the process-group side of it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .errors import CheckpointError, ConfigError, DataError, ZFReproError

__all__ = ["Distributed"]


class Distributed:
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


