"""``leanseg report``: its arguments and its handler; the report itself is :mod:`leanseg.report`.

Errors are :class:`ConfigError` s, which
the command line prints as one ``leanseg: error: ...`` line with exit status 2. Building the
parser imports neither torch nor matplotlib (the report itself is imported by the handler).
"""

from __future__ import annotations

import argparse
from typing import Any

from leanseg.report.defaults import DEFAULT_BENCH_SIZE, DEFAULT_MAX_IMAGES, DEFAULT_PANELS


def _positive(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def _non_negative(text: str) -> int:
    return _integer(text, 0, "an integer >= 0")


def _integer(text: str, low: int, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int] | None:
    """``HxW`` (height x width) as integers, or ``none`` to measure no cost."""
    if text.lower() == "none":
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x512) or none, got {text!r}")
    return int(parts[0]), int(parts[1])


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``report`` to the subcommands ``commands`` (what ``add_subparsers`` returned)."""
    report = commands.add_parser(
        "report", help="write one self-contained HTML report of one or more runs"
    )
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories of leanseg train")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument(
        "--force",
        action="store_true",
        help="replace a report leanseg report wrote earlier at --out (never another file)",
    )
    report.add_argument(
        "--max-images",
        type=_positive,
        default=DEFAULT_MAX_IMAGES,
        help=f"val images to evaluate each checkpoint on (default {DEFAULT_MAX_IMAGES})",
    )
    report.add_argument(
        "--panels",
        type=_non_negative,
        default=DEFAULT_PANELS,
        help=f"prediction panels per run (default {DEFAULT_PANELS})",
    )
    height, width = DEFAULT_BENCH_SIZE
    report.add_argument(
        "--bench-size",
        type=_size,
        default=DEFAULT_BENCH_SIZE,
        metavar="HxW",
        help=f"input size for measuring cost (default {height}x{width}; none: no cost)",
    )
    report.add_argument(
        "--bench-json",
        action="append",
        default=[],
        metavar="FILE",
        help="a leanseg bench --json result to show instead of measuring, one per run in order",
    )
    report.add_argument(
        "--no-eval", action="store_true", help="only show what the runs logged; load no model"
    )
    report.add_argument("--device", default="cpu", help="device to evaluate on (default cpu)")
    report.add_argument("--title", help="page title (default: the run names)")
    report.set_defaults(handler=run_report_command)
    return report


def run_report_command(args: argparse.Namespace) -> int:
    """Handler of ``leanseg report``: write the report, print its path."""
    from leanseg.report.build import write_report

    path = write_report(
        args.runs,
        args.out,
        force=args.force,
        max_images=args.max_images,
        num_panels=args.panels,
        bench_size=args.bench_size,
        bench_json=args.bench_json,
        evaluate=not args.no_eval,
        device=args.device,
        title=args.title,
    )
    print(f"report written to {path}")
    return 0
