"""``leanseg demo``: the whole pipeline on the built-in street scenes, on a CPU, in minutes.

1. Generates synthetic street scenes (train and held-out val) into ``RUN/data`` in the generic
   ``images/ + labels/`` folder layout, as a user's own data would be laid out.
2. Trains a ResNet-18 with a ladder-style upsampling head from scratch.
3. Evaluates it on the held-out scenes, beside a per-pixel colour classifier (nearest class-mean
   colour) fitted on the same training scenes, to show what colour alone achieves.
4. Writes prediction panels (image | ground truth | prediction) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from leanseg.config import Config, config_from_dict
from leanseg.engine.run_dir import RunDirError

# Scenes are generated at this size (height, width); training crops are smaller.
SCENE_SIZE = (256, 512)
NUM_TRAIN_SCENES = 240
NUM_VAL_SCENES = 40
NUM_PANELS = 6
DEFAULT_ITERS = 300


def demo_config(run_dir: Path, iters: int) -> Config:
    """The demo's run config; printed into ``RUN/config.yaml`` like any other run."""
    from leanseg.data.synthetic import CLASSES, PALETTE

    raw: dict[str, Any] = {
        "model": {
            "backbone": {"name": "resnet18"},
            "head": {"name": "ladder", "channels": 96},
        },
        "data": {
            "dataset": "folder",
            "root": str(run_dir / "data"),
            "classes": list(CLASSES),
            "options": {"palette": [list(colour) for colour in PALETTE]},
            "crop_size": [192, 384],
            "scale_range": [0.75, 1.5],
            "color_jitter": 0.2,
            "batch_size": 8,
            "num_workers": 0,
        },
        "train": {
            "optimizer": "adam",
            "lr": 2e-3,
            "weight_decay": 1e-5,
            "schedule": "cosine",
            "min_lr": 1e-6,
            "warmup_iters": 20,
            "max_iters": iters,
            "eval_interval": max(iters // 3, 1),
            "checkpoint_interval": max(iters // 6, 1),
            "log_interval": 10,
            "seed": 0,
        },
        "eval": {"boundary_width": 4},
        "work_dir": str(run_dir),
    }
    return config_from_dict(raw, source="leanseg demo")


def run_demo(
    run_dir: Path,
    *,
    iters: int | None = None,
    force: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo into ``run_dir`` and return its summary (also written as JSON)."""
    from leanseg.engine.trainer import Trainer

    console = console or Console(stderr=True)
    started = time.perf_counter()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    cfg = demo_config(run_dir, iters or DEFAULT_ITERS)
    _check_run_dir(run_dir, force)
    console.rule("[bold]leanseg demo")
    console.print(
        f"1/4 generating {NUM_TRAIN_SCENES} training and {NUM_VAL_SCENES} held-out street scenes "
        f"({SCENE_SIZE[0]}x{SCENE_SIZE[1]}) into {run_dir / 'data'}"
    )
    data_dir = run_dir / "data"
    _generate_scenes(data_dir, console, show_progress)

    console.print(f"2/4 training ResNet-18 + ladder head for {cfg.train.max_iters} iterations")
    trainer = Trainer(cfg, force=True, console=console, show_progress=show_progress)
    result = trainer.train()
    model_scores = result.final_scores

    console.print("3/4 fitting the colour baseline on the same training scenes")
    colour_scores = _colour_baseline(cfg)

    console.print("4/4 writing prediction panels (image | ground truth | prediction)")
    panels = _write_panels(trainer.model, cfg, run_dir / "predictions")

    summary = {
        "run_dir": str(run_dir),
        "iterations": result.iteration,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "model": model_scores.to_dict() if model_scores else None,
        "colour_baseline": colour_scores.to_dict(),
        "classes": list(trainer.class_names),
        "panels": [str(p) for p in panels],
    }
    for scores in (summary["model"], summary["colour_baseline"]):
        if scores:
            scores.pop("confusion", None)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(console, summary, run_dir)
    return summary


def _check_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise RunDirError(f"{run_dir} already holds a demo run; pass --force to replace it")
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not empty and is not a leanseg run; choose another --out")


def _generate_scenes(data_dir: Path, console: Console, show_progress: bool) -> None:
    from leanseg.data.synthetic import write_dataset

    splits = {"train": (NUM_TRAIN_SCENES, 0), "val": (NUM_VAL_SCENES, 0)}
    with Progress(console=console, disable=not show_progress) as progress:
        task = progress.add_task("generate", total=len(splits))
        for split, (count, seed) in splits.items():
            write_dataset(data_dir, split, count, SCENE_SIZE, seed)
            progress.advance(task)


def _colour_baseline(cfg: Config) -> Any:
    from leanseg.baselines import ColourMeanClassifier
    from leanseg.data import build_dataset, dataset_classes
    from leanseg.metrics import SegmentationMetric

    train_set = build_dataset(cfg.data, cfg.data.train_split, train=False)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    classifier = ColourMeanClassifier().fit(train_set.load_raw(i) for i in range(len(train_set)))
    metric = SegmentationMetric(
        len(dataset_classes(cfg.data)), boundary_width=cfg.eval.boundary_width
    )
    for index in range(len(val_set)):
        sample = val_set.load_raw(index)
        prediction = classifier.predict(sample["image"])
        metric.update(
            torch.from_numpy(prediction.astype(np.int64)),
            torch.from_numpy(sample["label"].astype(np.int64)),
        )
    return metric.compute()


def _write_panels(model: torch.nn.Module, cfg: Config, out_dir: Path) -> list[Path]:
    from leanseg.data import build_dataset, dataset_palette
    from leanseg.visualize import colorize, save_rgb_png, side_by_side

    out_dir.mkdir(parents=True, exist_ok=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    palette = dataset_palette(cfg.data)
    device = next(model.parameters()).device
    model.eval()
    paths = []
    for index in range(min(NUM_PANELS, len(val_set))):
        raw = val_set.load_raw(index)
        sample = val_set[index]
        with torch.no_grad():
            prediction = model(sample["image"][None].to(device)).argmax(1)[0].cpu().numpy()
        panel = side_by_side(
            [raw["image"], colorize(raw["label"], palette), colorize(prediction, palette)]
        )
        path = out_dir / f"{raw['name']}.png"
        save_rgb_png(panel, path)
        paths.append(path)
    return paths


def _print_summary(console: Console, summary: dict[str, Any], run_dir: Path) -> None:
    model, colour = summary["model"], summary["colour_baseline"]
    table = Table(title=f"held-out synthetic scenes ({NUM_VAL_SCENES} images)")
    table.add_column("class")
    table.add_column("model IoU", justify="right")
    table.add_column("colour baseline IoU", justify="right")
    for name, ours, theirs in zip(summary["classes"], model["iou"], colour["iou"], strict=True):
        table.add_row(name, _pct(ours), _pct(theirs))
    table.add_section()
    table.add_row("[bold]mIoU", _pct(model["miou"]), _pct(colour["miou"]))
    table.add_row("boundary mIoU", _pct(model["boundary_miou"]), _pct(colour["boundary_miou"]))
    table.add_row("pixel accuracy", _pct(model["pixel_accuracy"]), _pct(colour["pixel_accuracy"]))
    console.print(table)
    console.print(
        f"trained {summary['iterations']} iterations in {summary['train_seconds']} s "
        f"({summary['threads']} threads); whole demo {summary['total_seconds']} s"
    )
    console.print(f"run directory:      {run_dir}")
    console.print(f"  resolved config:  {run_dir / 'config.yaml'}")
    console.print(f"  metrics log:      {run_dir / 'metrics.jsonl'}")
    console.print(f"  checkpoints:      {run_dir / 'checkpoints'} (last.pt, best.pt)")
    console.print(f"  predictions:      {run_dir / 'predictions'}")
    console.print(f"  summary:          {run_dir / 'summary.json'}")
    console.print(f"  generated scenes: {run_dir / 'data'}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
