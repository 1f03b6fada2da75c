"""The ``leanseg`` command: its parser and its error handling.

Every subcommand is a module of :mod:`leanseg.commands` (``train``, ``eval``, ``predict``, ``data``
and ``quadtree``, ``bench``, ``demo``, ``export``, ``report``), listed once in
:data:`leanseg.commands.SUBCOMMANDS`.

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
from typing import NoReturn

from leanseg import __version__
from leanseg.commands import SUBCOMMANDS, common
from leanseg.config import ConfigError

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
    from leanseg.files.checkpoint import CheckpointError
    from leanseg.files.folder_lock import FolderInUseError
    from leanseg.files.run_dir import RunDirError
    from leanseg.training.trainer import TrainingError

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

    for module in SUBCOMMANDS:
        module.add_parser(commands)
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


if __name__ == "__main__":
    sys.exit(main())
