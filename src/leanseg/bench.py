"""What ``leanseg bench`` and every benchmark script report: size, FLOPs, memory and latency.

Conventions, stated once so that all figures are comparable:

- **FLOPs** are fused multiply-adds (1 FMA = one multiplication and one addition), counted for
  convolutions (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``, any stride, dilation and groups) and
  ``Linear`` layers, as the papers count them (thesis: "the number of fused multiply-add
  operations"). Bias additions, normalisation, activations, pooling, interpolation, ``F.linear``
  and matmul-based attention are *not* counted. A module defining
  ``flops(self, inputs: tuple, output) -> int`` reports its own cost instead (its children are then
  not visited): this is the extension point for sparse convolutions, dynamic per-pixel MLPs and
  similar layers whose cost the hooks cannot see. Only modules that actually run are counted, once
  per call.
- **Activation memory** is the number of bytes of tensors autograd saves for backward during one
  training-mode forward, each storage counted once, parameters and buffers excluded. It is what a
  training step must hold between forward and backward, independent of the allocator.
- **Peak memory** is ``torch.cuda.max_memory_allocated`` on CUDA, and the peak resident set size
  of the process (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) on CPU. The method
  used is recorded with every figure.
- **Latency** is the median wall time over repeats after warm-up, with CUDA synchronised.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import Tensor, nn

from leanseg.nn.segmentor import input_channels

__all__ = [
    "BenchResult",
    "FlopCount",
    "Latency",
    "PeakMemory",
    "activation_memory",
    "benchmark_model",
    "count_flops",
    "count_parameters",
    "describe_machine",
    "format_bench",
    "measure_latency",
    "measure_memory",
    "measure_peak_memory",
    "resident_memory_bytes",
    "trim_heap",
]

MIB = 1024**2


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _preserve_state(model: nn.Module, *, buffers: bool) -> Iterator[None]:
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


def _synchronize(device: torch.device | str | None) -> None:
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- parameters


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements; shared parameters are counted once.

    Args:
        model: the model.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- FLOPs

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _conv_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    # Every output element sums (C_in / groups) * prod(kernel) products.
    weight = module.weight  # (C_out, C_in / groups, *kernel)
    return output.numel() * math.prod(weight.shape[1:])


def _conv_transpose_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    # Every input element is multiplied into (C_out / groups) * prod(kernel) output positions,
    # including those later cropped by padding (as fvcore counts them).
    weight = module.weight  # (C_in, C_out / groups, *kernel)
    return inputs[0].numel() * math.prod(weight.shape[1:])


def _linear_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    return output.numel() * module.in_features


def _fma_rule(module: nn.Module) -> Callable[[nn.Module, tuple[Any, ...], Any], int] | None:
    custom = getattr(module, "flops", None)
    if callable(custom):
        return lambda mod, inputs, output: int(custom(inputs, output))
    if isinstance(module, _CONV_TRANSPOSE):
        return _conv_transpose_fmas
    if isinstance(module, _CONV):
        return _conv_fmas
    if isinstance(module, nn.Linear):
        return _linear_fmas
    return None


@dataclass
class FlopCount:
    """Fused multiply-adds of one forward pass.

    Attributes:
        total: FMAs of the whole forward.
        by_module: FMAs per counted module, keyed by qualified name (``""`` is the model itself,
            when it is a counted layer or defines ``flops``); modules called twice sum their calls.
    """

    total: int
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        """``total / 1e9``."""
        return self.total / 1e9

    def by_top_level(self) -> dict[str, int]:
        """FMAs grouped by the first component of the module name (e.g. backbone/context/head)."""
        groups: dict[str, int] = {}
        for name, fmas in self.by_module.items():
            top = name.split(".", 1)[0]
            groups[top] = groups.get(top, 0) + fmas
        return groups


def count_flops(model: nn.Module, inputs: Tensor) -> FlopCount:
    """Count fused multiply-adds of one eval-mode, no-grad forward of ``model(inputs)``.

    See the module docstring for what is counted. The model's train/eval flags are restored
    afterwards. Counts follow the shapes seen during this forward, so data-dependent models
    (sparse decoders) report the cost of this particular input.

    Args:
        model: the model; called as ``model(inputs)``.
        inputs: the input batch, on the model's device. FMAs scale with its batch size.
    """
    counts: dict[str, int] = {}
    handles = []
    seen: set[int] = set()

    def visit(module: nn.Module, name: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        rule = _fma_rule(module)
        if rule is None:
            for child_name, child in module.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)
            return

        def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            counts[name] = counts.get(name, 0) + rule(mod, args, output)

        handles.append(module.register_forward_hook(hook))

    visit(model, "")
    try:
        with _preserve_state(model, buffers=False), torch.no_grad():
            model.eval()
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(total=sum(counts.values()), by_module=counts)


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

    with _preserve_state(model, buffers=True):
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
        _synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
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


# --------------------------------------------------------------------------- latency


@dataclass
class Latency:
    """Wall-clock times of repeated calls, in milliseconds.

    Attributes:
        median_ms: median over repeats (the figure to report).
        min_ms: fastest repeat.
        max_ms: slowest repeat.
        iqr_ms: interquartile range (75th - 25th percentile, linear interpolation).
        mean_ms: mean over repeats.
        std_ms: population standard deviation over repeats.
        repeats: number of timed calls.
        warmup: number of untimed calls before them.
    """

    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    warmup: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float], warmup: int = 0) -> Latency:
        """Summarise timed calls measured elsewhere (e.g. round-robin over several models).

        Args:
            times_ms: the wall time of every timed call, in milliseconds; at least one.
            warmup: how many untimed calls came before them.
        """
        if not times_ms:
            raise ValueError("no times to summarise")
        values = np.asarray(times_ms, dtype=np.float64)
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        return cls(
            median_ms=float(q50),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            iqr_ms=float(q75 - q25),
            mean_ms=float(values.mean()),
            std_ms=float(values.std()),
            repeats=len(values),
            warmup=warmup,
        )


def measure_latency(
    fn: Callable[[], Any],
    warmup: int = 3,
    repeats: int = 10,
    device: torch.device | str | None = None,
) -> Latency:
    """Time ``fn()`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats`` timed.

    On CUDA the device is synchronised before and after every timed call, so queued kernels are
    included. With ``device=None`` CUDA is synchronised if it has been initialised.

    Args:
        fn: the work to time.
        warmup: untimed calls first (allocator, cuDNN autotuning, caches).
        repeats: timed calls, at least 1.
        device: the device ``fn`` runs on.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return Latency.from_times(times, warmup=warmup)


# --------------------------------------------------------------------------- machine


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def _cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a figure is measured, recorded beside it: ``leanseg bench`` and the benchmarks.

    Args:
        device: the device the figure is measured on.

    Returns:
        ``device``; ``device_name`` (CPU model or GPU name); ``platform``; ``python_version``;
        ``torch_version``; ``num_threads`` (``torch.get_num_threads()`` now); ``cpu_count`` (of
        the machine); ``cpus_available`` (CPUs this process may run on, its affinity mask);
        ``load_average`` (1, 5 and 15 minutes, ``None`` where the system has none), since
        timings on a shared machine depend on what else runs.
    """
    device = torch.device(device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 1,
        "cpus_available": _cpus_available(),
        "load_average": None if load is None else [round(value, 2) for value in load],
    }


# --------------------------------------------------------------------------- model benchmark


@dataclass
class BenchResult:
    """Everything ``leanseg bench`` reports for one model, input size and mode.

    Numbers are in base units (elements, FMAs, bytes, milliseconds); :meth:`to_dict` adds
    convenience fields (millions of parameters, GFLOPs, MiB).

    Attributes:
        model: class name of the model.
        input_shape: ``[B, C, H, W]`` of the measured batch.
        train: whether latency and peak memory are of a training step (forward + backward)
            rather than inference.
        parameters: number of parameter elements.
        flops: FMAs of one inference forward of the whole batch.
        activation_memory_bytes: bytes saved for backward by one training-mode forward.
        peak_memory: peak memory of one inference call or training step.
        latency: latency of inference calls or training steps.
        device: the device string (``cpu``, ``cuda:0``).
        device_name: CPU model or GPU name.
        torch_version: ``torch.__version__``.
        num_threads: ``torch.get_num_threads()`` during the run.
        cpu_count: ``os.cpu_count()`` of the machine.
        cpus_available: CPUs this process may run on (affinity mask).
        python_version: ``platform.python_version()``.
    """

    model: str
    input_shape: list[int]
    train: bool
    parameters: int
    flops: FlopCount
    activation_memory_bytes: int
    peak_memory: PeakMemory
    latency: Latency
    device: str
    device_name: str
    torch_version: str
    num_threads: int
    cpu_count: int
    cpus_available: int
    python_version: str

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly flat dict with base units plus GFLOPs / MiB / millions fields."""
        latency = self.latency
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "batch": self.batch,
            "train": self.train,
            "parameters": self.parameters,
            "parameters_m": self.parameters / 1e6,
            "flops": self.flops.total,
            "gflops": self.flops.gflops,
            "gflops_per_image": self.flops.gflops / self.batch,
            "flops_by_top_level": self.flops.by_top_level(),
            "flops_by_module": dict(self.flops.by_module),
            "activation_memory_bytes": self.activation_memory_bytes,
            "activation_memory_mib": self.activation_memory_bytes / MIB,
            "peak_memory_bytes": self.peak_memory.peak_bytes,
            "peak_memory_mib": self.peak_memory.peak_bytes / MIB,
            "baseline_memory_bytes": self.peak_memory.baseline_bytes,
            "peak_memory_increase_bytes": self.peak_memory.increase_bytes,
            "peak_memory_increase_mib": self.peak_memory.increase_bytes / MIB,
            "peak_memory_method": self.peak_memory.method,
            "latency_median_ms": latency.median_ms,
            "latency_min_ms": latency.min_ms,
            "latency_max_ms": latency.max_ms,
            "latency_iqr_ms": latency.iqr_ms,
            "latency_mean_ms": latency.mean_ms,
            "latency_std_ms": latency.std_ms,
            "latency_repeats": latency.repeats,
            "latency_warmup": latency.warmup,
            "images_per_second": self.batch * 1e3 / latency.median_ms
            if latency.median_ms > 0
            else None,
            "device": self.device,
            "device_name": self.device_name,
            "torch_version": self.torch_version,
            "num_threads": self.num_threads,
            "cpu_count": self.cpu_count,
            "cpus_available": self.cpus_available,
            "python_version": self.python_version,
        }


def _num_classes(model: nn.Module, images: Tensor) -> int:
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int):
        return num_classes
    with _preserve_state(model, buffers=False), torch.no_grad():
        model.eval()
        return int(model(images[:1]).shape[1])


def _training_loss(model: nn.Module, images: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
    """``sum(model.losses(images, targets))`` if the model has ``losses``, else a dummy loss."""
    losses = getattr(model, "losses", None)
    if callable(losses):
        terms = losses(images, dict(targets))
        return sum(terms.values(), torch.zeros((), device=images.device))
    return model(images).float().mean()


def benchmark_model(
    model: nn.Module,
    size: tuple[int, int],
    batch: int = 1,
    train: bool = False,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    in_channels: int | None = None,
    inference_model: nn.Module | None = None,
) -> BenchResult:
    """Measure parameters, FLOPs, activation memory, peak memory and latency of a model.

    The model is moved to ``device`` (in place) and fed random images ``(batch, in_channels, H,
    W)``. The training forward (activation memory, and the step timed when ``train=True``) calls
    ``model.losses(images, {"label": labels})`` with random labels ``(B, H, W)`` when the model
    has a ``losses`` method, else uses ``model(images).float().mean()`` as the loss. A training
    step is forward + backward without an optimiser update; gradients, buffers (batch-norm
    statistics) and train/eval flags are restored afterwards. Inference runs in eval mode under
    ``torch.no_grad()``. Peak memory is of one more call after the timed ones.

    Args:
        model: ``forward(images) -> (B, C, H, W)`` class scores.
        size: ``(H, W)`` of the input.
        batch: images per batch.
        train: time a training step instead of inference.
        device: where to run.
        warmup: untimed calls before timing.
        repeats: timed calls.
        in_channels: channels of the random input; default the model's (``in_channels``, 3
            for a model without one).
        inference_model: what inference latency and peak memory are measured on, e.g. the
            model prepared with inference-speed options (:mod:`leanseg.inference.speed`);
            parameters, FLOPs and activation memory are always ``model``'s. Default ``model``.

    Raises:
        ValueError: a batch, size or repeat count below 1, or a negative warm-up count.
    """
    height, width = size
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(f"batch and size must be positive, got batch {batch}, size {size}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    device = torch.device(device)
    model.to(device)
    if in_channels is None:
        in_channels = input_channels(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, in_channels, height, width, generator=generator).to(device)

    parameters = count_parameters(model)
    flops = count_flops(model, images)
    labels = torch.randint(
        0, _num_classes(model, images), (batch, height, width), generator=generator
    )
    targets = {"label": labels.to(device)}
    with torch.enable_grad():
        activations = activation_memory(
            model, images, loss_fn=lambda mod, inputs: _training_loss(mod, inputs, targets)
        )

    grads = [(p, p.grad) for p in model.parameters()]
    with _preserve_state(model, buffers=True):
        if train:
            model.train()

            def step() -> None:
                for p in model.parameters():
                    p.grad = None
                with torch.enable_grad():
                    _training_loss(model, images, targets).backward()

        else:
            model.eval()
            timed = model if inference_model is None else inference_model

            def step() -> None:
                with torch.no_grad():
                    timed(images)

        try:
            latency = measure_latency(step, warmup=warmup, repeats=repeats, device=device)
            peak = measure_memory(step, device)
        finally:
            for p, grad in grads:
                p.grad = grad

    machine = describe_machine(device)
    return BenchResult(
        model=type(model).__name__,
        input_shape=[batch, in_channels, height, width],
        train=train,
        parameters=parameters,
        flops=flops,
        activation_memory_bytes=activations,
        peak_memory=peak,
        latency=latency,
        device=machine["device"],
        device_name=machine["device_name"],
        torch_version=machine["torch_version"],
        num_threads=machine["num_threads"],
        cpu_count=machine["cpu_count"],
        cpus_available=machine["cpus_available"],
        python_version=machine["python_version"],
    )


def format_bench(result: BenchResult) -> Table:
    """A rich table of a :class:`BenchResult`, with the machine it was measured on."""
    data = result.to_dict()
    mode = "training step" if result.train else "inference"
    table = Table(title=f"{result.model} {'x'.join(map(str, result.input_shape))} ({mode})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{data['parameters_m']:.3f} M")
    table.add_row("GFLOPs (FMA, batch)", f"{data['gflops']:.3f}")
    if result.batch > 1:
        table.add_row("GFLOPs per image", f"{data['gflops_per_image']:.3f}")
    for name, fmas in data["flops_by_top_level"].items():
        table.add_row(f"  {name or '(model)'}", f"{fmas / 1e9:.3f}")
    table.add_row("activation memory", f"{data['activation_memory_mib']:.1f} MiB")
    table.add_row(
        f"peak memory ({result.peak_memory.method})",
        f"{data['peak_memory_mib']:.1f} MiB (+{data['peak_memory_increase_mib']:.1f})",
    )
    latency = result.latency
    table.add_row(
        f"latency ({mode}, median)",
        f"{latency.median_ms:.2f} ms (IQR {latency.iqr_ms:.2f}, n={latency.repeats})",
    )
    table.add_row("latency min / max", f"{latency.min_ms:.2f} / {latency.max_ms:.2f} ms")
    if data["images_per_second"] is not None:
        table.add_row("images / s", f"{data['images_per_second']:.2f}")
    table.add_section()
    table.add_row("device", f"{result.device} ({result.device_name})")
    table.add_row("torch / threads", f"{result.torch_version} / {result.num_threads}")
    table.add_row("CPUs (available / total)", f"{result.cpus_available} / {result.cpu_count}")
    return table
