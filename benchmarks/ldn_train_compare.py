"""Issue 3 training comparison: LDN121 64→4 vs the ResNet-18 bilinear baseline, same budget.

Four ``leanseg train`` runs (one process each, ``nice -n 5``, ``OMP_NUM_THREADS=1`` and
``train.num_threads=1`` because the 2-core CPU is shared) from the existing configs
``configs/ldn/ldn121_64to4_{synthetic,camvid}.yaml`` and
``configs/baseline/rn18_bilinear_{synthetic,camvid}.yaml``, all overridden with the same CPU-sized
budget and optimiser (:data:`COMMON`: Adam 1e-3, cosine to 1e-7, 10 warm-up iterations, backbone
lr x1 because both start from random weights, batch 4 of 192x256 crops, no BN recomputation,
validation on the first 40 images). Each run writes to ``runs/ldn_compare/<name>``; the table is
read from the last ``"split": "val"`` record of each run's ``metrics.jsonl``.

Usage (the issue-3 figures ran the four trainings two at a time, then tabulated)::

    .venv/bin/python benchmarks/ldn_train_compare.py --runs ldn121_synthetic rn18_synthetic
    .venv/bin/python benchmarks/ldn_train_compare.py --runs ldn121_camvid rn18_camvid
    .venv/bin/python benchmarks/ldn_train_compare.py --report-only --json \
        > benchmarks/results/ldn_train_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "ldn121_synthetic": "configs/ldn/ldn121_64to4_synthetic.yaml",
    "rn18_synthetic": "configs/baseline/rn18_bilinear_synthetic.yaml",
    "ldn121_camvid": "configs/ldn/ldn121_64to4_camvid.yaml",
    "rn18_camvid": "configs/baseline/rn18_bilinear_camvid.yaml",
}
CAMVID_ROOT = "/work/shared/data/camvid"
COMMON = [
    "model.backbone.pretrained=null",
    "data.batch_size=4",
    "data.crop_size=[192,256]",
    "data.num_workers=0",
    "data.hflip=true",
    "train.optimizer=adam",
    "train.lr=1.0e-3",
    "train.weight_decay=1.0e-4",
    "train.backbone_lr_mult=1.0",
    "train.schedule=cosine",
    "train.min_lr=1.0e-7",
    "train.warmup_iters=10",
    "train.bn_recompute_batches=0",
    "train.num_threads=1",
    "train.seed=0",
    "eval.max_images=40",
]


def run_dir(name: str) -> Path:
    return ROOT / "runs" / "ldn_compare" / name


def command(name: str, max_iters: int) -> list[str]:
    """The ``leanseg train`` command line of one run (niced, one thread)."""
    sets = [*COMMON, f"train.max_iters={max_iters}"]
    sets += [f"train.eval_interval={max_iters}", f"train.checkpoint_interval={max_iters}"]
    if name.endswith("camvid"):
        sets.append(f"data.root={CAMVID_ROOT}")
    line = ["nice", "-n", "5", str(ROOT / ".venv" / "bin" / "leanseg"), "train", RUNS[name]]
    for item in sets:
        line += ["--set", item]
    return [*line, "--work-dir", str(run_dir(name)), "--force", "--no-progress"]


def train(names: list[str], max_iters: int, jobs: int) -> None:
    """Run the trainings, at most ``jobs`` at a time, and fail loudly if one fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending = list(names)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed = []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            line = command(name, max_iters)
            print("+", shlex.join(line), file=sys.stderr, flush=True)
            log = open(ROOT / "runs" / "ldn_compare" / f"{name}.log", "w")  # noqa: SIM115
            process = subprocess.Popen(line, cwd=ROOT, env=env, stdout=log, stderr=log)
            running[name] = (process, time.perf_counter())
        time.sleep(2)
        for name, (process, start) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            seconds = time.perf_counter() - start
            print(f"{name}: exit {process.returncode} after {seconds:.0f} s", file=sys.stderr)
            if process.returncode:
                failed.append(name)
    if failed:
        sys.exit(f"failed runs: {failed} (logs in runs/ldn_compare/<name>.log)")


def read(name: str) -> dict:
    """Last validation record and training wall time of one run directory."""
    path = run_dir(name) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    val = [r for r in records if r.get("split") == "val"]
    if not val:
        raise SystemExit(f"{path}: no validation record")
    last = val[-1]
    times = [r["time"] for r in records if "time" in r]
    return {
        "run": name,
        "config": RUNS[name],
        "iteration": last["iteration"],
        "miou": round(last["miou"], 4),
        "boundary_miou": round(last["boundary_miou"], 4),
        "pixel_accuracy": round(last["pixel_accuracy"], 4),
        "wall_s": round(times[-1] - times[0]) if len(times) > 1 else None,
        "work_dir": str(run_dir(name).relative_to(ROOT)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--max-iters", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--report-only", action="store_true", help="only read the run dirs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        (ROOT / "runs" / "ldn_compare").mkdir(parents=True, exist_ok=True)
        train(args.runs, args.max_iters, args.jobs)
    rows = [read(name) for name in args.runs if (run_dir(name) / "metrics.jsonl").exists()]
    if args.json:
        meta = {
            "overrides": COMMON,
            "per_run": "train.max_iters/eval_interval/checkpoint_interval=<max_iters>; "
            f"camvid data.root={CAMVID_ROOT}",
            "threads_per_process": 1,
        }
        commands = {r["run"]: shlex.join(command(r["run"], r["iteration"])) for r in rows}
        print(json.dumps({"meta": meta, "commands": commands, "results": rows}, indent=1))
        return
    print(f"{'run':18}{'iters':>6}{'mIoU':>8}{'bnd mIoU':>10}{'pix acc':>9}{'wall s':>8}")
    for r in rows:
        print(
            f"{r['run']:18}{r['iteration']:6d}{100 * r['miou']:8.1f}"
            f"{100 * r['boundary_miou']:10.1f}{100 * r['pixel_accuracy']:9.1f}{r['wall_s']!s:>8}"
        )


if __name__ == "__main__":
    main()
