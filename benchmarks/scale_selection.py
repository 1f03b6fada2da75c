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

Not measured here (issue 14 leaves them open): the dense CRF rows and the cost at 1024x2048.

Usage (the real budget takes hours on one CPU thread; a smoke run proves the script)::

    python benchmarks/scale_selection.py                       # 600 iterations, seeds 0 1
    python benchmarks/scale_selection.py --iters 2 --num-train 4 --num-val 2 \\
        --out /tmp/ss.json --png /tmp/ss.png --work-root /tmp/ss_runs
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from leanseg.data.synthetic import CLASSES, generate_scene, scene_seed
from leanseg.engine.trainer import Trainer
from leanseg.models import load_run_config

ROOT = Path(__file__).resolve().parents[1]
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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random-init extractor (no weights package)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/scale_selection.json"
    )
    parser.add_argument("--png", type=Path, default=RESULTS / "scale_selection.png")
    parser.add_argument("--work-root", type=Path, default=ROOT / "runs/benchmarks/scale_selection")
    return parser.parse_args()


def run_row(row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one row of Table 3.1 with one seed; its validation scores and time."""
    overrides: dict[str, Any] = {
        "train.max_iters": args.iters,
        "train.eval_interval": args.iters,
        "train.checkpoint_interval": args.iters,
        "train.seed": seed,
        "train.num_threads": args.threads,
        # One option sizes both splits: num_train scenes each, of which num_val are evaluated.
        "data.options.num_samples": args.num_train,
        "eval.max_images": args.num_val,
        "work_dir": str(args.work_root / f"{row}_seed{seed}"),
    }
    if args.batch_size is not None:
        overrides["data.batch_size"] = args.batch_size
    if args.no_pretrained:
        overrides["model.backbone.pretrained"] = None
    cfg = load_run_config(CONFIGS / f"{row}_lite0_synthetic.yaml", overrides)
    start = time.perf_counter()
    trainer = Trainer(cfg, force=True, show_progress=False)
    result = trainer.train()
    scores = result.final_scores
    assert scores is not None  # the last step always evaluates
    return {
        "seed": seed,
        "miou": float(scores.miou),
        "iou": [None if math.isnan(v) else float(v) for v in scores.iou],  # None: absent
        "pixel_accuracy": float(scores.pixel_accuracy),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


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
    torch.set_num_threads(args.threads)
    base = load_run_config(CONFIGS / "scale_invariant_lite0_synthetic.yaml")
    size = tuple(base.data.options["size"])
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    for seed in args.seeds:
        for row in ROWS:
            record = run_row(row, seed, args)
            runs[row].append(record)
            print(f"{LABELS[row]:15s} seed {seed}: mIoU {record['miou']:.4f}", flush=True)
    mean_miou = {row: float(np.mean([r["miou"] for r in runs[row]])) for row in ROWS}
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
        "what": "thesis Table 3.1 rows on the synthetic scenes, equal budget (benchmarks/"
        "scale_selection.py); Fig. 3.4 as the PNG",
        "settings": {
            "configs": [f"configs/scale_selection/{row}_lite0_synthetic.yaml" for row in ROWS],
            "iters": args.iters,
            "seeds": args.seeds,
            "num_train": args.num_train,
            "num_val": args.num_val,
            "scene_size": list(size),
            "batch_size": args.batch_size or base.data.batch_size,
            "pretrained_extractor": not args.no_pretrained,
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "classes": list(CLASSES),
        "train_pixel_share": frequency,
        "rows": {
            LABELS[row]: {"mean_miou": mean_miou[row], "mean_iou": mean_iou[row], "runs": runs[row]}
            for row in ROWS
        },
        "iou_gain_scale_invariant_over_single3_5": gain,
        "thesis_ordering": "ScaleInvariant > FixedScales > Single3+5 > Single5",
        "ordering_holds_on_mean_miou": ordering(mean_miou),
        "ordering_holds_per_seed": per_seed,
        "png": str(args.png),
        "not_measured": ["dense CRF rows", "cost at 1024x2048"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ordering holds on mean mIoU: {result['ordering_holds_on_mean_miou']}; wrote {args.out}")


if __name__ == "__main__":
    main()
