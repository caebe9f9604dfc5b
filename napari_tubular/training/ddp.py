"""torch.distributed helpers (DistributedDataParallel under ``torchrun``; gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    """Where this process stands in a distributed run (``world == 1`` when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """True when the environment of ``torchrun`` (RANK, WORLD_SIZE, MASTER_ADDR) is set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def setup(requested: bool, device_type: str) -> DistInfo:
    """Join the process group if running under torchrun (or ``requested``).

    Args:
        requested: the config asked for DDP (``--ddp``); then the torchrun environment is required.
        device_type: "cpu" (gloo backend) or "cuda" (nccl backend).

    Raises:
        RuntimeError: DDP requested without the torchrun environment.
    """
    import torch.distributed as dist

    if not under_torchrun():
        if requested:
            raise RuntimeError(
                "ddp: distributed training needs the torchrun environment; start it with "
                "'torchrun --nproc_per_node N -m napari_tubular.training ...'"
            )
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world == 1:
        return DistInfo(rank=0, world=1, local_rank=local_rank)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            import torch

            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        here = True
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                    initialized_here=here)


def any_flag(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank if ``flag`` is true on any rank (one all-reduce)."""
    if not info.enabled:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.initialized_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
