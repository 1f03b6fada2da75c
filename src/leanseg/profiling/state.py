"""What every measurement leaves as it found: a model's train/eval flags and buffers, the device.

Shared by the counting, memory, timing and benchmark modules of :mod:`leanseg.profiling`, so that
measuring a model never changes it and timings include queued CUDA kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["preserve_state", "synchronize"]


@contextlib.contextmanager
def preserve_state(model: nn.Module, *, buffers: bool) -> Iterator[None]:
    """Restore every module's train/eval flag (and optionally all buffers) on exit."""
    modes = [(module, module.training) for module in model.modules()]
    saved = [(buf, buf.detach().clone()) for buf in model.buffers()] if buffers else []
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work on ``device``; with ``None``, on CUDA if it was initialised."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
