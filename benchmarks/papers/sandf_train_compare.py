"""Train S&F rows A / F / H (HRNetV2-W18) through ``leanseg train`` under one budget.

Rows (Table 2a): A per-pixel baseline, F pyramid + TP relabelling, H coarse-to-fine + pyramid
+ TP. Every run gets the same ``--set`` overrides (``BUDGET``). After training, the script reads
mIoU and boundary mIoU from the last ``"split": "val"`` line of each run's ``metrics.jsonl`` and
computes, over the same validation images, the share of labelled pixels served by each pyramid
level (Table 2c style): the head's level map is upsampled to the image size by nearest.
Level 0 is the coarsest, level L-1 the finest; row A is served entirely by the finest output.
``--report-only`` skips training; with ``--json`` it updates the rows it re-reads in that file.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/papers/sandf_train_compare.py --jobs 2 \
        --json benchmarks/results/sandf_train_compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from leanseg.data import build_dataset
from leanseg.inference.loading import load_trained_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, TrainJob, last_validation, train, write_result

ROWS = ("a", "f", "h")
DATASETS = ("synthetic", "camvid")
RUN_ROOT = REPO / "runs" / "sandf_compare"
MAX_IMAGES = 30
BUDGET = [
    "train.max_iters=60",
    "train.eval_interval=60",
    "train.checkpoint_interval=60",
    "train.warmup_iters=10",
    "train.num_threads=1",
    "data.batch_size=4",
    "data.crop_size=[128,192]",
    "data.num_workers=0",
    f"eval.max_images={MAX_IMAGES}",
]


def run_dir(row: str, dataset: str) -> Path:
    return RUN_ROOT / f"{row}_{dataset}"


def job(row: str, dataset: str) -> TrainJob:
    config = REPO / "configs" / "sandf" / f"sandf_{row}_hrnet18_{dataset}.yaml"
    log = RUN_ROOT / f"{row}_{dataset}.log"
    return TrainJob(f"{row} {dataset}", config, run_dir(row, dataset), BUDGET, log=log)


@torch.no_grad()
def level_shares(checkpoint: Path) -> list[float]:
    trained = load_trained_model(checkpoint)
    model, cfg = trained.model, trained.cfg
    head = model.head
    num_levels = head.num_levels
    if head.output != "pyramid":  # rows A-C and I: every pixel comes from the finest output
        return [0.0] * (num_levels - 1) + [1.0]
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    counts = torch.zeros(num_levels, dtype=torch.long)
    for index in range(min(MAX_IMAGES, len(dataset))):
        sample = dataset[index]
        image = sample["image"].unsqueeze(0).float()
        label = torch.as_tensor(sample["label"]).long()
        _, level = head.fuse(model.features(image))
        level = F.interpolate(level[:, None].float(), size=label.shape[-2:], mode="nearest")
        level = level[0, 0].long()
        labelled = label != cfg.data.ignore_index
        counts += torch.bincount(level[labelled], minlength=num_levels)[:num_levels]
    return (counts.double() / counts.sum().clamp(min=1)).tolist()


def report(rows: list[dict]) -> str:
    lines = [
        "| row | dataset | mIoU | boundary mIoU | level shares (coarse → fine) | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        shares = " / ".join(f"{100 * s:.1f}%" for s in r["level_shares"])
        seconds = "" if r.get("train_s") is None else f"{r['train_s']:.0f}"
        lines.append(
            f"| {r['row'].upper()} | {r['dataset']} | {100 * r['miou']:.2f} | "
            f"{100 * r['boundary_miou']:.2f} | {shares} | {seconds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    parser.add_argument(
        "--report-only", action="store_true", help="read existing runs (keeps other rows of --json)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the table here")
    parser.add_argument("--rows", default="".join(ROWS), help="subset of rows, e.g. 'af'")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = [(d, r) for d in args.datasets.split(",") for r in args.rows]
    seconds: dict[tuple[str, str], float] = {}
    if not args.report_only:
        # A failed run is left out of the table; the others are still reported.
        jobs = [job(row, dataset) for dataset, row in pairs]
        outcomes = train(jobs, parallel=args.jobs, nice=0, check=False)
        for (dataset, row), outcome in zip(pairs, outcomes, strict=True):
            seconds[(row, dataset)] = outcome.seconds
    table = []
    if args.report_only and args.json is not None and args.json.is_file():
        # keep runs not re-read here, and the training times measured when they ran
        for entry in json.loads(args.json.read_text())["runs"]:
            key = (entry["row"], entry["dataset"])
            seconds.setdefault(key, entry.get("train_s"))
            if (entry["dataset"], entry["row"]) not in pairs:
                table.append(entry)
    for dataset, row in pairs:
        directory = run_dir(row, dataset)
        try:
            val = last_validation(directory)
            if val is None:
                raise RuntimeError(f"{directory / 'metrics.jsonl'}: no val record")
            shares = level_shares(directory / "checkpoints" / "last.pt")
        except Exception as err:  # report every run that did finish
            print(f"{row} {dataset}: {err}", file=sys.stderr)
            continue
        table.append(
            {
                "row": row,
                "dataset": dataset,
                "iteration": val["iteration"],
                "miou": val["miou"],
                "boundary_miou": val["boundary_miou"],
                "level_shares": shares,
                "train_s": seconds.get((row, dataset)),
            }
        )
    table.sort(key=lambda r: (DATASETS.index(r["dataset"]), ROWS.index(r["row"])))
    print(report(table))
    if args.json is not None:
        write_result(args.json, {"budget": BUDGET, "val_images": MAX_IMAGES, "runs": table})


if __name__ == "__main__":
    main()
