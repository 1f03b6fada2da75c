"""What every ``leanseg`` subcommand shares: exit codes, argument types, the one-line error,
the images named on a command line.

The subcommand modules (those of :mod:`leanseg.commands`) import this one and nothing of each
other; :mod:`leanseg.cli` assembles them. Importing it imports neither torch nor a dataset:
building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from leanseg.config import DEVICE_PATTERN, Config, ConfigError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def print_error(message: str) -> None:
    """``leanseg: error: MESSAGE`` on one line of stderr."""
    one_line = " ".join(str(message).split())
    print(f"leanseg: error: {one_line}", file=sys.stderr)


def number(kind: Callable[[str], Any], test: Callable[[Any], bool], requirement: str) -> Any:
    """An argparse ``type`` that parses with ``kind`` and requires ``test`` of the value."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = number(int, lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT = number(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE_FLOAT = number(float, lambda v: v > 0, "a positive number")
FRACTION = number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
# The smallest budget that holds one 32x32 tile (see inference.predictor.choose_tile).
MEGAPIXELS = number(float, lambda v: v >= 32 * 32 / 1e6, "at least 0.001024 (one 32x32 tile)")


def device_name(text: str) -> str:
    if DEVICE_PATTERN.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps"
        )
    return text


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.01 (repeatable)",
    )


def console() -> Console:
    return Console(stderr=True)


def add_json_arguments(parser: argparse.ArgumentParser, command: str, what: str) -> None:
    """``--json PATH`` and ``--force`` of a command that writes a JSON result (``what``)."""
    parser.add_argument("--json", metavar="PATH", help=f"also write {what} as JSON ('-' = stdout)")
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"let --json replace an earlier result of leanseg {command} --json (never another "
        "file)",
    )


def check_json_target(target: str | None, command: str, *, force: bool) -> None:
    """Refuse ``--json TARGET`` of ``leanseg COMMAND`` before any work (see ``files.outputs``).

    No target and ``-`` (stdout) pass.
    """
    if target and target != "-":
        from leanseg.files.outputs import check_output_path, json_kind

        check_output_path(target, json_kind(command), force=force, flag="--json")


def write_json_result(payload: dict[str, Any], target: str, command: str, *, force: bool) -> None:
    """``--json TARGET`` of ``leanseg COMMAND``: ``payload`` with leanseg's marker in front,
    printed for ``-``, else written where :mod:`leanseg.files.outputs` allows, atomically."""
    from leanseg.files.outputs import json_kind, json_result, write_output

    text = json.dumps(json_result(command, payload), indent=2) + "\n"
    if target == "-":
        print(text, end="")
        return
    kind = json_kind(command)
    write_output(
        target, kind, lambda handle: handle.write(text.encode()), force=force, flag="--json"
    )


def write_json(payload: dict[str, Any], target: str) -> None:
    """``payload`` as JSON to ``target`` (``-``: stdout), atomically; replaces what is there.

    For files inside a folder the command owns (predict's); a ``--json`` flag's file goes
    through :func:`write_json_result`.
    """
    text = json.dumps(payload, indent=2)
    if target == "-":
        print(text)
        return
    from leanseg.files.atomic import atomic_write_text

    try:
        atomic_write_text(target, text + "\n")
    except OSError as err:
        raise ConfigError(f"cannot write {target}: {err.strerror or err}") from None


def select_device(name: str, key: str = "--device") -> Any:
    """The torch device ``name`` stands for, refusing one this machine does not have.

    Raises:
        ConfigError: naming ``key`` and the device, e.g. ``cuda`` where CUDA is not available.
    """
    import torch

    from leanseg.training.trainer import select_device

    if DEVICE_PATTERN.fullmatch(name) is None:
        raise ConfigError(f"{key} {name!r}: unknown device; use auto, cpu, cuda, cuda:N or mps")
    device = select_device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key} {name}: CUDA is not available on this machine (torch "
                f"{torch.__version__}); use cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} {name}: MPS is not available on this machine; use cpu")
    return device


def load_run_config(path: str | Path | None, overrides: Sequence[str]) -> Config:
    """:func:`leanseg.models.load_run_config`, imported only by the commands that read a config."""
    from leanseg.models import load_run_config

    return load_run_config(path, list(overrides))


def inference_options(args: argparse.Namespace, device: Any) -> Any:
    """The inference options of the ``--fold-bn`` ... flags, refusing what ``device`` cannot run
    (fp16 on the CPU, onnxruntime on CUDA) or what cannot go together (bf16 in onnxruntime) with
    a ``ConfigError`` naming the flag."""
    from leanseg.inference.speed import (
        InferenceOptionError,
        check_backend,
        check_device,
        options_from_args,
    )

    try:
        options = options_from_args(args)
    except InferenceOptionError as err:
        raise ConfigError(f"--backend {args.backend}: {err}") from None
    try:
        check_device(options.dtype, device)
    except InferenceOptionError as err:
        raise ConfigError(f"--dtype {options.dtype}: {err}") from None
    try:
        check_backend(options.backend, device)
    except InferenceOptionError as err:
        raise ConfigError(f"--backend {options.backend}: {err}") from None
    if options.backend == "onnxruntime":
        from leanseg.export import onnx_available

        missing = onnx_available()
        if missing:
            raise ConfigError(f"--backend onnxruntime: {missing}")
    return options


def print_notes(notes: Sequence[str]) -> None:
    for note in notes:  # an inference option the model does not suit, and why
        print(f"leanseg: note: {note}", file=sys.stderr)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


def collect_images(paths: Sequence[str]) -> list[Path]:
    """Image files named, and those in folders named (sorted), each once.

    Raises:
        FileNotFoundError: a path that does not exist, or no image at all.
    """
    images: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            images += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    if not images:
        raise FileNotFoundError(f"no images found in {', '.join(paths)}")
    seen: set[Path] = set()
    unique = []  # an image named twice (as a file and in its folder) is predicted once
    for path in images:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique
