"""What each fast-training lever buys on the CamVid recipe: time per iteration and val mIoU.

Two parts, each adding its table to ``benchmarks/results/fast_training.json``:

``steps``: seconds per training iteration (batch preparation + step, in the real training loop
of :class:`leanseg.training.trainer.Trainer`, real CamVid data) of the recipe
(``configs/lite0/ladder_camvid.yaml``) with levers added one at a time, cumulatively, in blocks of
``--iters`` iterations per variant, the variants taking turns for ``--rounds`` rounds, so a change
of machine load hits every variant alike; the median block is reported. The levers:

- ``fused scale+crop``: resample only the crop window (``RandomScaleCrop``) instead of rescaling
  the whole image and cutting the crop from it (the recipe as it was measured in issue 11);
- ``data.cache``: decoded images in memory; ``data.prefetch``: batches prepared in a thread;
- ``train.freeze_backbone_bn``; ``train.freeze_backbone_until: 8``;
- the 192x256 crops of the first stage of ``data.crop_schedule``;
- ``train.compile`` (``--compile``; its compilation time is reported apart) and bf16 autocast
  (``--bf16``, timed as a plain step beside the fp32 one);
- deeper freezing (``--deeper-freezing``): ``train.freeze_backbone_until`` 16 and 32 in place of
  8, at the recipe's 288x384 crops (beside the cumulative table, not part of it);
- the loss at sampled pixels (``--loss-points N``): ``model.loss_points: N`` on the stride-8 frozen
  variant at 288x384 (and on the stride-32 one with ``--deeper-freezing``), beside the table too.

``train``: trainings of the fast recipe (``configs/lite0/ladder_camvid_fast.yaml``) and of the same
recipe with one lever taken out, each evaluated at the end as the recipe is (101 val images,
one pass at 1.5x). Runs are ``leanseg train`` processes (``--jobs`` at a time, one thread each
when more than one); a finished run (its ``last.pt`` at the final iteration) is not run again.

    python benchmarks/training/fast_training.py steps [--iters 10] [--rounds 3] [--compile] [--bf16]
        [--deeper-freezing] [--loss-points 16384]
    python benchmarks/training/fast_training.py train [--runs fast no_frozen_stages ...] [--seeds 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from leanseg.data.transforms import Compose, RandomCrop, RandomScale, RandomScaleCrop
from leanseg.models import load_run_config
from leanseg.training.prefetch import Prefetcher
from leanseg.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import (
    REPO,
    TrainJob,
    command_line,
    last_validation,
    machine,
    read_metrics,
    train,
    write_result,
)

RECIPE = REPO / "configs/lite0/ladder_camvid.yaml"
FAST = REPO / "configs/lite0/ladder_camvid_fast.yaml"
RESULTS = REPO / "benchmarks/results/fast_training.json"
RUNS = REPO / "runs/fast_training"

# Cumulative levers of the ``steps`` table: name -> overrides added to the previous variant's.
STEP_LEVERS: list[tuple[str, list[str]]] = [
    ("recipe (whole-image rescale, from disk)", []),
    ("+ fused scale+crop", []),
    ("+ data.cache", ["data.cache=true"]),
    ("+ data.prefetch", ["data.prefetch=true"]),
    ("+ train.freeze_backbone_bn", ["train.freeze_backbone_bn=true"]),
    ("+ train.freeze_backbone_until: 8", ["train.freeze_backbone_until=8"]),
    ("+ 192x256 crops", ["data.crop_size=[192, 256]"]),
]
# ``--deeper-freezing``: the table's variant these replace one override of, and the variants.
DEEPER_FREEZING_BASE = "+ train.freeze_backbone_until: 8"
DEEPER_FREEZING = (16, 32)

# Trainings of the ``train`` table: name -> overrides of the fast recipe.
TRAIN_RUNS: dict[str, list[str]] = {
    "fast": [],
    "no_frozen_stages": ["train.freeze_backbone_until=null"],
    "no_frozen_bn_or_stages": [
        "train.freeze_backbone_until=null",
        "train.freeze_backbone_bn=false",
    ],
    "no_progressive_crops": ["data.crop_schedule=[]"],
}


# --------------------------------------------------------------------------- steps


def _trainer(overrides: list[str], fused: bool, work_dir: Path) -> Trainer:
    cfg = load_run_config(
        str(RECIPE),
        [*overrides, f"work_dir={work_dir}", "train.num_threads=null", "train.seed=0"],
    )
    trainer = Trainer.from_config(cfg, force=True, show_progress=False)
    if not fused:
        _unfuse(trainer.train_set)
    return trainer


def _unfuse(dataset: Any) -> None:
    """Put the recipe's original two transforms back in place of the fused one."""
    target = getattr(dataset, "dataset", dataset)
    transforms = target.transform.transforms
    for index, transform in enumerate(transforms):
        if isinstance(transform, RandomScaleCrop):
            crop = transform.crop
            transforms[index : index + 1] = [
                RandomScale(transform.scale.min_scale, transform.scale.max_scale),
                RandomCrop(crop.size, crop.mean_colour, crop.ignore_index),
            ]
            target.transform = Compose(transforms)
            return


def _block_seconds(trainer: Trainer, iterations: int, autocast: Any = None) -> float:
    """Mean seconds per iteration over ``iterations`` steps, batch preparation included."""
    batches = trainer._batches()
    context = autocast if autocast is not None else nullcontext()
    start = time.perf_counter()
    with context:
        for _ in range(iterations):
            trainer.run_step(next(batches))
    seconds = (time.perf_counter() - start) / iterations
    if isinstance(batches, Prefetcher):
        batches.close()
    return seconds


def _beside_the_table(
    args: argparse.Namespace, overrides: list[str]
) -> dict[str, tuple[Trainer, Any]]:
    """The variants that change one thing of the stride-8 frozen one at 288x384 (``overrides``):
    deeper freezing, the loss at sampled pixels, and both."""
    variants: dict[str, tuple[Trainer, Any]] = {}
    points = getattr(args, "loss_points", None)
    strides = DEEPER_FREEZING if getattr(args, "deeper_freezing", False) else ()
    for stride in strides:
        deeper = [*overrides, f"train.freeze_backbone_until={stride}"]
        trainer = _trainer(deeper, True, RUNS / f"steps_until_{stride}")
        variants[f"train.freeze_backbone_until: {stride} (288x384)"] = (trainer, None)
    if points is not None:
        sampled = [*overrides, f"model.loss_points={points}"]
        trainer = _trainer(sampled, True, RUNS / "steps_loss_points")
        variants[f"model.loss_points: {points} (288x384)"] = (trainer, None)
        if strides:
            both = [*sampled, f"train.freeze_backbone_until={strides[-1]}"]
            trainer = _trainer(both, True, RUNS / f"steps_until_{strides[-1]}_loss_points")
            name = (
                f"train.freeze_backbone_until: {strides[-1]}, model.loss_points: {points} (288x384)"
            )
            variants[name] = (trainer, None)
    return variants


def measure_steps(args: argparse.Namespace) -> dict[str, Any]:
    variants: dict[str, tuple[Trainer, Any]] = {}
    overrides: list[str] = []
    for index, (name, added) in enumerate(STEP_LEVERS):
        overrides = overrides + added
        variants[name] = (_trainer(overrides, index > 0, RUNS / f"steps_{index}"), None)
        if name == DEEPER_FREEZING_BASE:
            variants.update(_beside_the_table(args, overrides))
    compile_seconds = None
    if args.bf16:
        trainer = _trainer(overrides, True, RUNS / "steps_bf16")
        variants["+ bf16 autocast"] = (trainer, torch.autocast("cpu", dtype=torch.bfloat16))
    if args.compile:
        trainer = _trainer([*overrides, "train.compile=true"], True, RUNS / "steps_compile")
        start = time.perf_counter()
        _block_seconds(trainer, 1)
        compile_seconds = time.perf_counter() - start
        variants["+ train.compile"] = (trainer, None)
    for trainer, autocast in variants.values():  # warm-up: first epoch of the cache, allocator
        _block_seconds(trainer, 2, copy.copy(autocast))
    blocks: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, (trainer, autocast) in variants.items():
            blocks[name].append(_block_seconds(trainer, args.iters, copy.copy(autocast)))
            print(f"round {round_index} {name}: {blocks[name][-1]:.3f} s/it", flush=True)
    base = sorted(blocks[STEP_LEVERS[0][0]])[len(blocks[STEP_LEVERS[0][0]]) // 2]
    table = []
    for name, times in blocks.items():
        median = sorted(times)[len(times) // 2]
        table.append(
            {
                "variant": name,
                "seconds_per_iteration": median,
                "blocks": times,
                "relative_to_recipe": median / base,
            }
        )
    return {
        "iterations_per_block": args.iters,
        "rounds": args.rounds,
        "batch": "8 CamVid train crops (288x384 unless stated), Lite0 ladder w64, Adam",
        "compile_seconds_first_step": compile_seconds,
        "rows": table,
    }


# --------------------------------------------------------------------------- train


def run_name(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"


def finished(work_dir: Path, max_iters: int) -> bool:
    record = last_validation(work_dir)
    return record is not None and record.get("iteration") == max_iters


def measure_training(args: argparse.Namespace) -> dict[str, Any]:
    fast = load_run_config(str(FAST), [])
    jobs = []
    for name in args.runs:
        for seed in args.seeds:
            work_dir = RUNS / run_name(name, seed)
            cfg = load_run_config(str(FAST), TRAIN_RUNS[name])
            if finished(work_dir, cfg.train.max_iters):
                print(f"{run_name(name, seed)}: finished, not run again", file=sys.stderr)
                continue
            threads = 1 if args.jobs > 1 else 2
            overrides = [*TRAIN_RUNS[name], f"train.seed={seed}", f"train.num_threads={threads}"]
            jobs.append(
                TrainJob(
                    run_name(name, seed),
                    FAST,
                    work_dir,
                    overrides,
                    log=work_dir.with_suffix(".log"),
                )
            )
    if jobs:
        train(jobs, parallel=args.jobs, threads=1 if args.jobs > 1 else 2, nice=0)
    rows = []
    for name in args.runs:
        for seed in args.seeds:
            work_dir = RUNS / run_name(name, seed)
            record = last_validation(work_dir)
            if record is None:
                continue
            rows.append(
                {
                    "run": name,
                    "seed": seed,
                    "overrides": TRAIN_RUNS[name],
                    "val_miou": 100 * record["miou"],
                    "boundary_miou": 100 * record["boundary_miou"],
                    "iterations": record["iteration"],
                    "train_seconds": _train_seconds(work_dir),
                    "run_dir": str(work_dir.relative_to(REPO)),
                }
            )
    return {
        "recipe": str(FAST.relative_to(REPO)),
        "max_iters": fast.train.max_iters,
        "jobs_at_a_time": args.jobs,
        "rows": rows,
    }


def _train_seconds(work_dir: Path) -> float | None:
    """Wall seconds from the first to the last record of the run's log (evaluation included)."""
    records = [r for r in read_metrics(work_dir) if "time" in r]
    if len(records) < 2:
        return None
    return records[-1]["time"] - records[0]["time"]


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    steps = sub.add_parser("steps", help="seconds per iteration of each lever")
    steps.add_argument("--iters", type=int, default=10)
    steps.add_argument("--rounds", type=int, default=3)
    steps.add_argument("--compile", action="store_true")
    steps.add_argument("--bf16", action="store_true")
    steps.add_argument(
        "--deeper-freezing", action="store_true", help="also freeze up to stride 16 and 32"
    )
    steps.add_argument(
        "--loss-points", type=int, help="also time model.loss_points with this many pixels"
    )
    runs = sub.add_parser("train", help="val mIoU of the fast recipe and its leave-one-out runs")
    runs.add_argument("--runs", nargs="+", choices=sorted(TRAIN_RUNS), default=list(TRAIN_RUNS))
    runs.add_argument("--seeds", nargs="+", type=int, default=[0])
    runs.add_argument("--jobs", type=int, default=1)
    for part in (steps, runs):
        part.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    table = measure_steps(args) if args.part == "steps" else measure_training(args)
    # Read the other part's table only now: the two parts may run at the same time.
    record: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    record[args.part] = table
    # Each part keeps its own command, date and machine; the file's own (common.write_result)
    # are those of the part written last.
    command, described = command_line(), machine(threads=torch.get_num_threads())
    record.setdefault("commands", {})[args.part] = command
    record.setdefault("machines", {})[args.part] = described
    record.setdefault("dates", {})[args.part] = time.strftime(
        "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()
    )
    write_result(args.json, {**record, "command": command, "machine": described})
    print(json.dumps(record[args.part]["rows"], indent=1))


if __name__ == "__main__":
    main()
