"""Where the SSN / ERFNet + iGUM models lose convolution throughput on the CPU (issue 16).

Two measurements, both in fp32 with leanseg's inference defaults (BN folded, channels-last), on
``--threads`` threads:

1. **Profile.** ``--runs`` forward passes of each model of :data:`MODELS` at ``--size``
   (default 1024x2048), every convolution timed by forward hooks and grouped by kernel shape
   (3x3, 3x1 / 1x3, their dilated forms, 1x1, depthwise, strided): calls, ms, share of the
   forward, GMAC and GFLOP/s per group; the rest of the forward as one row, and its largest
   operators from ``torch.profiler`` (self CPU time).
2. **Kernel shapes.** The convolution shapes of the SSN encoder's stride-8 stage (128 channels
   at 1/8 of ``--size``) timed alone, round-robin (:func:`common.round_robin`): 3x3, 3x1, 1x3,
   3x1 dilated 2/4/8/16, in both memory formats, beside the 256 -> 256 3x3 conv of
   ``benchmarks/speed/peers_cpu.py`` that gives the peak.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/speed/conv_efficiency.py --threads 2

writes ``benchmarks/results/conv_efficiency.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.profiler import ProfilerActivity, profile

from leanseg.inference.speed import InferenceOptions, InferenceRunner, prepare_model
from leanseg.models import build_segmentor, load_run_config
from leanseg.profiling.flops import count_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, round_robin, summary, write_result

MODELS: dict[str, str] = {
    "SSN encoder + iGUM": "configs/ssn/ssn_cityscapes.yaml",
    "ERFNet + iGUM": "configs/ssn/erfnet_igum_cityscapes.yaml",
    "ladder R18": "configs/ldn/rn18_32to4_cityscapes.yaml",
}
PEAK_CHANNELS = 256


def conv_group(weight_shape: list[int], stride: list[int], dilation: list[int], groups: int) -> str:
    """A convolution's group name from its weight ``(out, in/groups, kh, kw)`` and settings."""
    _, per_group, kh, kw = weight_shape
    if groups > 1 and per_group == 1:
        return f"depthwise {kh}x{kw}"
    if max(stride) > 1:
        return f"strided {kh}x{kw}"
    if (kh, kw) == (1, 1):
        return "1x1"
    shape = "3x3" if (kh, kw) == (3, 3) else "3x1 / 1x3" if {kh, kw} == {1, 3} else f"{kh}x{kw}"
    return shape if max(dilation) == 1 else f"{shape} dilated"


def time_convolutions(
    model: nn.Module, images: torch.Tensor, runs: int
) -> tuple[dict[str, dict[str, float]], float]:
    """Wall time and GMAC per convolution group, per forward; and the forward's total ms.

    Every ``nn.Conv2d`` is timed by a pre- and a post-forward hook (the hooks' own cost is a few
    microseconds a call); the rest of the forward is ``"everything else"``.
    """
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "gmac": 0.0, "calls": 0})
    started: dict[int, float] = {}

    def before(module: nn.Module, _inputs: Any) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        ms = (time.perf_counter() - started.pop(id(module))) * 1e3
        name = conv_group(
            list(module.weight.shape), list(module.stride), list(module.dilation), module.groups
        )
        out_channels, per_group, kh, kw = module.weight.shape
        positions = output.numel() // out_channels
        groups[name]["ms"] += ms
        groups[name]["gmac"] += positions * out_channels * per_group * kh * kw / 1e9
        groups[name]["calls"] += 1

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_pre_hook(before) for m in convs]
    handles += [m.register_forward_hook(after) for m in convs]
    try:
        with torch.inference_mode():
            model(images)  # warm-up, not counted
            groups.clear()
            start = time.perf_counter()
            for _ in range(runs):
                model(images)
            total_ms = (time.perf_counter() - start) * 1e3 / runs
    finally:
        for handle in handles:
            handle.remove()
    per_run = {
        name: {"ms": v["ms"] / runs, "gmac": v["gmac"] / runs, "calls": v["calls"] / runs}
        for name, v in sorted(groups.items(), key=lambda item: -item[1]["ms"])
    }
    conv_ms = sum(v["ms"] for v in per_run.values())
    per_run["everything else"] = {"ms": total_ms - conv_ms, "gmac": 0.0, "calls": 0}
    return per_run, total_ms


def top_other_operators(model: nn.Module, images: torch.Tensor, count: int = 8) -> list[Any]:
    """The operators other than convolutions with the most self CPU time in one forward."""
    with torch.inference_mode():
        model(images)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(images)
    rows = [
        {"op": event.key, "ms": event.self_cpu_time_total / 1e3, "calls": event.count}
        for event in prof.key_averages()
        if "conv" not in event.key
    ]
    return sorted(rows, key=lambda row: -row["ms"])[:count]


def kernel_entries(size: tuple[int, int]) -> dict[str, Any]:
    """Single convolutions of the SSN stride-8 stage (128 channels at 1/8), both layouts."""
    height, width = size[0] // 8, size[1] // 8
    shapes = {
        "3x3": ((3, 3), (1, 1)),
        "3x1": ((3, 1), (1, 1)),
        "1x3": ((1, 3), (1, 1)),
        **{f"3x1 dilated {d}": ((3, 1), (d, 1)) for d in (2, 4, 8, 16)},
    }
    entries = {}
    for layout, memory_format in (
        ("NCHW", torch.contiguous_format),
        ("NHWC", torch.channels_last),
    ):
        x = torch.randn(1, 128, height, width).contiguous(memory_format=memory_format)
        for name, (kernel, dilation) in shapes.items():
            padding = tuple(d * (k // 2) for k, d in zip(kernel, dilation, strict=True))
            conv = nn.Conv2d(128, 128, kernel, padding=padding, dilation=dilation).eval()
            conv = conv.to(memory_format=memory_format)
            gmac = 128 * 128 * kernel[0] * kernel[1] * height * width / 1e9
            entries[f"{name} {layout}"] = (conv, x, gmac)
        peak_x = torch.randn(1, PEAK_CHANNELS, 128, 256).contiguous(memory_format=memory_format)
        peak = nn.Conv2d(PEAK_CHANNELS, PEAK_CHANNELS, 3, padding=1).eval()
        peak = peak.to(memory_format=memory_format)
        entries[f"peak 3x3 256->256 {layout}"] = (peak, peak_x, 256 * 256 * 9 * 128 * 256 / 1e9)
    return entries


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x2048", help="HxW of the models' input")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=2, help="profiled forward passes per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of the kernels")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "conv_efficiency.json"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    console = Console()
    images = torch.randn(1, 3, *size)
    profiles: dict[str, Any] = {}
    for name, config in MODELS.items():
        cfg = load_run_config(REPO / config)
        model = build_segmentor(cfg.model, num_classes=19).eval()
        with torch.inference_mode():
            gmac = count_flops(model, images).total / 1e9
        prepared = prepare_model(model, InferenceOptions(), device="cpu")
        runner = InferenceRunner(prepared.model, prepared.options)
        groups, total_ms = time_convolutions(runner, images, args.runs)
        others = top_other_operators(runner, images)
        profiles[name] = {
            "config": config,
            "gmac": gmac,
            "options": prepared.options.describe(),
            "ms_per_forward": total_ms,
            "groups": groups,
            "top_other_operators": others,
        }
        table = Table(title=f"{name} ({config}, {gmac:.1f} GMAC, {total_ms:.0f} ms a forward)")
        for column in ("group", "calls", "ms", "% time", "GMAC", "GFLOP/s"):
            table.add_column(column, justify="left" if column == "group" else "right")
        for group, value in groups.items():
            value["gflops_per_s"] = (
                2 * value["gmac"] / (value["ms"] / 1e3) if value["gmac"] else None
            )
            table.add_row(
                group,
                f"{value['calls']:.0f}",
                f"{value['ms']:.1f}",
                f"{100 * value['ms'] / total_ms:.1f}",
                f"{value['gmac']:.2f}" if value["gmac"] else "",
                f"{value['gflops_per_s']:.1f}" if value["gflops_per_s"] else "",
            )
        console.print(table)
        console.print(
            "  other operators (self ms): "
            + ", ".join(f"{row['op']} {row['ms']:.0f}" for row in others)
        )

    entries = kernel_entries(size)
    with torch.inference_mode():
        times = round_robin(
            {name: (lambda c=conv, x=x: c(x)) for name, (conv, x, _) in entries.items()},
            warmup=args.warmup,
            repeats=args.repeats,
        )
    kernels = {}
    for name, (_, _, gmac) in entries.items():
        stats = summary(times[name])
        kernels[name] = {
            **stats,
            "gmac": gmac,
            "gflops_per_s": 2 * gmac / (stats["median_ms"] / 1e3),
        }
    peak = max(v["gflops_per_s"] for k, v in kernels.items() if k.startswith("peak"))
    table = Table(title=f"single convolutions, 128 ch at {size[0] // 8}x{size[1] // 8} (fp32)")
    for column in ("conv", "ms", "GFLOP/s", "% of peak"):
        table.add_column(column, justify="left" if column == "conv" else "right")
    for name, value in kernels.items():
        value["pct_of_peak"] = 100 * value["gflops_per_s"] / peak
        table.add_row(
            name,
            f"{value['median_ms']:.2f}",
            f"{value['gflops_per_s']:.1f}",
            f"{value['pct_of_peak']:.1f}",
        )
    console.print(table)
    result = {
        "size": list(size),
        "profiles": profiles,
        "kernels": kernels,
        "peak_gflops_per_s": peak,
    }
    write_result(args.json, result, threads=torch.get_num_threads())
    return result


if __name__ == "__main__":
    main()
