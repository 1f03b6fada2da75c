"""Small-budget SSN training comparisons through ``leanseg train`` / ``leanseg eval``.

Runs, one after another (each with ``nice -n 10``), on CPU:

- synthetic scenes, semantic: ERFNet encoder + ERFNet decoder vs ERFNet encoder + iGUM
  (``configs/ssn/erfnet_synthetic.yaml``, ``erfnet_igum_synthetic.yaml``) -> mIoU;
- CamVid, semantic: the same pair (``erfnet_camvid.yaml``, ``erfnet_igum_camvid.yaml``) -> mIoU;
- synthetic scenes, instances: SSN encoder + instance module (``ssn_instance_synthetic.yaml``)
  -> mIoU and AP / AP50 on held-out scenes (``ssn_instance_iterations.evaluate_iterations``).

mIoU is the trainer's own final validation (``metrics.jsonl``). The budgets are tiny (CPU,
shared cores): small crops, few hundred iterations, a fixed seed.
Every run gets the same overrides, listed in the JSON with the results. Relative numbers only.

    .venv/bin/python benchmarks/papers/ssn_train.py --json OUT.json \
        [--only synthetic camvid instance] [--iters 300]

(``benchmarks/results/ssn_train_camvid.json``: ``--only camvid --iters 500``; the instance run's
AP is re-evaluated by ``benchmarks/papers/ssn_instance_iterations.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, TrainJob, last_validation, train, write_result
from ssn_instance_iterations import ITERATIONS, evaluate_iterations

SYNTHETIC = [
    "data.options={num_samples: 200, size: [128, 256], seed: 0}",
    "data.crop_size=[96, 192]",
    "data.batch_size=4",
    "eval.max_images=40",
]
CAMVID = [
    "data.crop_size=[128, 160]",
    "data.scale_range=[0.375, 0.75]",
    "data.batch_size=4",
    "data.num_workers=0",
    "eval.max_images=40",
    "eval.scales=[0.5]",
]
GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "synthetic": [
        ("erfnet_synthetic", SYNTHETIC),
        ("erfnet_igum_synthetic", SYNTHETIC),
    ],
    "camvid": [
        ("erfnet_camvid", CAMVID),
        ("erfnet_igum_camvid", CAMVID),
    ],
    "instance": [("ssn_instance_synthetic", SYNTHETIC)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ssn_train"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    # One intra-op thread: on 2 shared cores, 2 OpenMP threads competing with other processes
    # made a training step 10-30x slower (spin-waiting), 1 thread does not.
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)  # the AP of the instance run is computed here
    results: dict = {}
    if args.json and args.json.exists():
        results = json.loads(args.json.read_text())
        for key in ("command", "date", "machine"):  # write_result records this run's
            results.pop(key, None)
    for group in args.only:
        for name, overrides in GROUPS[group]:
            work_dir = args.runs_dir / name
            sets = [
                *overrides,
                f"train.max_iters={args.iters}",
                f"train.eval_interval={args.iters}",
                f"train.checkpoint_interval={args.iters}",
                "train.log_interval=25",
                "train.warmup_iters=0",
            ]
            config = f"configs/ssn/{name}.yaml"
            train_s = train([TrainJob(name, config, work_dir, sets)], threads=threads)[0].seconds
            evaluation = last_validation(REPO / work_dir)
            if evaluation is None:
                raise SystemExit(f"{work_dir}: the run logged no validation")
            entry = {
                "config": f"configs/ssn/{name}.yaml",
                "overrides": sets,
                "train_seconds": train_s,
                "miou": evaluation.get("miou"),
                "pixel_accuracy": evaluation.get("pixel_accuracy"),
            }
            if group == "instance":
                entry["instance"] = evaluate_iterations(REPO / work_dir, ITERATIONS, max_images=40)
            results[name] = entry
            print(json.dumps({name: {k: v for k, v in entry.items() if k != "instance"}}))
            if args.json:  # after every run, so that a cut-short grid keeps what finished
                write_result(args.json, results)


if __name__ == "__main__":
    main()
