"""``leanseg bench``: parameters, FLOPs, activation and peak memory, latency of a config.

:func:`add_parser` adds it to the ``leanseg`` command.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from leanseg.commands import common
from leanseg.config import ConfigError, limits

if TYPE_CHECKING:
    import torch
    from torch import nn

    from leanseg.inference.speed import PreparedModel
    from leanseg.profiling.benchmark import BenchResult


def add_parser(commands: Any) -> None:
    """Add ``bench`` to ``commands`` (what ``add_subparsers`` returned)."""
    from leanseg.inference.speed import add_inference_arguments

    bench = commands.add_parser(
        "bench", help="parameters, FLOPs, activation and peak memory, latency"
    )
    bench.add_argument("config", help="YAML config file")
    common.add_overrides(bench)
    bench.add_argument(
        "--size",
        required=True,
        help=f"input size HxW, e.g. 1024x2048 (sides up to {limits.MAX_SIDE}, batch x H x W up "
        f"to {limits.megapixels(limits.MAX_BATCH_PIXELS)})",
    )
    bench.add_argument(
        "--batch",
        type=common.number(
            int, lambda v: 1 <= v <= limits.MAX_BATCH_SIZE, f"in 1..{limits.MAX_BATCH_SIZE}"
        ),
        default=1,
        help="batch size (default 1)",
    )
    bench.add_argument("--train", action="store_true", help="time a training step, not inference")
    bench.add_argument("--device", type=common.device_name, default="cpu", help="cpu or cuda")
    bench.add_argument(
        "--warmup", type=common.NON_NEGATIVE_INT, default=3, help="untimed warm-up runs"
    )
    bench.add_argument("--repeats", type=common.POSITIVE_INT, default=10, help="timed runs")
    bench.add_argument(
        "--threads",
        type=common.POSITIVE_INT,
        help="torch CPU threads (default: torch's; more than the cores are clamped to them)",
    )
    bench.add_argument(
        "--onnxruntime",
        action="store_true",
        help="also time the model exported to ONNX in onnxruntime, on as many threads as torch "
        "(CPU inference; needs leanseg[export])",
    )
    common.add_json_arguments(bench, "bench", "the figures")
    add_inference_arguments(bench)
    bench.set_defaults(handler=_cmd_bench)


# ---------------------------------------------------------------------- bench


def parse_size(text: str, batch: int = 1) -> tuple[int, int]:
    """``"1024x2048"`` -> ``(1024, 2048)`` (height, width), refusing a size above the limits of
    :mod:`leanseg.config.limits` (for a batch of ``batch``) before anything is made."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ConfigError(f"--size {text!r}: expected HxW with positive integers, e.g. 512x1024")
    if any(len(p.strip()) > 12 or int(p) == 0 for p in parts):
        raise ConfigError(f"--size {text!r}: expected HxW with positive integers, e.g. 512x1024")
    height, width = int(parts[0]), int(parts[1])
    problem = limits.size_problem(height, width, limits.MAX_BATCH_PIXELS)
    pixels = batch * height * width
    if problem is None and pixels > limits.MAX_BATCH_PIXELS:
        problem = (
            f"batch x H x W is {limits.megapixels(pixels)}, more than "
            f"{limits.megapixels(limits.MAX_BATCH_PIXELS)}"
        )
    if problem:
        raise ConfigError(f"--size {text} (batch {batch}): too large, {problem}")
    return height, width


def _check_bench_size(size: tuple[int, int], batch: int, stride: int) -> None:
    """Refuse an input the model cannot run on in training mode (bench measures that too).

    Inputs are padded to a multiple of the output stride, and batch normalisation in training
    mode needs more than one value per channel at the coarsest level.
    """
    height, width = size
    cells = -(-height // stride) * -(-width // stride) * batch
    if min(height, width) < stride or cells < 2:
        raise ConfigError(
            f"--size {height}x{width} (batch {batch}) is too small for this model: its output "
            f"stride is {stride}, so each side needs at least {stride} pixels and the batch at "
            f"least two positions at that stride, e.g. --size {stride}x{2 * stride}"
        )


def _cmd_bench(args: argparse.Namespace) -> int:
    """Measure the model of ``args.config``; print the figures, and write ``--json``."""
    import torch

    from leanseg.inference.speed import WithExampleInputs, prepare_model
    from leanseg.models import build_model
    from leanseg.nn.segmentor import extra_inputs
    from leanseg.profiling.benchmark import format_bench

    size = parse_size(args.size, args.batch)
    common.check_json_target(args.json, "bench", force=args.force)
    cfg = common.load_run_config(args.config, args.overrides)
    device = common.select_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(limits.clamp_threads(args.threads, "--threads"))
    _check_bench_flags(args, device)
    model = build_model(cfg)
    _check_bench_size(size, args.batch, model.size_divisor)
    if extra_inputs(model):
        model = WithExampleInputs(model)
    prepared = None
    if not args.train:
        prepared = prepare_model(model, common.inference_options(args, device), device=device)
        common.print_notes(prepared.notes)
    result = _benchmark(args, model, size, prepared, device)
    Console().print(format_bench(result))
    figures = {"config": str(args.config), **result.to_dict()}
    if prepared is not None:
        print(f"inference: {prepared.options.describe()}")
        figures["inference"] = {**prepared.options.to_dict(), "notes": list(prepared.notes)}
    if args.onnxruntime:
        figures["onnxruntime"] = _onnxruntime_figures(args, model, size, prepared, result)
    if args.json:
        common.write_json_result(figures, args.json, "bench", force=args.force)
    return 0


def _check_bench_flags(args: argparse.Namespace, device: torch.device) -> None:
    """Refuse flags that do not go together: ``--onnxruntime`` with training or off the CPU,
    inference options with ``--train``."""
    from leanseg.inference.speed import options_given

    if args.onnxruntime and (args.train or device.type != "cpu"):
        raise ConfigError("--onnxruntime times CPU inference: drop --train and use --device cpu")
    if args.train and options_given(args):
        raise ConfigError(
            f"{', '.join(options_given(args))} set how inference runs: drop them or --train"
        )


def _benchmark(
    args: argparse.Namespace,
    model: nn.Module,
    size: tuple[int, int],
    prepared: PreparedModel | None,
    device: torch.device,
) -> BenchResult:
    """The figures of ``model`` at ``size``; the prepared model times inference when given."""
    from leanseg.inference.speed import InferenceRunner
    from leanseg.profiling.benchmark import benchmark_model

    try:
        return benchmark_model(
            model,
            size,
            batch=args.batch,
            train=args.train,
            device=device,
            warmup=args.warmup,
            repeats=args.repeats,
            inference_model=None
            if prepared is None
            else InferenceRunner(prepared.model, prepared.options),
        )
    except ValueError as err:  # e.g. a pyramid level too small for batch norm in training mode
        raise ConfigError(f"--size {size[0]}x{size[1]} (batch {args.batch}): {err}") from None


def _onnxruntime_figures(
    args: argparse.Namespace,
    model: nn.Module,
    size: tuple[int, int],
    prepared: PreparedModel | None,
    result: BenchResult,
) -> dict[str, Any]:
    """``--onnxruntime``: the latency of ``model`` exported and run by onnxruntime, printed beside
    PyTorch's; an ``error`` entry (and a message on stderr) when it is not timed."""
    import torch

    from leanseg.export import ExportError, onnxruntime_latency

    try:
        ort = onnxruntime_latency(
            model,
            size,
            batch=args.batch,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=torch.get_num_threads(),
            fold_bn=prepared is not None and prepared.options.fold_bn,
        )
    except ExportError as err:  # a refused part, or onnx / onnxruntime missing
        reason = " ".join(str(err).split())
        print(f"leanseg: onnxruntime not timed: {reason}", file=sys.stderr)
        return {"backend": "onnxruntime", "error": str(err)}
    ratio = ort["median_ms"] / result.latency.median_ms
    print(
        f"latency median: PyTorch {result.latency.median_ms:.2f} ms, onnxruntime "
        f"{ort['median_ms']:.2f} ms ({ratio:.2f}x, {ort['threads']} threads)"
    )
    return ort
