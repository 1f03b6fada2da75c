"""Issue 5 training comparison: NRD vs DeepLabV3+ vs bilinear decoders, same encoder and budget.

Trains each config through ``leanseg train`` (one process per run, niced, one torch thread because
the CPU is shared), then reads the last validation record of each run's ``metrics.jsonl`` and
prints mIoU and boundary (trimap) mIoU side by side. The configs are in ``configs/nrd/``:
``{nrd,deeplabv3plus,bilinear}_r18_{synthetic,camvid}.yaml`` — ResNet-18 without dilation + ASPP,
batch 4 at 192x256 crops, 300 iterations on synthetic scenes and 200 on CamVid (a CPU-sized
stand-in for the paper's ResNet-50 and 80k iterations; see docs/notes/issue-5.md).

Usage (the issue-5 figures ran the two datasets as two parallel processes, then tabulated)::

    .venv/bin/python benchmarks/papers/nrd_train_compare.py --datasets synthetic
    .venv/bin/python benchmarks/papers/nrd_train_compare.py --datasets camvid
    .venv/bin/python benchmarks/papers/nrd_train_compare.py --report-only \
        --out benchmarks/results/nrd_train_compare.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, TrainJob, last_validation, read_metrics, train, write_result

DECODERS = ["nrd", "deeplabv3plus", "bilinear"]


def run_dir(decoder: str, dataset: str) -> Path:
    return REPO / "runs" / f"{decoder}_r18_{dataset}"


def job(decoder: str, dataset: str) -> TrainJob:
    config = REPO / "configs" / "nrd" / f"{decoder}_r18_{dataset}.yaml"
    return TrainJob(f"{decoder} {dataset}", config, run_dir(decoder, dataset))


def last_val_record(path: Path) -> dict | None:
    """The last validation record of a run, with ``logged_s``: its time minus the first record's."""
    val = last_validation(path)
    if val is None:
        return None
    return {**val, "logged_s": val["time"] - read_metrics(path)[0]["time"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "camvid"])
    parser.add_argument("--decoders", nargs="+", default=DECODERS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    results: dict[str, dict[str, dict]] = {}
    for dataset in args.datasets:
        for decoder in args.decoders:
            wall = None
            if not args.report_only:
                wall = train([job(decoder, dataset)], threads=args.threads)[0].seconds
            record = last_val_record(run_dir(decoder, dataset)) or {}
            results.setdefault(dataset, {})[decoder] = {
                "iteration": record.get("iteration"),
                "miou": record.get("miou"),
                "boundary_miou": record.get("boundary_miou"),
                "pixel_accuracy": record.get("pixel_accuracy"),
                "train_wall_s": wall,
                "logged_s": record.get("logged_s"),
                "run_dir": str(run_dir(decoder, dataset).relative_to(REPO)),
            }
    for dataset, rows in results.items():
        print(f"\n{dataset}: decoder, iterations, mIoU, boundary mIoU")
        for decoder, row in rows.items():
            print(f"  {decoder:14s} {row['iteration']}  {row['miou']}  {row['boundary_miou']}")
    if args.out:
        write_result(args.out, results)


if __name__ == "__main__":
    main()
