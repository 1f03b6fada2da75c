"""Issue 3 training comparison: LDN121 64→4 vs the ResNet-18 bilinear baseline, same budget.

Four ``leanseg train`` runs (one process each through :func:`common.train`, ``nice -n 5``,
``OMP_NUM_THREADS=1`` and ``train.num_threads=1`` because the 2-core CPU is shared) from the
existing configs ``configs/ldn/ldn121_64to4_{synthetic,camvid}.yaml`` and
``configs/baseline/rn18_bilinear_{synthetic,camvid}.yaml``, all overridden with the same CPU-sized
budget and optimiser (:data:`COMMON`: Adam 1e-3, cosine to 1e-7, 10 warm-up iterations, backbone
lr x1 because both start from random weights, batch 4 of 192x256 crops, no BN recomputation,
validation on the first 40 images). Each run writes to ``runs/ldn_compare/<name>``; the table is
read from the last ``"split": "val"`` record of each run's ``metrics.jsonl``.

Usage (the issue-3 figures ran the four trainings two at a time, then tabulated)::

    .venv/bin/python benchmarks/papers/ldn_train_compare.py --runs ldn121_synthetic rn18_synthetic
    .venv/bin/python benchmarks/papers/ldn_train_compare.py --runs ldn121_camvid rn18_camvid
    .venv/bin/python benchmarks/papers/ldn_train_compare.py --report-only \
        --json benchmarks/results/ldn_train_compare.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, TrainJob, read_metrics, train, write_result

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
    return REPO / "runs" / "ldn_compare" / name


def job(name: str, max_iters: int) -> TrainJob:
    """The ``leanseg train`` run of one row (logged to ``runs/ldn_compare/<name>.log``)."""
    sets = [*COMMON, f"train.max_iters={max_iters}"]
    sets += [f"train.eval_interval={max_iters}", f"train.checkpoint_interval={max_iters}"]
    if name.endswith("camvid"):
        sets.append(f"data.root={CAMVID_ROOT}")
    log = REPO / "runs" / "ldn_compare" / f"{name}.log"
    return TrainJob(name, RUNS[name], run_dir(name), sets, log=log)


def read(name: str) -> dict:
    """Last validation record and training wall time of one run directory."""
    records = read_metrics(run_dir(name))
    val = [r for r in records if r.get("split") == "val"]
    if not val:
        raise SystemExit(f"{run_dir(name) / 'metrics.jsonl'}: no validation record")
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
        "work_dir": str(run_dir(name).relative_to(REPO)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--max-iters", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--report-only", action="store_true", help="only read the run dirs")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    if not args.report_only:
        train([job(name, args.max_iters) for name in args.runs], parallel=args.jobs, nice=5)
    rows = [read(name) for name in args.runs if (run_dir(name) / "metrics.jsonl").exists()]
    if args.json:
        meta = {
            "overrides": COMMON,
            "per_run": "train.max_iters/eval_interval/checkpoint_interval=<max_iters>; "
            f"camvid data.root={CAMVID_ROOT}",
            "threads_per_process": 1,
        }
        commands = {r["run"]: shlex.join(job(r["run"], r["iteration"]).command()) for r in rows}
        write_result(args.json, {"meta": meta, "commands": commands, "results": rows})
    print(f"{'run':18}{'iters':>6}{'mIoU':>8}{'bnd mIoU':>10}{'pix acc':>9}{'wall s':>8}")
    for r in rows:
        print(
            f"{r['run']:18}{r['iteration']:6d}{100 * r['miou']:8.1f}"
            f"{100 * r['boundary_miou']:10.1f}{100 * r['pixel_accuracy']:9.1f}{r['wall_s']!s:>8}"
        )


if __name__ == "__main__":
    main()
