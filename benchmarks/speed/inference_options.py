"""Inference-speed options on a trained model: CamVid val mIoU and latency per option (issue 16).

For the trained checkpoint (default: the CamVid recipe's EfficientNet-Lite0 + ladder,
``runs/lite0/ladder_camvid/checkpoints/last.pt``; its config is inside), every option set of
:data:`VARIANTS` is applied with :func:`leanseg.inference.speed.prepare_model` and run through
:class:`leanseg.inference.speed.InferenceRunner`, as ``leanseg eval`` and ``leanseg predict`` do:

- accuracy: CamVid val (all 101 images unless ``--max-images``), one pass at ``--scale``
  (default 1.5, the recipe's validation scale), scored by
  :func:`leanseg.inference.predictor.predict_scores` and
  :class:`leanseg.metrics.semantic.SegmentationMetric`
  as :func:`leanseg.evaluation.evaluator.evaluate` scores them. Each image is run through every
  variant in turn, so the variants also share the load; besides mIoU the JSON gives the change
  against fp32 plain in points and the share of pixels whose label differs from fp32 plain
  (of all pixels, ignored ones included);
- latency: batch 1 at ``--size`` (default 1024x2048) on a random normal image, timed
  round-robin (:func:`common.round_robin`): ``--warmup`` untimed rounds, then ``--repeats``
  timed rounds, one call of each variant per round; the median is reported.

``--compile`` adds the ``torch.compile`` variants (compiling happens in the first call of each
input size: the CamVid images, then the latency size, each in an untimed warm-up call);
``--onnxruntime`` the onnxruntime backend (the model exported in-process with BN folded, verified,
and run by onnxruntime on as many threads as torch; needs ``leanseg[export]``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/speed/inference_options.py --threads 2

writes ``benchmarks/results/inference_options.json`` (rows, latencies; :func:`common.write_result`
adds the command, date, commit and machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

from leanseg.data import build_dataset, dataset_classes
from leanseg.inference.loading import load_trained_model
from leanseg.inference.predictor import predict_scores
from leanseg.inference.speed import PLAIN, InferenceOptions, InferenceRunner, prepare_model
from leanseg.metrics.semantic import SegmentationMetric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, round_robin, summary, write_result

# The option sets compared; "fp32 plain" is the reference of every difference.
VARIANTS: dict[str, InferenceOptions] = {
    "fp32 plain": PLAIN,
    "fold_bn": InferenceOptions(fold_bn=True, channels_last=False),
    "channels_last": InferenceOptions(fold_bn=False, channels_last=True),
    "fold_bn + channels_last": InferenceOptions(fold_bn=True, channels_last=True),
    "bf16 + fold_bn + channels_last": InferenceOptions(dtype="bf16"),
}
COMPILED: dict[str, InferenceOptions] = {
    "compile + fold_bn + channels_last": InferenceOptions(compile=True),
    "compile + bf16 + fold_bn + channels_last": InferenceOptions(dtype="bf16", compile=True),
}
ONNXRUNTIME: dict[str, InferenceOptions] = {
    "onnxruntime + fold_bn": InferenceOptions(backend="onnxruntime"),
}
REFERENCE = "fp32 plain"
DEFAULT_CHECKPOINT = REPO / "runs" / "lite0" / "ladder_camvid" / "checkpoints" / "last.pt"


def cpu_flags() -> list[str]:
    """Which of the CPU features that bf16 speed depends on this CPU has (from /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(flags.partition(":")[2].split())
    return [flag for flag in wanted if flag in present]


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x2048"`` -> ``(1024, 2048)``."""
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def evaluate_variants(
    runners: dict[str, InferenceRunner],
    dataset: Any,
    *,
    num_classes: int,
    scale: float,
    ignore_index: int,
    max_images: int | None,
) -> dict[str, dict[str, Any]]:
    """mIoU, pixel accuracy, label changes against :data:`REFERENCE` and forward times per variant.

    Every image is scored by every variant before the next image is read.
    """
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=1, shuffle=False)
    metrics = {name: SegmentationMetric(num_classes, ignore_index=ignore_index) for name in runners}
    changed = dict.fromkeys(runners, 0)
    times: dict[str, list[float]] = {name: [] for name in runners}
    pixels = 0
    with torch.no_grad():
        for index, batch in enumerate(loader, start=1):
            images, labels = batch["image"], batch["label"]
            predictions = {}
            for name, runner in runners.items():
                start = time.perf_counter()
                probabilities = predict_scores(runner, images, scales=(scale,))
                times[name].append((time.perf_counter() - start) * 1e3)
                predictions[name] = probabilities.argmax(dim=1)  # (1, H, W)
                metrics[name].update(predictions[name], labels)
            for name, prediction in predictions.items():
                changed[name] += int((prediction != predictions[REFERENCE]).sum())
            pixels += labels.numel()
            if index % 10 == 0 or index == count:
                print(f"  {index}/{count} images", file=sys.stderr, flush=True)
    rows = {}
    for name, metric in metrics.items():
        scores = metric.compute()
        rows[name] = {
            "miou": float(scores.miou),
            "pixel_accuracy": float(scores.pixel_accuracy),
            "labels_changed_fraction": changed[name] / pixels,
            "labels_changed_pixels": changed[name],
            # The first image of a compiled variant includes compiling: left out of the median.
            "eval_forward_ms_median": statistics.median(times[name][1:] or times[name]),
        }
    reference = rows[REFERENCE]["miou"]
    for row in rows.values():
        row["miou_change_points"] = 100 * (row["miou"] - reference)
    return rows


def time_variants(
    runners: dict[str, InferenceRunner], size: tuple[int, int], warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Median latency of each variant at ``size``, batch 1, timed round-robin."""
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))

    def call(runner: InferenceRunner) -> Any:
        return lambda: runner(images)

    def progress(name: str, round_index: int, milliseconds: float) -> None:
        print(f"  round {round_index}: {name} {milliseconds:.0f} ms", file=sys.stderr, flush=True)

    with torch.no_grad():
        times = round_robin(
            {name: call(runner) for name, runner in runners.items()},
            warmup=warmup,
            repeats=repeats,
            after=progress,
        )
    return {name: {**summary(values, warmup), "times_ms": values} for name, values in times.items()}


def print_table(result: dict[str, Any]) -> None:
    """The rows as a table on stdout."""
    table = Table(
        title=f"{result['checkpoint']} CamVid val at {result['scale']}x, {result['size']}"
    )
    for column in ("options", "applied", "mIoU %", "change (points)", "labels changed"):
        table.add_column(column)
    for column in ("eval forward ms", "latency ms", "vs plain"):
        table.add_column(column, justify="right")
    plain_ms = result["latency"][REFERENCE]["median_ms"]
    for name, row in result["rows"].items():
        latency = result["latency"][name]["median_ms"]
        table.add_row(
            name,
            row["applied"],
            f"{100 * row['miou']:.2f}",
            f"{row['miou_change_points']:+.3f}",
            f"{100 * row['labels_changed_fraction']:.4f} %",
            f"{row['eval_forward_ms_median']:.0f}",
            f"{latency:.0f}",
            f"{latency / plain_ms:.2f}x",
        )
    Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--scale", type=float, default=1.5, help="eval input scale (default 1.5)")
    parser.add_argument("--max-images", type=int, help="at most this many val images")
    parser.add_argument("--size", default="1024x2048", help="latency input HxW")
    parser.add_argument("--warmup", type=int, default=1, help="untimed latency rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed latency rounds")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants")
    parser.add_argument(
        "--onnxruntime", action="store_true", help="add the onnxruntime backend (leanseg[export])"
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "inference_options.json"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    trained = load_trained_model(args.checkpoint)
    cfg = trained.cfg
    model = trained.model
    variants = {
        **VARIANTS,
        **(COMPILED if args.compile else {}),
        **(ONNXRUNTIME if args.onnxruntime else {}),
    }
    runners = {}
    applied = {}
    for name, options in variants.items():
        prepared = prepare_model(model, options, device="cpu")
        for note in prepared.notes:
            print(f"{name}: note: {note}", file=sys.stderr)
        runners[name] = InferenceRunner(prepared.model, prepared.options)
        applied[name] = prepared
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    print(f"evaluating {len(runners)} variants on {cfg.data.val_split}", file=sys.stderr)
    start = time.perf_counter()
    rows = evaluate_variants(
        runners,
        dataset,
        num_classes=len(dataset_classes(cfg.data)),
        scale=args.scale,
        ignore_index=cfg.data.ignore_index,
        max_images=args.max_images,
    )
    eval_seconds = time.perf_counter() - start
    for name, row in rows.items():
        row["options"] = variants[name].to_dict()
        row["applied"] = applied[name].options.describe()
        row["notes"] = list(applied[name].notes)
    size = parse_size(args.size)
    # The accuracy part first, in case the timing is cut short.
    partial = {"checkpoint": str(args.checkpoint), "rows": rows, "partial": True}
    write_result(args.json, partial, cpu_flags=cpu_flags())
    print(f"timing at {size[0]}x{size[1]}", file=sys.stderr)
    latency = time_variants(runners, size, args.warmup, args.repeats)
    plain_ms = latency[REFERENCE]["median_ms"]
    for entry in latency.values():
        entry["vs_plain"] = entry["median_ms"] / plain_ms
    result = {
        "checkpoint": str(args.checkpoint),
        "iteration": trained.iteration,
        "model": f"{cfg.model.backbone['name']} + {cfg.model.head['name']}",
        "split": cfg.data.val_split,
        "images": min(len(dataset), args.max_images or len(dataset)),
        "scale": args.scale,
        "size": f"{size[0]}x{size[1]}",
        "rows": rows,
        "latency": latency,
        "eval_seconds": eval_seconds,
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_result(args.json, result, cpu_flags=cpu_flags())
    print_table(result)
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
