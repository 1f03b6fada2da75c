"""How much memory a model needs: activations saved for backward, and the peak of a call.

:func:`activation_memory` counts the bytes autograd saves during one training forward;
:func:`measure_memory` (:class:`PeakMemory`) and :func:`measure_peak_memory` measure the peak of
one call. :func:`trim_heap` and :func:`resident_memory_bytes` are the process-memory helpers they
use, also called by benchmarks that follow memory across many calls.

Conventions:

- **Activation memory** is the number of bytes of tensors autograd saves for backward during one
  training-mode forward, each storage counted once, parameters and buffers excluded. It is what a
  training step must hold between forward and backward, independent of the allocator.
- **Peak memory** is ``torch.cuda.max_memory_allocated`` on CUDA, and the peak resident set size
  of the process (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) on CPU. The method
  used is recorded with every figure.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from leanseg.profiling.state import preserve_state, synchronize

__all__ = [
    "PeakMemory",
    "activation_memory",
    "measure_memory",
    "measure_peak_memory",
    "resident_memory_bytes",
    "trim_heap",
]


# --------------------------------------------------------------------------- activation memory


def _storage_key(tensor: Tensor) -> tuple[int, int]:
    """(data pointer, bytes) of the memory block behind ``tensor``."""
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse, nested or other storage-less tensors
        return id(tensor), tensor.numel() * tensor.element_size()


def activation_memory(
    model: nn.Module,
    inputs: Tensor,
    loss_fn: Callable[[nn.Module, Tensor], Any] | None = None,
) -> int:
    """Bytes of tensors saved for backward during one training-mode forward.

    Every tensor autograd saves (``torch.autograd.graph.saved_tensors_hooks``) is attributed to
    its underlying storage and each storage is counted once with its full size, so views and
    tensors saved by several operations do not count twice. Storages of parameters and buffers
    are excluded: they are saved (e.g. convolution weights, batch-norm running statistics) but
    are not activations. The input batch counts if an operation saves it (the first trainable
    convolution does). Tensors a custom ``autograd.Function`` keeps as plain ``ctx`` attributes
    instead of ``save_for_backward`` are invisible to the hooks. Gradient checkpointing
    (``torch.utils.checkpoint``, either mode) is measured correctly: only the segment inputs are
    saved.

    The ambient grad mode is respected: under ``torch.no_grad()`` nothing is saved and the result
    is 0. The model's train/eval flags and all buffers (batch-norm running statistics) are
    restored afterwards; no backward pass is run.

    Args:
        model: the model; put in training mode for the measurement.
        inputs: the input batch, on the model's device.
        loss_fn: runs the training forward, called as ``loss_fn(model, inputs)`` and returning the
            loss or anything else; defaults to ``model(inputs)``. Use it to include a loss or a
            ``losses(images, targets)`` method whose forward differs from inference.

    Returns:
        Bytes held by saved activations.
    """
    excluded = {_storage_key(t)[0] for t in (*model.parameters(), *model.buffers())}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        pointer, nbytes = _storage_key(tensor)
        if pointer not in excluded:
            storages[pointer] = max(nbytes, storages.get(pointer, 0))
        # A detached alias, not ``tensor`` itself: a tensor an op saves for its own backward
        # (e.g. a ReLU output) would otherwise reference its grad_fn through the saved variable
        # and back, a cycle through C++ that the garbage collector cannot break, so the whole
        # forward's activations would leak on every call. No backward runs here.
        return tensor.detach()

    def unpack(tensor: Tensor) -> Tensor:
        return tensor

    with preserve_state(model, buffers=True):
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            result = loss_fn(model, inputs) if loss_fn is not None else model(inputs)
        # The graph (kept alive by ``result``) holds every saved tensor until here, so no
        # storage was freed and reused under the same pointer during the forward.
        del result
    return sum(storages.values())


# --------------------------------------------------------------------------- peak memory


@dataclass
class PeakMemory:
    """Peak memory during a call.

    Attributes:
        peak_bytes: the peak (CUDA: allocated by tensors; CPU: process resident set size).
        baseline_bytes: the same quantity just before the call.
        method: how it was measured: ``"cuda_max_memory_allocated"``, ``"vmhwm_clear_refs"``
            (Linux peak RSS, reset before the call) or ``"ru_maxrss"`` (peak RSS of the whole
            process lifetime, which could not be reset: an upper bound that may predate the call).
    """

    peak_bytes: int
    baseline_bytes: int
    method: str

    @property
    def increase_bytes(self) -> int:
        """Peak above the baseline."""
        return max(0, self.peak_bytes - self.baseline_bytes)


_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open(_PROC_STATUS) as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False if not possible."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Without it the RSS baseline includes memory the allocator kept from earlier calls, and the
    increase during the measured call is underestimated; a long run of calls with different
    allocation patterns also grows the process far beyond one call's peak (fragmentation).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def resident_memory_bytes() -> int | None:
    """The resident set size of this process now (``VmRSS``); ``None`` without ``/proc``."""
    return _proc_status_bytes("VmRSS")


def _ru_maxrss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def measure_memory(fn: Callable[[], Any], device: torch.device | str | None = None) -> PeakMemory:
    """Run ``fn()`` once and report its peak memory with the baseline and the method.

    Args:
        fn: the work to measure; its return value is discarded.
        device: a CUDA device measures CUDA tensor memory; anything else (default) measures the
            process's resident set size. On Linux with glibc, freed heap memory is first returned
            to the OS (``malloc_trim``) so that the baseline is the memory actually in use.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return PeakMemory(peak, baseline, "cuda_max_memory_allocated")
    trim_heap()
    if _reset_peak_rss():
        baseline = resident_memory_bytes() or 0
        fn()
        peak = _proc_status_bytes("VmHWM") or 0
        return PeakMemory(max(peak, baseline), baseline, "vmhwm_clear_refs")
    baseline = resident_memory_bytes() or _ru_maxrss_bytes()
    fn()
    return PeakMemory(_ru_maxrss_bytes(), baseline, "ru_maxrss")


def measure_peak_memory(fn: Callable[[], Any], device: torch.device | str | None = None) -> int:
    """Peak memory in bytes while running ``fn()`` once; see :func:`measure_memory`."""
    return measure_memory(fn, device).peak_bytes
