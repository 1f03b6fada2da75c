"""QGN Table 1 grid: train with each propagation scheme and weighting, evaluate with each scheme.

For every (train scheme, loss weighting) pair this trains the given config through the ordinary
``leanseg train`` command (one subprocess per run, ``--set`` overrides only), then evaluates the
run's last checkpoint on the val split with the All, GTC and PC propagation schemes (QGN 3.3) and
prints pixel accuracy and mIoU in the layout of QGN Table 1. Runs that already finished (a
``last.pt`` at the requested iteration count) are evaluated without retraining, so the grid can be
extended or re-printed cheaply.

    OMP_NUM_THREADS=1 python benchmarks/papers/qgn_table1.py \\
        configs/qgn/qgn_r18_synthetic_cpu.yaml \\
        --out runs/qgn_table1/synthetic --parallel 2 --json benchmarks/results/qgn_table1.json

Loss weightings are written ``g0.75``, ``g1``, ``g1.25`` (fixed, QGN eq. 7 with that gamma) and
``adaptive`` (eq. 8).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from leanseg.data import build_dataset, dataset_classes
from leanseg.files.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import TrainJob, train, write_result
from qgn_eval_grid import evaluate, load_run

EVAL_SCHEMES = ("all", "gtc", "pc")


def weighting_overrides(weighting: str) -> list[str]:
    """``--set`` overrides of one loss weighting name (``g<gamma>`` or ``adaptive``)."""
    if weighting == "adaptive":
        return ["model.head.loss_weighting=adaptive"]
    if weighting.startswith("g"):
        gamma = float(weighting[1:])
        return ["model.head.loss_weighting=fixed", f"model.head.gamma={gamma}"]
    raise SystemExit(f"unknown loss weighting {weighting!r}: use g<gamma> or adaptive")


def finished_iteration(run: Path) -> int:
    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        return -1
    return int(load_checkpoint(last, map_location="cpu").get("iteration", -1))


def job(config: Path, run: Path, scheme: str, weighting: str, args: argparse.Namespace) -> TrainJob:
    """The ``leanseg train`` run of one cell of the grid; it resumes a run that has started."""
    overrides = [
        f"model.head.train_scheme={scheme}",
        f"train.max_iters={args.max_iters}",
        f"train.eval_interval={args.max_iters}",
        f"train.num_threads={args.threads}",
        *weighting_overrides(weighting),
        *args.set,
    ]
    log = run.parent / f"{run.name}.log"
    resume = (run / "checkpoints").is_dir()
    return TrainJob(run.name, config, run, overrides, log=log, resume=resume)


def evaluate_run(run: Path, images: int) -> dict[str, dict]:
    trained = load_run(run)
    cfg, model = trained.cfg, trained.model
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    count = min(images, len(dataset))
    classes = len(dataset_classes(cfg.data))
    return {s: evaluate(model, dataset, count, classes, scheme=s) for s in EVAL_SCHEMES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="QGN config (e.g. configs/qgn/qgn_r18_synthetic_cpu.yaml)")
    parser.add_argument("--out", required=True, help="folder for the grid's run directories")
    parser.add_argument("--train-schemes", nargs="+", default=["all", "gtc"])
    parser.add_argument("--weightings", nargs="+", default=["g0.75", "g1", "g1.25", "adaptive"])
    parser.add_argument("--max-iters", type=int, default=300)
    parser.add_argument("--images", type=int, default=40, help="val images evaluated")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    cells = [(s, w) for s in args.train_schemes for w in args.weightings]
    runs = {cell: out / f"train_{cell[0]}_{cell[1]}" for cell in cells}
    # Cells whose run already reached the iteration count are evaluated, not trained again.
    to_train = [cell for cell in cells if finished_iteration(runs[cell]) < args.max_iters]
    config = Path(args.config).resolve()  # the runs start in the repository's folder
    jobs = [job(config, runs[cell].resolve(), *cell, args) for cell in to_train]
    outcomes = train(jobs, parallel=args.parallel, threads=args.threads, nice=0)
    seconds: dict = dict.fromkeys(cells)
    seconds.update((cell, o.seconds) for cell, o in zip(to_train, outcomes, strict=True))
    rows = []
    print(f"{args.config}: {args.max_iters} iterations per run, {args.images} val images")
    print(f"{'train':>5} {'loss':>8} | " + " | ".join(f"{s:^13}" for s in EVAL_SCHEMES))
    print(f"{'':>5} {'':>8} | " + " | ".join(f"{'Acc':>6} {'mIoU':>6}" for _ in EVAL_SCHEMES))
    for scheme, weighting in cells:
        grid = evaluate_run(runs[(scheme, weighting)], args.images)
        rows.append(
            {
                "train_scheme": scheme,
                "loss": weighting,
                "run": str(runs[(scheme, weighting)]),
                "train_seconds": seconds[(scheme, weighting)],
                "eval": grid,
            }
        )
        cells_text = " | ".join(
            f"{grid[s]['pixel_accuracy']:6.2f} {grid[s]['miou']:6.2f}" for s in EVAL_SCHEMES
        )
        print(f"{scheme:>5} {weighting:>8} | {cells_text}", flush=True)
    if args.json:
        record = {
            "config": args.config,
            "max_iters": args.max_iters,
            "images": args.images,
            "threads_per_run": args.threads,
            "parallel_runs": args.parallel,
            "overrides": args.set,
            "rows": rows,
        }
        write_result(args.json, record)


if __name__ == "__main__":
    main()
