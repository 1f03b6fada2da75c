"""Thin helpers over ``torch.distributed`` for runs launched with ``torchrun``.

``torchrun --nproc_per_node N -m leanseg.cli train CONFIG`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`init_from_environment` then starts a process group: ``nccl`` when CUDA is
available, ``gloo`` on CPU. Without those variables everything runs as a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_environment(device: torch.device) -> bool:
    """Start the process group if launched by torchrun; return whether distributed is on."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_across_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs over ranks (for printing the same loss everywhere)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= world_size()
    return dict(zip(keys, packed.tolist(), strict=True))


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (e.g. "loss became NaN")."""
    if not is_distributed():
        return flag
    packed = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())
