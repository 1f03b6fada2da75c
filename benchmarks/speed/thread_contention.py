"""Training-step time on a quiet CPU and beside a competing process, per thread setting (issue 16).

On a 2-core machine torch's two OpenMP threads wait for each other at the end of every parallel
region; when another process takes one core, one of them waits for its turn on the CPU and the
step can slow by far more than 2x. This measures it: the demo's model (EfficientNet-Lite0 +
ladder, random init so nothing is read from disk) takes ``--steps`` training steps of batch
``--batch`` at ``--crop`` in a fresh process for every combination of

- a thread setting of :data:`SETTINGS` (torch threads, and OpenMP's wait policy, which has to be
  set before torch starts: each worker is its own process), and
- quiet, or beside a competing process: one pure-Python busy loop (another user's CPU job), or
  ``--competitors N`` of them,

and prints the median step time and the slowdown (beside / quiet) of each setting.

    .venv/bin/python benchmarks/speed/thread_contention.py

writes ``benchmarks/results/thread_contention.json``. Run it on an otherwise quiet machine: the
competitor is the one this script starts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

# name -> (torch threads, extra environment of the worker process). "auto" is leanseg's default
# (train.num_threads: auto): leanseg.runtime.cpu_share.ThreadGovernor, called after every step
# as the trainer does, starting on every core and deciding after 3 s.
SETTINGS: dict[str, tuple[int | str, dict[str, str]]] = {
    "2 threads": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "1 thread": (1, {}),
    "auto (leanseg default)": ("auto", {}),
}
BUSY_LOOP = "while True:\n    pass\n"


def worker(threads: int | str, steps: int, warmup: int, batch: int, crop: tuple[int, int]) -> None:
    """Time training steps of the demo's model; print one JSON line of step times (ms) and the
    thread count of each step."""
    import torch

    from leanseg.models import create_model
    from leanseg.runtime.cpu_share import ThreadGovernor

    governor = None
    if threads == "auto":
        governor = ThreadGovernor()
        governor.start()
    else:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    model = create_model("ladder", "efficientnet_lite0", num_classes=11, channels=64)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, *crop).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 11, (batch, *crop))
    times, step_threads = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        step_threads.append(torch.get_num_threads())
        loss = sum(model.losses(images, {"label": labels}).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
        if governor is not None:
            governor.update()
    print(json.dumps({"times_ms": times, "threads": step_threads[warmup:]}))


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    threads, env = SETTINGS[name]
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--threads",
        str(threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--crop",
        f"{args.crop[0]}x{args.crop[1]}",
    ]
    environment = {**os.environ, **env}
    if threads != "auto":
        environment["OMP_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=args.worker_timeout,
        )
    except subprocess.TimeoutExpired:
        return {"times_ms": [], "timed_out_after_s": args.worker_timeout}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    """Median of ``values``; infinity for none (a worker that timed out)."""
    return statistics.median(values) if values else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="2", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per worker")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", default="192x384", help="HxW of the training batch")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes beside")
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=240.0,
        help="seconds a worker may take; a slower setting is recorded as timed out",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "thread_contention.json"
    )
    args = parser.parse_args()
    args.crop = tuple(int(v) for v in args.crop.lower().split("x"))
    if args.worker:
        threads = args.threads if args.threads == "auto" else int(args.threads)
        worker(threads, args.steps, args.warmup, args.batch, args.crop)
        return

    rows: dict[str, dict[str, Any]] = {}
    for condition in ("quiet", "beside"):
        competitors = []
        if condition == "beside":
            competitors = [
                subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.competitors)
            ]
        try:
            for name in SETTINGS:
                result = run_worker(name, args)
                row = rows.setdefault(name, {})
                row[condition] = {"median_ms": median(result["times_ms"]), **result}
                print(f"{condition:6s} {name:40s} {row[condition]['median_ms']:8.0f} ms/step")
        finally:
            for process in competitors:
                process.kill()
                process.wait()
    quiet_best = min(row["quiet"]["median_ms"] for row in rows.values())
    for name, row in rows.items():
        row["slowdown_beside"] = row["beside"]["median_ms"] / row["quiet"]["median_ms"]
        row["quiet_vs_fastest_quiet"] = row["quiet"]["median_ms"] / quiet_best
        print(
            f"{name:40s} quiet {row['quiet']['median_ms']:6.0f} ms, beside "
            f"{row['beside']['median_ms']:6.0f} ms ({row['slowdown_beside']:.2f}x)"
        )
        for key in ("quiet", "beside", "slowdown_beside", "quiet_vs_fastest_quiet"):
            value = row[key]["median_ms"] if key in ("quiet", "beside") else row[key]
            if value == float("inf") or value != value:  # a worker that timed out: no figure
                if key in ("quiet", "beside"):
                    row[key]["median_ms"] = None
                else:
                    row[key] = None
    write_result(
        args.json,
        {
            "workload": f"Lite0 + ladder training step, batch {args.batch} at "
            f"{args.crop[0]}x{args.crop[1]}, channels-last, fp32",
            "competitors": f"{args.competitors} pure-Python busy loop(s)",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
