"""``leanseg demo`` as a user runs it, timed, with its figures kept as a result file.

Runs the command in a subprocess (the threads it picks are its own: ``train.num_threads:
auto``) into ``--out``, then writes ``benchmarks/results/demo.json``: the held-out mIoU of the
model and of the colour baseline (percent), the training and whole-demo wall times, and the
machine with its load average before the run (the README quotes the time; on a shared machine
it is longer).

    python benchmarks/training/demo_run.py                     # into runs/demo_benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

RESULT = REPO / "benchmarks" / "results" / "demo.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo_benchmark")
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    load_before = list(os.getloadavg())
    command = [sys.executable, "-m", "leanseg", "demo", "--out", str(args.out), "--no-progress"]
    if args.out.exists():
        command.append("--force")
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    wall = time.perf_counter() - started
    summary = json.loads((args.out / "summary.json").read_text())
    write_result(
        args.json,
        {
            "what": "leanseg demo: held-out synthetic scenes, model vs colour baseline (percent)",
            "model_miou_percent": 100 * summary["model"]["miou"],
            "colour_baseline_miou_percent": 100 * summary["colour_baseline"]["miou"],
            "pretrained": summary["pretrained"],
            "iterations": summary["iterations"],
            "threads": summary["threads"],
            "train_seconds": summary["train_seconds"],
            "demo_seconds": summary["total_seconds"],
            "process_seconds": wall,
            "load_average_before": load_before,
        },
    )
    print(f"{args.json}: model {100 * summary['model']['miou']:.1f} %, {wall:.0f} s")


if __name__ == "__main__":
    main()
