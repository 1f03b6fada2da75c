"""Trials of the fast CamVid recipe's settings, one change at a time (issue 26): val mIoU.

The fast recipe (``configs/lite0/ladder_camvid_fast.yaml``) falls short of the 72 % the issue
asks for; each trial here is that recipe with one or two settings changed (:data:`TRIALS`),
trained by ``leanseg train`` on CamVid train and evaluated at its end as the recipe is (101 val
images, one pass at 1.5x). Trials are for accuracy: they run ``--jobs`` at a time on one thread
each, beside other work, so their wall times are recorded but are not the recipe's timings
(``benchmarks/training/camvid_recipe.py`` measures those, quiet). A finished trial (a validation
at the last iteration) is not run again.

    python benchmarks/training/recipe_trials.py [--trials lr_12e-4 spp_context ...] \\
        [--seeds 0] [--jobs 2] [--runs-dir runs/recipe_trials]

Each run goes to ``RUNS_DIR/<trial>_s<seed>``, its output to ``<trial>_s<seed>.log`` and, before
it starts, its command, the leanseg commit and the machine to ``<trial>_s<seed>.trial.json``.
``--collect-only`` trains nothing and reads the runs already there; runs without that file
(trained by the same command by other means) take their commit from ``--trained-at``. Writes
``benchmarks/results/fast_recipe_trials.json``: per trial and seed the val mIoU, boundary mIoU,
per-class IoU, the overrides and the command. Rows already in that file whose runs are not in
``--runs-dir`` (an earlier session's) are kept as they were.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import (
    REPO,
    TrainJob,
    last_validation,
    leanseg_source,
    machine,
    read_metrics,
    train,
    write_result,
)

FAST = REPO / "configs/lite0/ladder_camvid_fast.yaml"
RESULTS = REPO / "benchmarks/results/fast_recipe_trials.json"
RUNS = REPO / "runs/recipe_trials"
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence")
CAMVID_CLASSES += ("Car", "Pedestrian", "Bicyclist")


def full_crops_for(iterations: int) -> list[str]:
    """Overrides of the fast recipe for 288x384 crops from the first iteration (no progressive
    resizing), ``iterations`` long, validated at the end and saved every 650 iterations (the
    full recipe's interval)."""
    return [
        "data.crop_schedule=[]",
        f"train.max_iters={iterations}",
        f"train.eval_interval={iterations}",
        "train.checkpoint_interval=650",
    ]


# name -> (overrides of the fast recipe, what the trial asks)
TRIALS: dict[str, tuple[list[str], str]] = {
    "recipe": ([], "the fast recipe as shipped"),
    "lr_12e-4": (["train.lr=1.2e-3"], "twice the learning rate (head; backbone at 1/4 of it)"),
    "lr_20e-4": (["train.lr=2.0e-3"], "3.3x the learning rate"),
    "bn_trained_after_stride_8": (
        ["train.freeze_backbone_bn=false"],
        "BatchNorm of the stages after stride 8 in training mode; stages up to 8 frozen as before",
    ),
    "spp_context": (
        ['model.context={"name": "spp"}'],
        "SwiftNet's spatial pyramid pooling on the encoder's last feature",
    ),
    "lr_12e-4_bn_frozen_only": (
        ["train.lr=1.2e-3", "train.freeze_backbone_until=null"],
        "twice the learning rate, every backbone stage trained (BatchNorm still frozen)",
    ),
    "lr_12e-4_frozen_until_4": (
        ["train.lr=1.2e-3", "train.freeze_backbone_until=4"],
        "twice the learning rate, only the stem and the stride-4 stages frozen (BatchNorm frozen)",
    ),
    "batch4_twice_the_iterations": (
        [
            "data.batch_size=4",
            "train.max_iters=4400",
            'data.crop_schedule=[{"crop_size": [192, 256], "until": 3400}]',
            "train.eval_interval=4400",
            "train.checkpoint_interval=1100",
        ],
        "batch 4 for twice the iterations (the same pixels, twice the updates)",
    ),
    "small_crops_at_two_thirds_scale": (
        ['data.crop_schedule=[{"crop_size": [192, 256], "until": 1700, "scale": 0.6667}]'],
        "the 192x256 stage sees the images at 2/3 of their scale, so its crops cover as much "
        "of the scene as the 288x384 ones (fast.ai-style progressive resizing)",
    ),
    "lite1_backbone": (
        ["model.backbone.name=efficientnet_lite1", "model.backbone.pretrained=efficientnet-lite1"],
        "EfficientNet-Lite1 (ImageNet-pretrained) in place of Lite0, everything else as shipped",
    ),
    "lite2_backbone": (
        ["model.backbone.name=efficientnet_lite2", "model.backbone.pretrained=efficientnet-lite2"],
        "EfficientNet-Lite2 (ImageNet-pretrained) in place of Lite0, everything else as shipped",
    ),
    "ema_0998": (
        ["train.ema_decay=0.998"],
        "the moving average of the weights evaluated (decay 0.998, about the last 500 steps: "
        "the 288x384 stage); the weights as trained are scored too, from the same run",
    ),
    "cat_max_ratio_075": (
        ["data.cat_max_ratio=0.75"],
        "a crop's position redrawn (up to 10 times) while one class covers over 75 % of its "
        "labelled pixels, so fewer crops are all road, sky or building",
    ),
    "median_frequency_weights": (
        [
            "model.head.class_weights="
            "[0.27, 0.19, 4.56, 0.14, 1.0, 0.46, 3.82, 3.98, 0.76, 7.02, 15.38]"
        ],
        "class weights by median frequency to the power 1 (SegNet's CamVid balancing; "
        "`leanseg data weights configs/lite0/ladder_camvid.yaml --power 1.0`) in place of the "
        "recipe's power 0.5: the fast recipe loses its points on pole, sign and pedestrian",
    ),
    "full_crops_1300": (
        full_crops_for(1300),
        "no progressive resizing: 288x384 crops from the first iteration, 1300 iterations, about "
        "the shipped schedule's time (1300 x 0.56 s against 1700 x 0.30 + 500 x 0.56 s in "
        "fast_training.json): is it the small crops that cost the thin classes?",
    ),
    "full_budget_frozen": (
        full_crops_for(2600),
        "the full recipe's schedule (2600 iterations at 288x384, 72.1 %) with the fast recipe's "
        "frozen BatchNorm and stages: how much compute the frozen model needs for 72 %",
    ),
    "two_thirds_scale_2600": (
        [
            "data.crop_schedule=[]",
            "data.crop_size=[192, 256]",
            "data.scale_range=[0.6667, 1.3333]",
            "eval.scales=[1.0]",
            "train.max_iters=2600",
            "train.eval_interval=2600",
            "train.checkpoint_interval=650",
        ],
        "full_budget_frozen at 2/3 of the resolution throughout: its 2600 iterations with crops "
        "of 192x256 cut from images seen at 2/3 of the recipe's scale (each crop covers the "
        "scene a 288x384 one covers), and validation at 1.0x instead of 1.5x to match: about "
        "0.30 s an iteration instead of 0.56 (fast_training.json), so the full recipe's number "
        "of iterations in the fast recipe's time; what does the lower resolution cost?",
    ),
    "full_budget_frozen_until_16": (
        [*full_crops_for(2600), "train.freeze_backbone_until=16"],
        "full_budget_frozen with the backbone frozen up to stride 16 instead of 8: no gradients "
        "through the stride-16 stage, a cheaper iteration at the same resolution; does the "
        "accuracy hold as it did for freezing up to stride 8?",
    ),
    "full_budget_frozen_until_32": (
        [*full_crops_for(2600), "train.freeze_backbone_until=32"],
        "full_budget_frozen with the whole backbone frozen (BatchNorm and every stage): only the "
        "decoder learns, about two thirds of the stride-8 iteration's time "
        "(fast_training.json); is the ImageNet encoder as it is enough for 72 %?",
    ),
    "full_budget_loss_points": (
        [*full_crops_for(2600), "model.loss_points=16384"],
        "full_budget_frozen with the loss at 16384 random pixels of each 288x384 crop (about one "
        "in seven) instead of all of them: the full-resolution scores are not formed, a cheaper "
        "iteration; does the sampled loss train as well as the full one?",
    ),
    "full_budget_frozen_until_32_loss_points": (
        [*full_crops_for(2600), "train.freeze_backbone_until=32", "model.loss_points=16384"],
        "the two cheaper iterations together (the whole backbone frozen, the loss at 16384 "
        "pixels): the full recipe's 2600 iterations at 288x384 at about half the stride-8 "
        "iteration's time, the candidate for 72 % in 15 minutes",
    ),
    "frozen_until_16_loss_points_2200": (
        [*full_crops_for(2200), "train.freeze_backbone_until=16", "model.loss_points=16384"],
        "the backbone frozen up to stride 16 and the loss at 16384 pixels, 2200 iterations at "
        "288x384: the most iterations of that model that 15 minutes hold",
    ),
    "hard_pixels_025": (
        ["model.hard_pixel_fraction=0.25"],
        "online hard example mining: each step's loss over the quarter of the labelled pixels "
        "with the largest (class-weighted) loss, so that the thin classes' pixels and the "
        "boundaries count for more without the stronger class weights that cost 5 points",
    ),
}


def run_dir(runs: Path, trial: str, seed: int) -> Path:
    return runs / f"{trial}_s{seed}"


def trial_job(runs: Path, trial: str, seed: int) -> TrainJob:
    overrides = [*TRIALS[trial][0], "train.num_threads=1", f"train.seed={seed}"]
    folder = run_dir(runs, trial, seed)
    return TrainJob(f"{trial}_s{seed}", FAST, folder, overrides, log=runs / f"{trial}_s{seed}.log")


def finished(folder: Path, max_iters: int) -> bool:
    record = last_validation(folder)
    return record is not None and record.get("iteration") == max_iters


def max_iters(trial: str) -> int:
    from leanseg.models import load_run_config

    return load_run_config(str(FAST), TRIALS[trial][0]).train.max_iters


def start_record(job: TrainJob) -> dict[str, Any]:
    """What a run's ``.trial.json`` holds: how it was started."""
    return {
        "command": shlex.join(job.command()),
        "leanseg": leanseg_source(),
        "machine": machine(),
    }


def row(runs: Path, trial: str, seed: int, trained_at: str | None) -> dict[str, Any] | None:
    folder = run_dir(runs, trial, seed)
    record = last_validation(folder)
    if record is None or record.get("iteration") != max_iters(trial):
        return None
    started_path = runs / f"{trial}_s{seed}.trial.json"
    if started_path.is_file():
        started = json.loads(started_path.read_text())
        command, commit = started["command"], started["leanseg"].get("commit")
    else:
        command = shlex.join(trial_job(runs, trial, seed).command())
        commit = trained_at
    times = [r["time"] for r in read_metrics(folder) if "time" in r]
    as_trained = training_weights_miou(runs, trial, seed)
    return {
        "trial": trial,
        "seed": seed,
        "overrides": TRIALS[trial][0],
        "about": TRIALS[trial][1],
        "val_miou": round(100 * record["miou"], 2),
        "boundary_miou": round(100 * record["boundary_miou"], 2),
        "per_class_iou": {
            name: round(100 * iou, 1)
            for name, iou in zip(CAMVID_CLASSES, record["iou"], strict=True)
        },
        "val_miou_training_weights": as_trained,
        "iterations": record["iteration"],
        "wall_seconds_shared": round(times[-1] - times[0], 1) if len(times) > 1 else None,
        "command": command,
        "trained_at_commit": commit,
    }


def training_weights_miou(runs: Path, trial: str, seed: int) -> float | None:
    """Val mIoU (%) of the weights as trained, for a run whose checkpoints hold their moving
    average (``train.ema_decay``): ``leanseg eval --training-weights`` on its ``last.pt``, run
    once, its JSON kept beside the run. ``None`` for a run without the average."""
    from leanseg.cli import main as leanseg_main
    from leanseg.files.checkpoint import load_checkpoint

    out = runs / f"{trial}_s{seed}.training_weights.json"
    last = run_dir(runs, trial, seed) / "checkpoints" / "last.pt"
    if not out.is_file():  # the checkpoint is read only until its score is kept
        if not last.is_file() or "training_model" not in load_checkpoint(last):
            return None
        args = ["eval", str(run_dir(runs, trial, seed)), "--checkpoint", str(last)]
        code = leanseg_main([*args, "--training-weights", "--no-progress", "--json", str(out)])
        if code != 0:
            raise SystemExit(f"{trial}_s{seed}: leanseg eval --training-weights exited {code}")
    return round(100 * json.loads(out.read_text())["miou"], 2)


def merged_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the rows of an earlier ``path`` that they do not replace (run folders do not
    outlive a session; each row keeps the command and commit it was trained with), in the order
    of :data:`TRIALS`, then seed."""
    fresh = {(r["trial"], r["seed"]) for r in rows}
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    kept = [r for r in earlier if (r["trial"], r["seed"]) not in fresh and r["trial"] in TRIALS]
    order = {name: index for index, name in enumerate(TRIALS)}
    return sorted([*kept, *rows], key=lambda r: (order[r["trial"]], r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", nargs="+", choices=sorted(TRIALS), default=list(TRIALS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=RUNS)
    parser.add_argument("--collect-only", action="store_true", help="train nothing")
    parser.add_argument("--trained-at", help="commit of runs that lack trial.json")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    pairs = [(trial, seed) for trial in args.trials for seed in args.seeds]
    if not args.collect_only:
        jobs = []
        for trial, seed in pairs:
            if finished(run_dir(args.runs_dir, trial, seed), max_iters(trial)):
                continue
            job = trial_job(args.runs_dir, trial, seed)
            args.runs_dir.mkdir(parents=True, exist_ok=True)
            started = args.runs_dir / f"{trial}_s{seed}.trial.json"
            started.write_text(json.dumps(start_record(job), indent=2))
            jobs.append(job)
        train(jobs, parallel=args.jobs, threads=1, nice=0)
    rows = [r for trial, seed in pairs if (r := row(args.runs_dir, trial, seed, args.trained_at))]
    rows = merged_rows(args.json, rows)
    write_result(
        args.json,
        {
            "recipe": str(FAST.relative_to(REPO)),
            "protocol": "CamVid val, 101 images, one pass at 1.5x; single runs, one thread each, "
            f"{args.jobs} at a time beside other work (wall seconds are not timings)",
            "rows": rows,
        },
    )
    for r in rows:
        print(f"{r['trial']:>28} s{r['seed']}  {r['val_miou']:.2f} % val mIoU")


if __name__ == "__main__":
    main()
