"""leanseg beside segmentation_models_pytorch (SMP) on CPU: GMAC, latency, share of a conv peak.

Issue 16's peers table, measured in one process on the same load. Models, 19 classes, random
initialisation, batch 1 at ``--size`` (default 1024x2048):

- SMP FPN-R18 and SMP DeepLabV3+-R18 (``encoder_weights=None``), eval mode as SMP ships them;
- leanseg ladder R18 (``configs/ldn/rn18_32to4_cityscapes.yaml``), bilinear R18
  (``configs/baseline/rn18_bilinear_cityscapes.yaml``), SSN encoder + iGUM
  (``configs/ssn/ssn_cityscapes.yaml``) and ERFNet + iGUM
  (``configs/ssn/erfnet_igum_cityscapes.yaml``), built from those configs by
  :func:`leanseg.models.build_segmentor`.

leanseg's "fastest exact settings" (fp32 rows): eval mode, ``torch.inference_mode``, every
foldable BatchNorm folded into its convolution (:func:`leanseg.nn.fold_bn.fold_batchnorm`, which
checks the folded model against the unfolded one), and the memory format (contiguous or
channels-last) that a short timed pre-pass found faster for that model (``--layout best``; the
pre-pass times are kept in the JSON). Nothing that changes the arithmetic (no reduced precision,
no nearest sampling in iGUM). The bf16 rows run the same folded models under
``torch.autocast("cpu", dtype=torch.bfloat16)``, their layout chosen by the same pre-pass. SMP
models run in fp32, contiguous, unfolded, under ``torch.inference_mode`` (as shipped), and again
with leanseg's settings (rows ``..., BN folded``: folded, layout and bf16 rows as for leanseg),
so that ``ladder_r18_over_smp_fpn_r18_same_settings`` compares the architectures alone.

Every row, and a 3x3 convolution (256 -> 256 channels at ``--peak-size``, both layouts, fp32 and
bf16) that gives the peak, is timed round-robin (:func:`common.round_robin`): ``--warmup`` untimed
rounds, then ``--repeats`` timed ones, one call of each per round; the median is reported.

Columns: GMAC (fused multiply-adds of convolutions and linear layers,
:func:`leanseg.profiling.flops.count_flops`; interpolation and sampling are not counted), median ms,
time over SMP FPN-R18's fp32 time (``vs_smp_fpn_r18``, below 1 is faster), GFLOP/s (2 FLOPs per
multiply-add, so ``2 * GMAC / seconds``) and that as a percentage of the faster layout of the 3x3
conv in the same dtype.

SMP needs torchvision, which does not import beside leanseg's CPU torch wheel: run this in the
peer environment that ``docs/peers_cpu.md`` builds, or with ``--skip-peers`` in leanseg's own:

    OMP_NUM_THREADS=2 /work/peer-env/bin/python benchmarks/speed/peers_cpu.py \
        --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from leanseg.models import build_segmentor, load_run_config
from leanseg.nn.fold_bn import fold_batchnorm
from leanseg.profiling.flops import count_flops, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, machine, round_robin, summary, write_result

SMP_FPN = "SMP FPN-R18"
SMP_DEEPLAB = "SMP DeepLabV3+-R18"
LADDER = "leanseg ladder R18"
# Suffix of the SMP rows given leanseg's settings (BN folded, the faster layout).
SAME_SETTINGS = ", BN folded"

# SMP model classes by row name; each gets encoder_name="resnet18", encoder_weights=None.
PEERS: dict[str, str] = {SMP_FPN: "FPN", SMP_DEEPLAB: "DeepLabV3Plus"}

# leanseg models by row name: the config whose model section builds them.
LEANSEG: dict[str, str] = {
    LADDER: "configs/ldn/rn18_32to4_cityscapes.yaml",
    "leanseg bilinear R18": "configs/baseline/rn18_bilinear_cityscapes.yaml",
    "leanseg SSN encoder + iGUM": "configs/ssn/ssn_cityscapes.yaml",
    "leanseg ERFNet + iGUM": "configs/ssn/erfnet_igum_cityscapes.yaml",
}

LAYOUTS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}
LAYOUT_LABELS = {"contiguous": "NCHW", "channels_last": "NHWC"}  # the table's short names
DTYPES = ("fp32", "bf16")
PEAK_CHANNELS = 256
FOLD_CROP = (256, 512)  # BN folding is checked on a crop: folding does not depend on the size


@dataclass
class Entry:
    """One timed thing: a table row (model and dtype) or a peak-conv variant.

    Attributes:
        name: the model's row name, or the peak conv's name.
        dtype: ``"fp32"`` or ``"bf16"`` (autocast).
        call: one forward.
        gmac: multiply-adds of one call, in billions.
        info: what goes into the JSON row besides the timing (kind, config, settings, ...).
    """

    name: str
    dtype: str
    call: Callable[[], object]
    gmac: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name} [{self.dtype}]"


# --------------------------------------------------------------------------- helpers


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x2048"`` -> ``(1024, 2048)`` (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 1024x2048, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def import_peers() -> ModuleType:
    """``segmentation_models_pytorch``, or exit saying why it cannot be used here."""
    try:
        import segmentation_models_pytorch as smp
        import torchvision  # noqa: F401  (SMP's ResNet encoders are torchvision's)
    except Exception as err:  # ImportError, or torchvision's ops failing beside this torch
        raise SystemExit(
            f"peers_cpu: the SMP peers cannot be built here ({type(err).__name__}: {err}).\n"
            "Run this script in the peer environment (docs/peers_cpu.md: a torch with a matching "
            "torchvision, segmentation-models-pytorch, leanseg), or pass --skip-peers to time "
            "the leanseg models alone."
        ) from None
    return smp


def version_of(module_name: str) -> str | None:
    """``__version__`` of an importable module, ``None`` if it is not importable."""
    try:
        module = __import__(module_name)
    except Exception:
        return None
    return getattr(module, "__version__", None)


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix flags that decide fp32 / bf16 speed (AVX-512, AMX)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in present]
    return []


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """bf16 autocast on the CPU for ``"bf16"``; nothing for ``"fp32"``."""
    if dtype == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def forward(model: nn.Module, images: Tensor, dtype: str) -> Callable[[], object]:
    """One forward of ``model`` on ``images`` in ``dtype``."""

    def call() -> object:
        with precision(dtype):
            return model(images)

    return call


def gflops_per_s(gmac: float, milliseconds: float) -> float:
    """GFLOP/s of ``gmac`` billion multiply-adds in ``milliseconds`` (2 FLOPs each)."""
    return 2.0 * gmac / (milliseconds / 1e3)


# --------------------------------------------------------------------------- models


def build_leanseg(config: str, num_classes: int, images: Tensor) -> tuple[nn.Module, int]:
    """The config's model, random init, BatchNorm folded, eval mode; and its parameter count."""
    cfg = load_run_config(REPO / config)
    model = build_segmentor(cfg.model, num_classes=num_classes, ignore_index=cfg.data.ignore_index)
    parameters = count_parameters(model)
    example = images[..., : FOLD_CROP[0], : FOLD_CROP[1]]
    return fold_batchnorm(model.eval(), example), parameters


def layout_variants(model: nn.Module, images: Tensor) -> dict[str, tuple[nn.Module, Tensor]]:
    """The model and input in each memory format (copies, so both can be timed)."""
    variants = {}
    for layout, memory_format in LAYOUTS.items():
        moved = copy.deepcopy(model).to(memory_format=memory_format)
        variants[layout] = (moved, images.contiguous(memory_format=memory_format))
    return variants


def choose_layouts(
    variants: dict[str, dict[str, tuple[nn.Module, Tensor]]],
    mode: str,
    repeats: int,
) -> tuple[dict[tuple[str, str], str], dict[str, dict[str, dict[str, float]]]]:
    """The memory format of every (leanseg model, dtype): the given one, or the faster one.

    With ``mode="best"`` every model in both layouts and both dtypes is timed round-robin (one
    warm-up round, ``repeats`` timed) and the layout with the lower median is chosen.

    Returns:
        The layout by ``(model, dtype)``, and the pre-pass medians by model, dtype and layout
        (empty unless ``mode="best"``).
    """
    if mode != "best":
        return {(name, dtype): mode for name in variants for dtype in DTYPES}, {}
    calls = {
        (name, dtype, layout): forward(model, images, dtype)
        for name, layouts in variants.items()
        for dtype in DTYPES
        for layout, (model, images) in layouts.items()
    }
    with torch.inference_mode():
        times = round_robin(calls, warmup=1, repeats=repeats)
    trials: dict[str, dict[str, dict[str, float]]] = {}
    for (name, dtype, layout), values in times.items():
        trials.setdefault(name, {}).setdefault(dtype, {})[layout] = summary(values)["median_ms"]
    chosen = {
        (name, dtype): min(by_layout, key=by_layout.__getitem__)
        for name, by_dtype in trials.items()
        for dtype, by_layout in by_dtype.items()
    }
    return chosen, trials


def peak_entries(size: tuple[int, int]) -> list[Entry]:
    """A bias-free 3x3 conv, 256 -> 256 channels at ``size``, in both layouts and dtypes."""
    conv = nn.Conv2d(PEAK_CHANNELS, PEAK_CHANNELS, 3, padding=1, bias=False).eval()
    inputs = torch.randn(1, PEAK_CHANNELS, *size, generator=torch.Generator().manual_seed(1))
    gmac = size[0] * size[1] * PEAK_CHANNELS * PEAK_CHANNELS * 9 / 1e9
    entries = []
    for layout, memory_format in LAYOUTS.items():
        moved = copy.deepcopy(conv).to(memory_format=memory_format)
        laid_out = inputs.contiguous(memory_format=memory_format)
        for dtype in DTYPES:
            name = f"conv3x3 {PEAK_CHANNELS}->{PEAK_CHANNELS} {size[0]}x{size[1]} {layout}"
            entries.append(
                Entry(name, dtype, forward(moved, laid_out, dtype), gmac, {"layout": layout})
            )
    return entries


# --------------------------------------------------------------------------- report


def print_table(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """The peers table: one line per model and dtype."""
    table = Table(title=title)
    for column in ("model", "dtype", "layout", "GMAC", "ms", "vs SMP FPN-R18", "GFLOP/s", "% peak"):
        table.add_column(column, justify="left" if column in ("model", "dtype") else "right")
    for row in rows:
        ratio = row["vs_smp_fpn_r18"]
        table.add_row(
            row["model"],
            row["dtype"],
            LAYOUT_LABELS[row["settings"]["layout"]],
            f"{row['gmac']:.1f}",
            f"{row['median_ms']:.0f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{row['gflops_per_s']:.1f}",
            f"{row['pct_of_peak']:.1f}",
        )
    console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds (default 2)")
    parser.add_argument(
        "--size", type=parse_size, default=(1024, 2048), help="HxW input (default 1024x2048)"
    )
    parser.add_argument(
        "--peak-size",
        type=parse_size,
        default=(128, 256),
        help="HxW of the 256->256 3x3 conv that gives the peak (default 128x256)",
    )
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument(
        "--layout",
        choices=["best", *LAYOUTS],
        default="best",
        help="memory format of the leanseg models; best: the faster in a timed pre-pass",
    )
    parser.add_argument(
        "--layout-repeats", type=int, default=2, help="timed rounds of the layout pre-pass"
    )
    parser.add_argument(
        "--skip-peers",
        action="store_true",
        help="time the leanseg models only (no SMP / torchvision needed)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO / "benchmarks" / "results" / "peers_cpu.json",
        help="where the results go (default benchmarks/results/peers_cpu.json)",
    )
    args = parser.parse_args(argv)
    if min(args.threads, args.repeats, args.layout_repeats) < 1 or args.warmup < 0:
        parser.error("--threads, --repeats and --layout-repeats must be >= 1, --warmup >= 0")
    return args


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print the table, write the JSON; returns what was written."""
    args = parse_args(argv)
    # Rich wraps at 80 columns when the output is not a terminal; the table needs more.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    smp = None if args.skip_peers else import_peers()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(0))

    entries: list[Entry] = []
    # Models timed in both layouts and dtypes (the layout pre-pass picks one per dtype): leanseg's
    # with its defaults, and the SMP peers given the same treatment (BN folded, faster layout).
    variants: dict[str, dict[str, tuple[nn.Module, Tensor]]] = {}
    parameters: dict[str, int] = {}
    gmacs: dict[str, float] = {}
    kinds: dict[str, dict[str, Any]] = {}
    if smp is not None:
        for name, class_name in PEERS.items():
            model = getattr(smp, class_name)(
                encoder_name="resnet18", encoder_weights=None, classes=args.num_classes
            ).eval()
            info = {
                "kind": "smp",
                "smp_class": class_name,
                "parameters": count_parameters(model),
                "settings": {"layout": "contiguous", "bn_folded": False, "autocast": None},
            }
            gmac = count_flops(model, images).total / 1e9
            entries.append(Entry(name, "fp32", forward(model, images, "fp32"), gmac, info))
            same = f"{name}{SAME_SETTINGS}"
            example = images[..., : FOLD_CROP[0], : FOLD_CROP[1]]
            variants[same] = layout_variants(fold_batchnorm(model, example), images)
            parameters[same], gmacs[same] = info["parameters"], gmac
            kinds[same] = {"kind": "smp", "smp_class": class_name}

    for name, config in LEANSEG.items():
        console.print(f"building {name} ({config})")
        model, parameters[name] = build_leanseg(config, args.num_classes, images)
        gmacs[name] = count_flops(model, images).total / 1e9
        variants[name] = layout_variants(model, images)
        kinds[name] = {"kind": "leanseg", "config": config}
    if args.layout == "best":
        console.print(
            f"layout pre-pass: {len(variants) * 4} variants, {args.layout_repeats} rounds"
        )
    chosen, trials = choose_layouts(variants, args.layout, args.layout_repeats)
    for dtype in DTYPES:
        for name in variants:
            layout = chosen[(name, dtype)]
            model, laid_out = variants[name][layout]
            info = {
                **kinds[name],
                "parameters": parameters[name],
                "settings": {
                    "layout": layout,
                    "bn_folded": True,
                    "autocast": "bfloat16" if dtype == "bf16" else None,
                },
            }
            call = forward(model, laid_out, dtype)
            entries.append(Entry(name, dtype, call, gmacs[name], info))
    peaks = peak_entries(args.peak_size)

    timed = [*entries, *peaks]
    console.print(
        f"timing {len(timed)} calls round-robin: {args.warmup} warm-up + {args.repeats} rounds, "
        f"{args.threads} threads, input {args.size[0]}x{args.size[1]}"
    )
    with torch.inference_mode():
        times = round_robin({entry.key: entry.call for entry in timed}, args.warmup, args.repeats)

    peak: dict[str, Any] = {}
    for entry in peaks:
        latency = summary(times[entry.key], warmup=args.warmup)
        rate = gflops_per_s(entry.gmac, latency["median_ms"])
        variant = {"median_ms": latency["median_ms"], "gflops_per_s": rate, **entry.info}
        best = peak.setdefault(entry.dtype, {"gflops_per_s": 0.0, "variants": {}})
        best["variants"][entry.info["layout"]] = variant
        if rate > best["gflops_per_s"]:
            best.update(gflops_per_s=rate, layout=entry.info["layout"], gmac=entry.gmac)

    fpn_ms = summary(times[f"{SMP_FPN} [fp32]"])["median_ms"] if smp is not None else None
    rows = []
    for entry in entries:
        latency = summary(times[entry.key], warmup=args.warmup)
        rate = gflops_per_s(entry.gmac, latency["median_ms"])
        rows.append(
            {
                "model": entry.name,
                "dtype": entry.dtype,
                "gmac": entry.gmac,
                "median_ms": latency["median_ms"],
                "vs_smp_fpn_r18": None if fpn_ms is None else latency["median_ms"] / fpn_ms,
                "gflops_per_s": rate,
                "pct_of_peak": 100.0 * rate / peak[entry.dtype]["gflops_per_s"],
                **entry.info,
                "latency": latency,
                "times_ms": times[entry.key],
            }
        )
    ladder = next(row for row in rows if row["model"] == LADDER and row["dtype"] == "fp32")
    ratio = ladder["vs_smp_fpn_r18"]
    same_ratio = None
    if smp is not None:
        fpn_same = next(
            row
            for row in rows
            if row["model"] == f"{SMP_FPN}{SAME_SETTINGS}" and row["dtype"] == "fp32"
        )
        same_ratio = ladder["median_ms"] / fpn_same["median_ms"]

    title = (
        f"CPU, {args.threads} threads, 1x3x{args.size[0]}x{args.size[1]}, "
        f"{args.num_classes} classes, median of {args.repeats}, round-robin"
    )
    print_table(console, rows, title)
    for dtype, best in peak.items():
        console.print(
            f"3x3-conv peak {dtype}: {best['gflops_per_s']:.1f} GFLOP/s ({best['layout']}, "
            f"{PEAK_CHANNELS}->{PEAK_CHANNELS} at {args.peak_size[0]}x{args.peak_size[1]})"
        )
    if ratio is None:
        console.print("SMP peers skipped (--skip-peers): no vs SMP FPN-R18 column, no ratio")
    else:
        console.print(f"ladder_r18_over_smp_fpn_r18: {ratio:.3f}")
        console.print(f"ladder_r18_over_smp_fpn_r18_same_settings: {same_ratio:.3f}")

    payload = {
        "ladder_r18_over_smp_fpn_r18": ratio,
        "ladder_r18_over_smp_fpn_r18_same_settings": same_ratio,
        "rows": rows,
        "peak": {
            "conv": f"3x3, {PEAK_CHANNELS}->{PEAK_CHANNELS}, no bias, batch 1",
            "size": list(args.peak_size),
            **peak,
        },
        "layout_pre_pass": {
            "mode": args.layout,
            "repeats": args.layout_repeats if args.layout == "best" else 0,
            "medians_ms": trials,
        },
        "input": [1, 3, *args.size],
        "num_classes": args.num_classes,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "peers_skipped": smp is None,
        "flop_per_mac": 2,
        "command": shlex.join(
            [
                sys.executable,
                "benchmarks/speed/peers_cpu.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "machine": machine(
            "cpu",
            cpu_flags=cpu_flags(),
            torchvision_version=version_of("torchvision") if smp is not None else None,
            smp_version=getattr(smp, "__version__", None),
        ),
    }
    write_result(args.json, payload)  # keeps the command and machine above
    console.print(f"written: {args.json}")
    return payload


if __name__ == "__main__":
    main()
