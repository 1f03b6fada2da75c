"""Thesis Table 3.1 and Fig. 3.4 on the synthetic street scenes: the four scale-selection rows.

Trains Single5, Single3+5, FixedScales and ScaleInvariant (``configs/scale_selection/
*_lite0_synthetic.yaml``: shared Lite0 extractor, 128-map back-end, class-balanced loss) at an
equal budget (same iterations, batch, data, schedule) for every seed, through the one trainer and
evaluator, and writes

- ``--out`` (``benchmarks/results/scale_selection.json``): per row and seed the per-class IoU and
  mIoU on the validation scenes, their means over seeds, the training pixel frequency of each
  class, and whether the thesis ordering ScaleInvariant > FixedScales > Single3+5 > Single5 holds
  (on the mean mIoU, and seed by seed);
- ``--png``: Fig. 3.4, the per-class IoU gain of ScaleInvariant over Single3+5 against the class's
  share of the training pixels (log scale), drawn with PIL.

Each trained model is then evaluated twice on the validation scenes, as is and with the fully
connected CRF of thesis 3.4 (:class:`leanseg.config.CRFConfig`'s defaults, the thesis grid's
middle): mIoU, per-class IoU and CPU seconds per megapixel of the whole inference (network and
CRF, one thread) for both; and per-class IoU within three disparity bands (terciles of the
scenes' valid disparity: far, middle, near), to see at which depths a row wins or loses.

The trainings are ``leanseg train`` processes (``common.train``), ``--jobs`` at a time, one
thread each; their logs are ``ROW_seedN.log`` beside the run folders. ``--skip-train``
evaluates the runs already in ``--work-root``.

Usage (the real budget is about 100 CPU-minutes of training; a smoke run proves the script)::

    python benchmarks/papers/scale_selection.py --jobs 2               # 600 iterations, seeds 0 1
    python benchmarks/papers/scale_selection.py --iters 2 --num-train 4 --num-val 2 \\
        --out /tmp/ss.json --png /tmp/ss.png --work-root /tmp/ss_runs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from leanseg.config import CRFConfig
from leanseg.data import build_dataset
from leanseg.data.synthetic import CLASSES, generate_scene, scene_seed
from leanseg.data.transforms import input_statistics
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.inference.loading import load_trained_model
from leanseg.metrics.semantic import SegmentationMetric
from leanseg.models import load_run_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import TrainJob, read_metrics, train, write_result

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "scale_selection"
RESULTS = ROOT / "benchmarks" / "results"
# Table 3.1 rows, worst to best as the thesis orders them.
ROWS = ("single5", "single3_5", "fixed_scales", "scale_invariant")
LABELS = {
    "single5": "Single5",
    "single3_5": "Single3+5",
    "fixed_scales": "FixedScales",
    "scale_invariant": "ScaleInvariant",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=600, help="training iterations per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-train", type=int, default=200, help="training scenes")
    parser.add_argument("--num-val", type=int, default=40, help="validation scenes evaluated")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the configs'")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (1 thread each)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing runs")
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random-init extractor (no weights package)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_selection.json")
    parser.add_argument("--png", type=Path, default=RESULTS / "scale_selection.png")
    parser.add_argument("--work-root", type=Path, default=ROOT / "runs/benchmarks/scale_selection")
    return parser.parse_args()


def train_job(row: str, seed: int, args: argparse.Namespace) -> TrainJob:
    """The ``leanseg train`` run of one row of Table 3.1 with one seed."""
    work_dir = args.work_root / f"{row}_seed{seed}"
    overrides = [
        f"train.max_iters={args.iters}",
        f"train.eval_interval={args.iters}",
        f"train.checkpoint_interval={args.iters}",
        f"train.seed={seed}",
        "train.num_threads=1",
        # One option sizes both splits: num_train scenes each, of which num_val are evaluated.
        f"data.options.num_samples={args.num_train}",
        f"eval.max_images={args.num_val}",
    ]
    if args.batch_size is not None:
        overrides.append(f"data.batch_size={args.batch_size}")
    if args.no_pretrained:
        overrides.append("model.backbone.pretrained=null")
    config = CONFIGS / f"{row}_lite0_synthetic.yaml"
    log = args.work_root / f"{row}_seed{seed}.log"  # beside the run: leanseg owns its folder
    return TrainJob(f"{row} seed {seed}", config, work_dir, overrides, log)


def scores_record(scores: Any, cpu_seconds: float, megapixels: float) -> dict[str, Any]:
    """mIoU, per-class IoU (``None``: class absent) and CPU seconds per megapixel."""
    return {
        "miou": float(scores.miou),
        "iou": [None if math.isnan(v) else float(v) for v in scores.iou],
        "pixel_accuracy": float(scores.pixel_accuracy),
        "cpu_seconds_per_megapixel": round(cpu_seconds / megapixels, 3),
    }


# Disparity bands of the by-depth scores: terciles of the valid disparity of the evaluated scenes.
BANDS = ("far", "middle", "near")


def disparity_edges(dataset: Any, count: int) -> list[float]:
    """The two disparity values that split the scenes' valid (> 0) disparity into terciles."""
    maps = [dataset[index]["disparity"] for index in range(count)]
    values = torch.cat([disparity[disparity > 0] for disparity in maps])
    return torch.quantile(values, torch.tensor([1 / 3, 2 / 3])).tolist()


@torch.no_grad()
def iou_by_disparity(model: torch.nn.Module, dataset: Any, count: int, edges: list[float]) -> dict:
    """Per-class IoU within each disparity band (pixels of the band only; unknown disparity in
    none): where in depth a row wins or loses. The model as trained, one pass per scene."""
    model.eval()
    metrics = {band: SegmentationMetric(len(CLASSES)) for band in BANDS}
    for index in range(count):
        sample = dataset[index]
        disparity = sample["disparity"]
        scores = model(sample["image"][None], disparity[None], sample["stereo_baseline"][None])
        pred = scores.argmax(1)[0]
        band_of = torch.bucketize(disparity, torch.tensor(edges))  # 0 far, 1 middle, 2 near
        for number, band in enumerate(BANDS):
            inside = (band_of == number) & (disparity > 0)
            label = torch.where(inside, sample["label"], torch.full_like(sample["label"], 255))
            metrics[band].update(pred[None], label[None])
    result = {}
    for band, metric in metrics.items():
        scores = metric.compute()
        result[band] = [None if math.isnan(v) else float(v) for v in scores.iou]
    return result


def evaluate_run(job: TrainJob, seed: int, crf: CRFConfig) -> dict[str, Any]:
    """Validation scores of one trained run (its last checkpoint), without and with the CRF.

    CPU time is :func:`time.process_time` around the whole evaluation (network, CRF, metric) on
    one thread, divided by the evaluated megapixels. ``train_seconds_logged``: from the run's
    first to its last ``metrics.jsonl`` record (training and its final validation).
    """
    trained = load_trained_model(job.work_dir / "checkpoints" / "last.pt")
    cfg = trained.cfg
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    count = min(len(dataset), cfg.eval.max_images or len(dataset))
    height, width = cfg.data.options["size"]
    megapixels = count * height * width / 1e6
    record: dict[str, Any] = {"seed": seed}
    for name, crf_cfg in (("plain", None), ("crf", crf)):
        eval_cfg = dataclasses.replace(cfg.eval, crf=crf_cfg)
        start = time.process_time()
        evaluators = default_evaluators(
            trained.model,
            num_classes=len(CLASSES),
            boundary_width=eval_cfg.boundary_width,
            ignore_index=cfg.data.ignore_index,
        )
        scores = evaluate(
            trained.model,
            dataset,
            evaluators,
            eval_cfg=eval_cfg,
            device=torch.device("cpu"),
            image_statistics=input_statistics(cfg.data),
        )
        record[name] = scores_record(scores, time.process_time() - start, megapixels)
    record["miou"] = record["plain"]["miou"]
    record["iou"] = record["plain"]["iou"]
    logged = [record["time"] for record in read_metrics(job.work_dir) if "time" in record]
    record["train_seconds_logged"] = round(logged[-1] - logged[0]) if logged else None
    edges = disparity_edges(dataset, count)
    record["disparity_band_edges"] = edges
    record["iou_by_disparity_band"] = iou_by_disparity(trained.model, dataset, count, edges)
    return record


def class_frequency(num_scenes: int, size: tuple[int, int], seed: int = 0) -> list[float]:
    """Share of each class among the training scenes' pixels (the last row of Table 3.1)."""
    counts = np.zeros(len(CLASSES), np.int64)
    for index in range(num_scenes):
        label = generate_scene(scene_seed("train", index, seed), size)["label"]
        counts += np.bincount(label.ravel(), minlength=len(CLASSES))[: len(CLASSES)]
    return (counts / counts.sum()).tolist()


def nanmean(values: list[list[float]]) -> list[float | None]:
    """Per-class mean over seeds of the IoUs that are defined; ``None`` where none is."""
    means: list[float | None] = []
    for column in np.array(values, dtype=np.float64).T:  # None -> NaN
        finite = column[np.isfinite(column)]
        means.append(float(finite.mean()) if finite.size else None)
    return means


def ordering(mious: dict[str, float]) -> bool:
    """ScaleInvariant > FixedScales > Single3+5 > Single5."""
    ranked = [mious[row] for row in reversed(ROWS)]
    return all(a > b for a, b in zip(ranked, ranked[1:], strict=False))


def draw_gain_plot(gain: list[float | None], frequency: list[float], path: Path) -> None:
    """Fig. 3.4: IoU gain (ScaleInvariant - Single3+5, points) against training share (log)."""
    width, height, margin = 720, 440, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [(f, g, name) for f, g, name in zip(frequency, gain, CLASSES, strict=True)]
    points = [(f, g, name) for f, g, name in points if f > 0 and g is not None]
    x_low = math.floor(math.log10(min(f for f, _, _ in points))) if points else -3
    x_high = math.ceil(math.log10(max(f for f, _, _ in points))) if points else 0
    x_high = max(x_high, x_low + 1)
    span = max([abs(g) for _, g, _ in points] + [0.02])
    y_low, y_high = -span * 1.1, span * 1.1

    def to_pixel(frequency: float, gain: float) -> tuple[float, float]:
        fx = (math.log10(frequency) - x_low) / (x_high - x_low)
        fy = (gain - y_low) / (y_high - y_low)
        return margin + fx * (width - 2 * margin), height - margin - fy * (height - 2 * margin)

    left, right = margin, width - margin
    top, bottom = margin, height - margin
    draw.rectangle((left, top, right, bottom), outline="black")
    zero = to_pixel(10**x_low, 0.0)[1]
    draw.line((left, zero, right, zero), fill=(160, 160, 160))
    for exponent in range(x_low, x_high + 1):
        x = to_pixel(10**exponent, 0.0)[0]
        draw.line((x, bottom, x, bottom + 5), fill="black")
        draw.text((x - 12, bottom + 8), f"1e{exponent}", fill="black")
    for tick in np.linspace(y_low, y_high, 5):
        y = to_pixel(10**x_low, float(tick))[1]
        draw.line((left - 5, y, left, y), fill="black")
        draw.text((8, y - 6), f"{tick * 100:+.1f}", fill="black")
    for frequency_value, gain_value, name in points:
        x, y = to_pixel(frequency_value, gain_value)
        colour = (0, 120, 0) if gain_value >= 0 else (190, 0, 0)
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        draw.text((x + 6, y - 6), name, fill="black")
    draw.text((left, 20), "IoU gain ScaleInvariant - Single3+5 (points) vs class share", "black")
    draw.text((width // 2 - 80, height - 28), "share of training pixels (log)", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)  # configs and run folders relative to the repository
    torch.set_num_threads(1)
    base = load_run_config(CONFIGS / "scale_invariant_lite0_synthetic.yaml")
    size = tuple(base.data.options["size"])
    jobs = {(row, seed): train_job(row, seed, args) for seed in args.seeds for row in ROWS}
    start = time.perf_counter()
    if not args.skip_train:
        train(list(jobs.values()), parallel=args.jobs)
    train_wall_seconds = time.perf_counter() - start
    crf = CRFConfig()
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    for (row, seed), job in jobs.items():
        record = evaluate_run(job, seed, crf)
        record["train_log"] = str(job.log)
        runs[row].append(record)
        print(
            f"{LABELS[row]:15s} seed {seed}: mIoU {record['plain']['miou']:.4f}, "
            f"with CRF {record['crf']['miou']:.4f}",
            flush=True,
        )

    def mean_of(row: str, mode: str, key: str) -> float:
        return float(np.mean([r[mode][key] for r in runs[row]]))

    mean_miou = {row: mean_of(row, "plain", "miou") for row in ROWS}
    mean_miou_crf = {row: mean_of(row, "crf", "miou") for row in ROWS}
    mean_iou = {row: nanmean([r["iou"] for r in runs[row]]) for row in ROWS}
    per_seed = [
        ordering({row: runs[row][i]["miou"] for row in ROWS}) for i in range(len(args.seeds))
    ]
    frequency = class_frequency(args.num_train, size)
    gain = [
        None if a is None or b is None else a - b
        for a, b in zip(mean_iou["scale_invariant"], mean_iou["single3_5"], strict=True)
    ]
    draw_gain_plot(gain, frequency, args.png)
    result = {
        "what": "thesis Table 3.1 rows on the synthetic scenes, equal budget, with and without "
        "the dense CRF (benchmarks/papers/scale_selection.py); Fig. 3.4 as the PNG",
        "settings": {
            "configs": [f"configs/scale_selection/{row}_lite0_synthetic.yaml" for row in ROWS],
            "iters": args.iters,
            "seeds": args.seeds,
            "num_train": args.num_train,
            "num_val": args.num_val,
            "scene_size": list(size),
            "batch_size": args.batch_size or base.data.batch_size,
            "pretrained_extractor": not args.no_pretrained,
            "train_threads_per_run": 1,
            "train_jobs_at_a_time": args.jobs,
            "crf": vars(crf),
            "eval_threads": 1,
        },
        "classes": list(CLASSES),
        "train_pixel_share": frequency,
        "rows": {
            LABELS[row]: {
                "mean_miou": mean_miou[row],
                "mean_miou_crf": mean_miou_crf[row],
                "mean_iou": mean_iou[row],
                "mean_iou_crf": nanmean([r["crf"]["iou"] for r in runs[row]]),
                "cpu_seconds_per_megapixel": mean_of(row, "plain", "cpu_seconds_per_megapixel"),
                "cpu_seconds_per_megapixel_crf": mean_of(row, "crf", "cpu_seconds_per_megapixel"),
                "mean_iou_by_disparity_band": {
                    band: nanmean([r["iou_by_disparity_band"][band] for r in runs[row]])
                    for band in BANDS
                },
                "runs": runs[row],
            }
            for row in ROWS
        },
        "iou_gain_scale_invariant_over_single3_5": gain,
        "thesis_ordering": "ScaleInvariant > FixedScales > Single3+5 > Single5",
        "ordering_holds_on_mean_miou": ordering(mean_miou),
        "ordering_holds_on_mean_miou_crf": ordering(mean_miou_crf),
        "ordering_holds_per_seed": per_seed,
        "train_wall_seconds": None if args.skip_train else round(train_wall_seconds),
        "png": str(args.png),
    }
    write_result(args.out, result)
    print(f"ordering holds on mean mIoU: {result['ordering_holds_on_mean_miou']}; wrote {args.out}")


if __name__ == "__main__":
    main()
