"""``leanseg train``: its arguments and its handler; training itself is
:class:`leanseg.training.trainer.Trainer`."""

from __future__ import annotations

import argparse
from typing import Any

from leanseg.commands import common
from leanseg.config import Config, ConfigError


def add_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a model from a config",
        description="Train the model a YAML config describes on its dataset, and write a run "
        "directory: config.yaml (every value used), metrics.jsonl (losses and validation "
        "scores) and checkpoints/ (last.pt, best.pt). What the config leaves out of train: "
        "comes from the defaults, which are the CamVid recipe's: Adam at a learning rate of "
        "6e-4 (a pretrained backbone at a quarter of it), a 50-step warm-up, then cosine decay "
        "over train.max_iters. docs/own-data.md in the source repository walks through "
        "training on your own images.",
    )
    train.add_argument(
        "config", help="YAML config file, or the name of a shipped one (e.g. lite0/ladder_camvid)"
    )
    common.add_overrides(train)
    train.add_argument("--work-dir", help="run directory (default: the config's work_dir)")
    train.add_argument(
        "--resume", action="store_true", help="continue from RUN/checkpoints/last.pt"
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="replace a run already in the run directory (or resume with a changed config, "
        "train.optimizer excepted)",
    )
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress bar: a plain progress line every --log-every seconds instead, "
        "as when the output is not a terminal (nohup, CI, a file)",
    )
    train.add_argument(
        "--log-every",
        type=common.POSITIVE_FLOAT,
        default=30.0,  # training.progress.DEFAULT_EVERY_SECONDS (it imports torch; parsing doesn't)
        metavar="SECONDS",
        help="seconds between two plain progress lines (iteration, loss, learning rate, "
        "s/iteration, ETA; default 30); the first and last iterations and every validation "
        "are always printed",
    )
    train.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from leanseg.metrics.semantic import percent
    from leanseg.training.progress import say
    from leanseg.training.trainer import Trainer

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    cfg = common.load_run_config(args.config, overrides)
    common.select_device(cfg.train.device, key="train.device")
    _check_crop_size(cfg)
    # Training's progress and summaries are its output: stdout, so that ``> train.log`` and
    # ``nohup`` keep them (errors still go to stderr).
    console = Console()
    trainer = Trainer.from_config(
        cfg,
        resume=args.resume,
        force=args.force,
        console=console,
        show_progress=not args.no_progress,
        log_seconds=args.log_every,
    )
    result = trainer.train()
    if trainer.is_main:
        best, shown = trainer.best, percent(result.best_miou)
        summary = "no validation score"
        if best is not None and shown is not None:
            summary = f"best mIoU {shown:.1f} % (iteration {best['iteration']})"
        say(console, f"run finished at iteration {result.iteration}: {summary}")
        say(console, f"run directory: {result.run_dir}")
    return 0


def _check_crop_size(cfg: Config) -> None:
    """Refuse a training crop too small for batch normalisation before the run starts.

    Crops are padded to a multiple of the model's output stride; BatchNorm in training mode needs
    more than one value per channel at the coarsest level, which a batch of two always has. So
    only ``data.batch_size: 1`` needs the model, to learn its stride.
    """
    if cfg.data.batch_size > 1:
        return
    from leanseg.models import build_model, without_pretrained

    stride = build_model(without_pretrained(cfg)).size_divisor
    height, width = cfg.data.crop_size
    if -(-height // stride) * -(-width // stride) < 2:
        raise ConfigError(
            f"data.crop_size {[height, width]} with data.batch_size 1 is too small for this "
            f"model: its output stride is {stride}, and batch normalisation needs at least two "
            f"positions at that stride; use a crop of at least {stride}x{2 * stride} or a batch "
            "of 2"
        )
