"""Everything ``leanseg bench`` reports for one model at one input size, and its table.

:func:`benchmark_model` feeds a model random images and runs each measurement of
:mod:`leanseg.profiling` in turn (parameters, FLOPs, activation memory, latency and peak memory of
inference or of a training step); :class:`BenchResult` holds the figures with the machine they were
measured on, :meth:`BenchResult.to_dict` is the ``--json`` record and :func:`format_bench` the
printed table. The conventions behind each figure are in the module that measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from rich.table import Table
from torch import Tensor, nn

from leanseg.nn.segmentor import input_channels
from leanseg.profiling.flops import FlopCount, count_flops, count_parameters
from leanseg.profiling.latency import Latency, measure_latency
from leanseg.profiling.machine import describe_machine
from leanseg.profiling.memory import PeakMemory, activation_memory, measure_memory
from leanseg.profiling.state import preserve_state

__all__ = ["BenchResult", "benchmark_model", "format_bench"]

MIB = 1024**2

# What BenchResult records of describe_machine (not the load average).
_MACHINE_FIELDS = (
    "device",
    "device_name",
    "torch_version",
    "num_threads",
    "cpu_count",
    "cpus_available",
    "python_version",
)


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
    with preserve_state(model, buffers=False), torch.no_grad():
        model.eval()
        return int(model(images[:1]).shape[1])


def _training_loss(model: nn.Module, images: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
    """``sum(model.losses(images, targets))`` if the model has ``losses``, else a dummy loss."""
    losses = getattr(model, "losses", None)
    if callable(losses):
        terms = losses(images, dict(targets))
        return sum(terms.values(), torch.zeros((), device=images.device))
    return model(images).float().mean()


def _check_arguments(size: tuple[int, int], batch: int, warmup: int, repeats: int) -> None:
    height, width = size
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(f"batch and size must be positive, got batch {batch}, size {size}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")


def _random_images(
    model: nn.Module,
    size: tuple[int, int],
    batch: int,
    in_channels: int | None,
    generator: torch.Generator,
) -> Tensor:
    """Random images ``(batch, in_channels, H, W)``; channels default to the model's input."""
    if in_channels is None:
        in_channels = input_channels(model)
    height, width = size
    return torch.randn(batch, in_channels, height, width, generator=generator)


def _random_targets(
    model: nn.Module, images: Tensor, generator: torch.Generator, device: torch.device
) -> dict[str, Tensor]:
    """Random labels ``(B, H, W)`` below the model's number of classes, as ``{"label": ...}``."""
    batch, _, height, width = images.shape
    labels = torch.randint(
        0, _num_classes(model, images), (batch, height, width), generator=generator
    )
    return {"label": labels.to(device)}


def _training_activations(model: nn.Module, images: Tensor, targets: Mapping[str, Tensor]) -> int:
    """:func:`activation_memory` of the training forward, whatever the ambient grad mode."""
    with torch.enable_grad():
        return activation_memory(
            model, images, loss_fn=lambda mod, inputs: _training_loss(mod, inputs, targets)
        )


def _step(
    model: nn.Module,
    images: Tensor,
    targets: Mapping[str, Tensor],
    train: bool,
    inference_model: nn.Module | None,
) -> Callable[[], None]:
    """The call to measure, with ``model`` put in the mode it needs (the caller restores it).

    A training step clears the gradients, then runs forward and backward; an inference call runs
    ``inference_model`` (default ``model``) in eval mode under ``torch.no_grad()``.
    """
    if train:
        model.train()

        def training_step() -> None:
            for p in model.parameters():
                p.grad = None
            with torch.enable_grad():
                _training_loss(model, images, targets).backward()

        return training_step

    model.eval()
    timed = model if inference_model is None else inference_model

    def inference_call() -> None:
        with torch.no_grad():
            timed(images)

    return inference_call


def _time_step(
    model: nn.Module,
    images: Tensor,
    targets: Mapping[str, Tensor],
    train: bool,
    inference_model: nn.Module | None,
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> tuple[Latency, PeakMemory]:
    """Latency of the timed calls, then peak memory of one more; the model is left as found.

    Gradients, buffers (batch-norm statistics) and train/eval flags are restored afterwards.
    """
    grads = [(p, p.grad) for p in model.parameters()]
    with preserve_state(model, buffers=True):
        step = _step(model, images, targets, train, inference_model)
        try:
            latency = measure_latency(step, warmup=warmup, repeats=repeats, device=device)
            peak = measure_memory(step, device)
        finally:
            for p, grad in grads:
                p.grad = grad
    return latency, peak


def _machine_fields(device: torch.device) -> dict[str, Any]:
    """The :func:`describe_machine` entries a :class:`BenchResult` records."""
    machine = describe_machine(device)
    return {name: machine[name] for name in _MACHINE_FIELDS}


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
    _check_arguments(size, batch, warmup, repeats)
    device = torch.device(device)
    model.to(device)
    generator = torch.Generator().manual_seed(0)
    images = _random_images(model, size, batch, in_channels, generator).to(device)

    parameters = count_parameters(model)
    flops = count_flops(model, images)
    targets = _random_targets(model, images, generator, device)
    activations = _training_activations(model, images, targets)
    latency, peak = _time_step(
        model,
        images,
        targets,
        train,
        inference_model,
        device=device,
        warmup=warmup,
        repeats=repeats,
    )
    return BenchResult(
        model=type(model).__name__,
        input_shape=list(images.shape),
        train=train,
        parameters=parameters,
        flops=flops,
        activation_memory_bytes=activations,
        peak_memory=peak,
        latency=latency,
        **_machine_fields(device),
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
