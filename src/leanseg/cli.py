"""The ``leanseg`` command: its parser, and train and demo.

The other subcommands add themselves from their own modules: ``eval``
(:mod:`leanseg.commands.evaluate`), ``predict`` (:mod:`leanseg.commands.predict`), ``data`` and
``quadtree`` (:mod:`leanseg.commands.data`), ``bench`` (:mod:`leanseg.commands.bench`),
``export`` (:mod:`leanseg.export`) and ``report`` (:mod:`leanseg.report.command`).

Every subcommand has ``--help``. Bad input (config, dataset, checkpoint, run directory, a flag's
value, an output folder that cannot be written, a run or output folder another process is
writing) ends with a one-line ``leanseg: error: ...`` naming the file, key, flag or process, and
exit status 2; a training run that cannot go on (NaN loss, a full disk) exits with 1. An
unexpected error (a bug) prints one line with the exception's type and message, exit status 1;
``--debug`` (anywhere on the command line) shows its traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from leanseg import __version__
from leanseg.commands import common
from leanseg.commands.bench import add_bench_parser
from leanseg.commands.data import add_data_parsers
from leanseg.commands.evaluate import add_eval_parser
from leanseg.commands.predict import add_predict_parser
from leanseg.config import Config, ConfigError

# Exit statuses, kept here too for callers that read them from the command's module.
EXIT_BAD_INPUT = common.EXIT_BAD_INPUT
EXIT_FAILED = common.EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leanseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if not hasattr(args, "handler"):
        # ``leanseg`` or ``leanseg data`` alone: the help of that level, then what is missing.
        level = getattr(args, "command_parser", parser)
        level.print_help()
        common.print_error(f"{level.prog}: choose a command (see {level.prog} --help)")
        return EXIT_BAD_INPUT
    try:
        return _run(args)
    except Exception as err:
        if debug:
            raise
        common.print_error(_unexpected(err))
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    """``args.handler(args)``, with bad input turned into one-line errors (exit status 2)."""
    from leanseg.data.base import DatasetError
    from leanseg.engine.checkpoint import CheckpointError
    from leanseg.engine.folder_lock import FolderInUseError
    from leanseg.engine.run_dir import RunDirError
    from leanseg.engine.trainer import TrainingError

    try:
        return int(args.handler(args) or 0)
    except (
        ConfigError,
        DatasetError,
        CheckpointError,
        RunDirError,
        FolderInUseError,
        FileNotFoundError,
    ) as err:
        common.print_error(str(err))
        return EXIT_BAD_INPUT
    except OSError as err:  # a file or folder the system refuses (permissions, disk full ...)
        where = f"{err.filename}: " if err.filename else ""
        common.print_error(f"{where}{err.strerror or err}")
        return EXIT_BAD_INPUT
    except TrainingError as err:
        common.print_error(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        common.print_error("interrupted")
        return 130
    except RuntimeError as err:
        if not str(err).startswith("Symlink loop from"):
            raise
        # pathlib's resolve() before Python 3.13 on a symbolic link that leads to itself.
        common.print_error(f"{err}: a symbolic link that leads back to itself")
        return EXIT_BAD_INPUT
    except ValueError as err:
        if "null byte" not in str(err):
            raise
        # Python refuses a path holding a null byte before the system sees it.
        common.print_error("a path given contains a null byte; no file can be named so")
        return EXIT_BAD_INPUT


def _unexpected(err: Exception) -> str:
    """The one line an unexpected error prints: what it is, and how to see where it came from."""
    if isinstance(err, MemoryError):
        what = "out of memory (MemoryError)"
    elif isinstance(err, RecursionError):
        what = "input nested too deeply (RecursionError)"
    else:
        what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return (
        f"unexpected error: {what}. This is a bug or an input leanseg does not check yet; run "
        "again with --debug for the traceback"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with leanseg's one-line errors (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        common.print_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="leanseg",
        description="Efficient semantic segmentation of large images.",
    )
    parser.add_argument("--version", action="version", version=f"leanseg {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

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
        default=30.0,  # engine.progress.DEFAULT_EVERY_SECONDS (it imports torch; parsing doesn't)
        metavar="SECONDS",
        help="seconds between two plain progress lines (iteration, loss, learning rate, "
        "s/iteration, ETA; default 30); the first and last iterations and every validation "
        "are always printed",
    )
    train.set_defaults(handler=_cmd_train)

    add_eval_parser(commands)
    add_predict_parser(commands)
    add_data_parsers(commands)
    add_bench_parser(commands)

    demo = commands.add_parser(
        "demo", help="generate street scenes, train a small model, evaluate, predict"
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument(
        "--iters", type=common.POSITIVE_INT, help="training iterations (default: the demo's)"
    )
    demo.add_argument("--force", action="store_true", help="replace an earlier demo run")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)

    from leanseg.export import add_export_parser
    from leanseg.report.command import add_report_parser

    add_export_parser(commands)
    add_report_parser(commands)
    _add_debug_flag(parser)
    return parser


_DEBUG_HELP = "on an unexpected error, show the full traceback instead of one line"


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand ``--debug`` too, so it may come anywhere on the command line
    (``leanseg train x.yaml --debug``); a subcommand that is not given it keeps the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                if "--debug" not in sub._option_string_actions:
                    sub.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
                    )
                _add_debug_flag(sub)


# ---------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from leanseg.engine.progress import say
    from leanseg.engine.trainer import Trainer
    from leanseg.metrics import percent

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    cfg = common.load_run_config(args.config, overrides)
    common.select_device(cfg.train.device, key="train.device")
    _check_crop_size(cfg)
    # Training's progress and summaries are its output: stdout, so that ``> train.log`` and
    # ``nohup`` keep them (errors still go to stderr).
    console = Console()
    trainer = Trainer(
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


# ---------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from leanseg.demo import run_demo

    run_demo(Path(args.out), iters=args.iters, force=args.force, show_progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
