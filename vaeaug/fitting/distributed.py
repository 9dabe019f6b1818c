"""torch.distributed for fitting: detect a ``torchrun`` launch, set up the process group, helpers.

Under ``torchrun --nproc-per-node N`` (or any launcher that sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), :func:`vaeaug.fit` trains with
DistributedDataParallel: ``gloo`` on CPU, ``nccl`` on GPUs (one per process, by local rank). Only
rank 0 shows progress and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "launched_world_size", "setup", "is_main_process"]


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by the launcher (1 when not launched with several processes)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer; got {os.environ['WORLD_SIZE']!r}") from None


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run).

    Example:
        >>> is_main_process()
        True
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DistContext:
    """The process group a fit runs in."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created: bool  # this call initialised the process group (and so destroys it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self, ok: bool = True) -> None:
        """After a successful fit, wait for every rank; then destroy the group if this context made it.

        Args:
            ok: ``False`` after an error: no barrier (the other ranks may be stuck in a collective
                and never reach it), so the process fails fast and the launcher stops the rest.
        """
        import torch.distributed as dist

        if ok:
            dist.barrier()
        if self.created:
            dist.destroy_process_group()


def setup(device: torch.device) -> DistContext | None:
    """Join (or create) the process group when launched with several processes; ``None`` otherwise.

    Args:
        device: the requested device; CUDA becomes ``cuda:LOCAL_RANK``.

    Returns:
        The context, or ``None`` for a single-process run.
    """
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if not initialized and launched_world_size() == 1:
        return None
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run vaeaug fit in one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = False
    if not initialized:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch with "
                "torchrun --nproc-per-node N -m vaeaug fit ..."
            )
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    if dist.get_world_size() == 1:
        if created:
            dist.destroy_process_group()
        return None
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, created)
