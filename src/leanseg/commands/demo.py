"""``leanseg demo``: its arguments and its handler; the demo itself is :mod:`leanseg.demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from leanseg.commands import common


def add_parser(commands: Any) -> None:
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from leanseg.demo import run_demo

    run_demo(Path(args.out), iters=args.iters, force=args.force, show_progress=not args.no_progress)
    return 0
