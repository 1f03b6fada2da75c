"""The ``leanseg`` command: train, eval, predict, data check, bench, demo.

Every subcommand has ``--help``. Bad input (config, dataset, checkpoint, run directory) ends with
a one-line ``leanseg: error: ...`` naming the file or key, and exit status 2; a training run that
cannot go on (NaN loss) exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from leanseg import __version__
from leanseg.config import Config, ConfigError, load_config

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leanseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_BAD_INPUT
    from leanseg.data.base import DatasetError
    from leanseg.engine.checkpoint import CheckpointError
    from leanseg.engine.run_dir import RunDirError
    from leanseg.engine.trainer import TrainingError

    try:
        return int(args.handler(args) or 0)
    except (ConfigError, DatasetError, CheckpointError, RunDirError, FileNotFoundError) as err:
        _error(str(err))
        return EXIT_BAD_INPUT
    except TrainingError as err:
        _error(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _error(message: str) -> None:
    print(f"leanseg: error: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leanseg",
        description="Efficient semantic segmentation of large images.",
    )
    parser.add_argument("--version", action="version", version=f"leanseg {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a config")
    train.add_argument("config", help="YAML config file")
    _add_overrides(train)
    train.add_argument("--work-dir", help="run directory (default: the config's work_dir)")
    train.add_argument(
        "--resume", action="store_true", help="continue from RUN/checkpoints/last.pt"
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="replace a run already in the run directory (or resume with a changed config)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    evaluate.add_argument("target", help="YAML config file, or a run directory")
    evaluate.add_argument(
        "--checkpoint", help="checkpoint file (default for a run directory: checkpoints/best.pt)"
    )
    _add_overrides(evaluate)
    evaluate.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    evaluate.add_argument(
        "--scales", type=float, nargs="+", help="multi-scale testing, e.g. 0.75 1 1.25"
    )
    evaluate.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    evaluate.add_argument("--max-images", type=int, help="evaluate at most this many images")
    evaluate.add_argument(
        "--json", metavar="PATH", help="also write the scores as JSON ('-' = stdout)"
    )
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    evaluate.set_defaults(handler=_cmd_eval)

    predict = commands.add_parser("predict", help="write label PNGs and colour overlays")
    predict.add_argument("images", nargs="+", help="image files or folders of images")
    predict.add_argument("--checkpoint", required=True, help="checkpoint written by leanseg train")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--max-megapixels",
        type=float,
        default=4.0,
        help="memory budget: larger images are processed in overlapping tiles (default 4)",
    )
    predict.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels")
    predict.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test scales")
    predict.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    predict.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    predict.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    predict.set_defaults(handler=_cmd_predict)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    check = data_commands.add_parser("check", help="report unreadable files and bad labels")
    check.add_argument("config", help="YAML config file")
    _add_overrides(check)
    check.add_argument("--split", nargs="+", help="splits to walk (default: train and val)")
    check.set_defaults(handler=_cmd_data_check)

    bench = commands.add_parser(
        "bench", help="parameters, FLOPs, activation and peak memory, latency"
    )
    bench.add_argument("config", help="YAML config file")
    _add_overrides(bench)
    bench.add_argument("--size", required=True, help="input size HxW, e.g. 1024x2048")
    bench.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    bench.add_argument("--train", action="store_true", help="time a training step, not inference")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs")
    bench.add_argument("--repeats", type=int, default=10, help="timed runs")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    bench.add_argument(
        "--json", metavar="PATH", help="also write the figures as JSON ('-' = stdout)"
    )
    bench.set_defaults(handler=_cmd_bench)

    quadtree = commands.add_parser("quadtree", help="QGN quadtree label tools")
    quadtree_commands = quadtree.add_subparsers(title="quadtree commands", metavar="COMMAND")
    qstats = quadtree_commands.add_parser(
        "stats", help="pixels per quadtree leaf level and compression ratio (QGN Table 5)"
    )
    qstats.add_argument("config", help="YAML config file")
    _add_overrides(qstats)
    qstats.add_argument("--split", nargs="+", help="splits (default: train and val)")
    qstats.add_argument("--max-images", type=int, help="at most this many images per split")
    qstats.add_argument("--json", metavar="PATH", help="also write the rows as JSON ('-' = stdout)")
    qstats.set_defaults(handler=_cmd_quadtree_stats)

    demo = commands.add_parser(
        "demo", help="generate street scenes, train a small model, evaluate, predict"
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--iters", type=int, help="training iterations (default: the demo's)")
    demo.add_argument("--force", action="store_true", help="replace an earlier demo run")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.01 (repeatable)",
    )


def _console() -> Console:
    return Console(stderr=True)


def _write_json(payload: dict[str, Any], target: str) -> None:
    text = json.dumps(payload, indent=2)
    if target == "-":
        print(text)
        return
    from leanseg.utils import atomic_write_text

    atomic_write_text(target, text + "\n")


# ---------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from leanseg.engine.trainer import Trainer

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    cfg = load_config(args.config, overrides)
    console = _console()
    trainer = Trainer(
        cfg,
        resume=args.resume,
        force=args.force,
        console=console,
        show_progress=not args.no_progress,
    )
    result = trainer.train()
    if trainer.is_main:
        summary = f"best mIoU {result.best_miou:.4f}" if result.best_miou is not None else ""
        console.print(f"run finished at iteration {result.iteration}: {summary}")
        console.print(f"run directory: {result.run_dir}")
    return 0


# ---------------------------------------------------------------------- eval


def _resolve_eval_target(args: argparse.Namespace) -> tuple[Config, Path]:
    target = Path(args.target)
    if target.is_dir():
        config_path = target / "config.yaml"
        if not config_path.is_file():
            raise ConfigError(f"{target} is a folder but not a run directory (no config.yaml)")
        checkpoint = (
            Path(args.checkpoint) if args.checkpoint else target / "checkpoints" / "best.pt"
        )
    else:
        config_path = target
        if not args.checkpoint:
            raise ConfigError("--checkpoint is required when evaluating a config file")
        checkpoint = Path(args.checkpoint)
    overrides = list(args.overrides)
    if args.scales:
        overrides.append(f"eval.scales={list(args.scales)}")
    if args.flip:
        overrides.append("eval.flip=true")
    if args.max_images is not None:
        overrides.append(f"eval.max_images={args.max_images}")
    return load_config(config_path, overrides), checkpoint


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from leanseg.data import build_dataset, dataset_classes
    from leanseg.engine.checkpoint import load_checkpoint, load_model_state
    from leanseg.engine.evaluator import evaluate
    from leanseg.engine.trainer import select_device
    from leanseg.metrics import format_scores
    from leanseg.models import build_model

    cfg, checkpoint = _resolve_eval_target(args)
    device = select_device(args.device)
    model = build_model(cfg)
    payload = load_checkpoint(checkpoint, map_location=device)
    load_model_state(model, payload["model"], checkpoint)
    model.to(device)
    split = args.split or cfg.data.val_split
    dataset = build_dataset(cfg.data, split, train=False)
    class_names = dataset_classes(cfg.data)
    console = _console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"eval {split}", total=None)
        scores = evaluate(
            model,
            dataset,
            num_classes=len(class_names),
            eval_cfg=cfg.eval,
            device=device,
            ignore_index=cfg.data.ignore_index,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
        )
    Console().print(format_scores(scores, class_names))
    if scores.active_sites is not None:
        cost = ", ".join(f"{level} {sites:.0f}" for level, sites in scores.active_sites.items())
        Console().print(f"active sites per image: {cost}")
    if args.json:
        record = {
            "checkpoint": str(checkpoint),
            "iteration": payload.get("iteration"),
            "split": split,
            "scales": cfg.eval.scales,
            "flip": cfg.eval.flip,
            **scores.to_dict(),
        }
        _write_json(record, args.json)
    return 0


# ---------------------------------------------------------------------- predict


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


def _collect_images(paths: Sequence[str]) -> list[Path]:
    images: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    if not images:
        raise FileNotFoundError(f"no images found in {', '.join(paths)}")
    return images


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.progress import Progress

    from leanseg.data.io import read_rgb
    from leanseg.engine.inference import Predictor
    from leanseg.engine.site_cost import by_level_name
    from leanseg.engine.trainer import select_device
    from leanseg.visualize import overlay, save_label_png, save_rgb_png

    images = _collect_images(args.images)
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=select_device(args.device),
        max_pixels=int(args.max_megapixels * 1_000_000),
        overlap=args.overlap,
        scales=tuple(args.scales),
        flip=args.flip,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = _console()
    costs: dict[str, dict[str, float]] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("predict", total=len(images))
        for path in images:
            image = read_rgb(path)
            label = predictor.predict(image)
            save_label_png(label, out / f"{path.stem}.png", predictor.palette)
            blended = overlay(image, label, predictor.palette, alpha=args.alpha)
            save_rgb_png(np.asarray(blended), out / f"{path.stem}_overlay.png")
            if predictor.last_active_sites is not None:
                costs[path.name] = by_level_name(predictor.last_active_sites)
            progress.advance(task)
    console.print(f"wrote {len(images)} label maps and overlays to {out}")
    if costs:
        # Heads with a data-dependent cost (QGN) report it with every prediction.
        _write_json(costs, str(out / "active_sites.json"))
        console.print(f"active sites per level of each image: {out / 'active_sites.json'}")
    return 0


# ---------------------------------------------------------------------- data check


def _cmd_data_check(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from leanseg.data.check import check_dataset

    cfg = load_config(args.config, args.overrides)
    splits = args.split or [cfg.data.train_split, cfg.data.val_split]
    console = _console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("check", total=None)
        report = check_dataset(
            cfg.data,
            splits,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print(report.format())
    return 0 if report.ok else EXIT_BAD_INPUT


# ---------------------------------------------------------------------- bench


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x2048"`` -> ``(1024, 2048)`` (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--size {text!r}: expected HxW with positive integers, e.g. 512x1024")
    return int(parts[0]), int(parts[1])


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from leanseg.bench import benchmark_model, format_bench
    from leanseg.models import build_model

    size = parse_size(args.size)
    cfg = load_config(args.config, args.overrides)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = build_model(cfg)
    result = benchmark_model(
        model,
        size,
        batch=args.batch,
        train=args.train,
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
    )
    Console().print(format_bench(result))
    if args.json:
        _write_json({"config": str(args.config), **result.to_dict()}, args.json)
    return 0


# ---------------------------------------------------------------------- quadtree


def _cmd_quadtree_stats(args: argparse.Namespace) -> int:
    from leanseg.structures.quadtree_stats import format_table, split_stats

    cfg = load_config(args.config, args.overrides)
    splits = args.split or [cfg.data.train_split, cfg.data.val_split]
    rows = [split_stats(cfg.data, split, max_images=args.max_images) for split in splits]
    print(format_table(rows))
    if args.json:
        _write_json({"config": str(args.config), "rows": [r.to_dict() for r in rows]}, args.json)
    return 0


# ---------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from leanseg.demo import run_demo

    run_demo(Path(args.out), iters=args.iters, force=args.force, show_progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
