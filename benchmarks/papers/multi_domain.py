"""Issue 15 (thesis ch. 5): a CamVid + EM model against a CamVid-only one, foreign classes as OOD.

Three ``leanseg train`` runs of the ch. 5 model on pretrained EfficientNet-Lite0
(``configs/multi_domain/``), then evaluation in this process:

- ``joint``: CamVid + ISBI 2012 EM, CamVid drawn 2:1, both in every batch, ``1.5 * iters``
  iterations;
- ``camvid``: CamVid alone, ``iters`` iterations, so it sees as many CamVid images as ``joint``
  (2/3 of 1.5);
- ``joint_single_batches``: ``joint`` with ``data.mix_batches=false`` (each batch one dataset),
  same budget.

Parts of the issue's done-means, in ``benchmarks/results/multi_domain.json``:

(a) CamVid val mIoU of ``joint`` (in CamVid's classes, foreign predictions scored as Void) and
    of ``camvid``; EM val mIoU of ``joint``.
(b) Foreign-pixel incidence per dataset of ``joint`` (thesis Table 5.1).
(c) EM val images as out-of-distribution input for the driving classes, CamVid val images as
    in-distribution: AUROC of ``joint``'s foreign-class flag (image score: fraction of foreign
    pixels) and foreign mass, against the max-softmax score of ``camvid`` (image score: mean of
    ``1 - max p``); image level and pixel level (every 4th pixel in each direction).
(d) ``joint`` (mixed batches) against ``joint_single_batches``: CamVid and EM val mIoU.
(e) ``camvid`` on the 5 KITTI frames of ``../shared/data/kitti_semantics`` through a
    Cityscapes -> CamVid class table (:data:`CITYSCAPES_TO_CAMVID`; thesis 4.6.4 evaluates across
    datasets in a shared label set).

All models are read from ``checkpoints/last.pt`` (equal budgets). Usage::

    .venv/bin/python benchmarks/papers/multi_domain.py --iters 1800 --device cuda
    # smoke run (a few iterations, tiny crops, outputs in /tmp):
    .venv/bin/python benchmarks/papers/multi_domain.py --iters 2 --runs-dir /tmp/md/runs \
        --out /tmp/md/multi_domain.json --max-images 2 \
        --set data.crop_size=[64,96] --set data.batch_size=2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.config import Config
from leanseg.data import build_dataset, entry_config
from leanseg.data.classes import CAMVID_CLASSES, CITYSCAPES_CLASSES
from leanseg.data.io import read_rgb
from leanseg.data.multi import UnionLabels
from leanseg.evaluation.domains import evaluate_per_dataset
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.inference.loading import load_trained_model
from leanseg.inference.ood_maps import domain_classes
from leanseg.inference.predictor import Predictor
from leanseg.metrics.ood import auroc, foreign_map, image_score, max_softmax_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, TrainJob, command_line, machine, read_metrics, train, write_result

JOINT = "configs/multi_domain/ldn_lite0_camvid_em.yaml"
CAMVID = "configs/multi_domain/ldn_lite0_camvid.yaml"
KITTI_ROOT = "../shared/data/kitti_semantics"  # relative to the repository, as the configs' roots
PIXEL_STEP = 4  # pixel-level AUROC on every 4th pixel in each direction

# Cityscapes train class -> CamVid (SegNet 11) class, following how the SegNet 11 classes group
# CamVid's 32: Building takes walls, Car takes trucks, buses and trains, Bicyclist takes
# motorcycles and riders, SignSymbol takes traffic lights. Terrain has no CamVid class: ignored.
CITYSCAPES_TO_CAMVID = {
    "road": "Road", "sidewalk": "Pavement", "building": "Building", "wall": "Building",
    "fence": "Fence", "pole": "Pole", "traffic light": "SignSymbol",
    "traffic sign": "SignSymbol", "vegetation": "Tree", "terrain": None, "sky": "Sky",
    "person": "Pedestrian", "rider": "Bicyclist", "car": "Car", "truck": "Car", "bus": "Car",
    "train": "Car", "motorcycle": "Bicyclist", "bicycle": "Bicyclist",
}  # fmt: skip


class _TableLabels:
    """A label table for :class:`UnionLabels`: Cityscapes train ids -> CamVid ids."""

    def __init__(self) -> None:
        self.table = np.full(256, 255, dtype=np.uint8)
        for index, name in enumerate(CITYSCAPES_CLASSES):
            target = CITYSCAPES_TO_CAMVID[name]
            if target is not None:
                self.table[index] = CAMVID_CLASSES.index(target)

    def remap(self, label: np.ndarray, *, partial: bool = False) -> np.ndarray:
        return self.table[label]  # no class covers several: ``partial`` changes nothing


def _jobs(args: argparse.Namespace) -> dict[str, TrainJob]:
    joint_iters = round(1.5 * args.iters)

    def sets(iters: int) -> list[str]:
        return [
            f"train.max_iters={iters}",
            f"train.eval_interval={iters}",
            f"train.checkpoint_interval={iters}",
            f"train.warmup_iters={min(50, iters // 10)}",
            *(["eval.max_images=" + str(args.max_images)] if args.max_images else []),
            *args.set,
        ]

    runs = Path(args.runs_dir)
    return {
        "joint": TrainJob("joint", JOINT, runs / "joint", sets(joint_iters), runs / "joint.log"),
        "camvid": TrainJob(
            "camvid", CAMVID, runs / "camvid", sets(args.iters), runs / "camvid.log"
        ),
        "joint_single_batches": TrainJob(
            "joint_single_batches",
            JOINT,
            runs / "joint_single_batches",
            [*sets(joint_iters), "data.mix_batches=false"],
            runs / "joint_single_batches.log",
        ),
    }


def _logged_seconds(run: Path) -> float | None:
    """Seconds from a run's first to its last ``metrics.jsonl`` record (``None``: no records)."""
    times = [record["time"] for record in read_metrics(run) if "time" in record]
    return round(times[-1] - times[0]) if times else None


def _load(run: Path) -> tuple[torch.nn.Module, Config]:
    trained = load_trained_model(run, run / "checkpoints" / "last.pt")
    return trained.model, trained.cfg


def _per_dataset(model: torch.nn.Module, cfg: Config, device: torch.device) -> dict[str, Any]:
    scores = evaluate_per_dataset(
        model, cfg.data, cfg.data.val_split, eval_cfg=cfg.eval, device=device
    )
    return {
        name: {"miou": s.miou, "iou": s.iou, "foreign_fraction": s.foreign_fraction}
        for name, s in scores.items()
    }


def _val_files(cfg: Config, entry: str | None, limit: int | None) -> list[Path]:
    """Image files of the val split of one entry of ``cfg.data.datasets`` (or of cfg.data)."""
    data = cfg.data
    if entry is not None:
        chosen = next(e for e in data.datasets or [] if e.key == entry)
        data = entry_config(data, chosen)
    dataset = build_dataset(data, data.val_split, train=False)
    files = [f.image for f in dataset.files]
    return files[:limit] if limit else files


def _scores(predictor: Predictor, files: list[Path], native: list[int] | None) -> dict[str, Any]:
    """Image and (sub-sampled) pixel OOD scores of ``files``: max-softmax, and with ``native``
    the foreign flag and foreign mass."""
    out: dict[str, list] = {"msp": [], "msp_px": [], "flag": [], "mass": [], "mass_px": []}
    for path in files:
        probabilities = predictor.predict_scores(read_rgb(path))  # (C, H, W)
        msp = max_softmax_score(probabilities)
        out["msp"].append(image_score(msp))
        out["msp_px"].append(msp[::PIXEL_STEP, ::PIXEL_STEP].flatten().cpu().numpy())
        if native is not None:
            maps = foreign_map(probabilities, native)
            out["flag"].append(image_score(maps.foreign))
            out["mass"].append(image_score(maps.mass))
            out["mass_px"].append(maps.mass[::PIXEL_STEP, ::PIXEL_STEP].flatten().cpu().numpy())
    return out


def _ood(
    joint: tuple[torch.nn.Module, Config],
    camvid: tuple[torch.nn.Module, Config],
    device: torch.device,
    limit: int | None,
) -> dict[str, Any]:
    model, cfg = joint
    in_files = _val_files(cfg, "camvid", limit)
    out_files = _val_files(cfg, "em", limit)
    native = domain_classes(cfg.data, "camvid")
    joint_predictor = Predictor(model, cfg, device=device, scales=cfg.eval.scales)
    j_in, j_out = (_scores(joint_predictor, f, native) for f in (in_files, out_files))
    c_model, c_cfg = camvid
    camvid_predictor = Predictor(c_model, c_cfg, device=device, scales=c_cfg.eval.scales)
    c_in, c_out = (_scores(camvid_predictor, f, None) for f in (in_files, out_files))

    def px(scores: dict[str, list], key: str) -> np.ndarray:
        return np.concatenate(scores[key])

    return {
        "in_images": len(in_files),
        "out_images": len(out_files),
        "image_auroc": {
            "joint_foreign_flag": auroc(j_in["flag"], j_out["flag"]),
            "joint_foreign_mass": auroc(j_in["mass"], j_out["mass"]),
            "joint_max_softmax": auroc(j_in["msp"], j_out["msp"]),
            "camvid_max_softmax": auroc(c_in["msp"], c_out["msp"]),
        },
        "pixel_auroc": {
            "joint_foreign_mass": auroc(px(j_in, "mass_px"), px(j_out, "mass_px")),
            "joint_max_softmax": auroc(px(j_in, "msp_px"), px(j_out, "msp_px")),
            "camvid_max_softmax": auroc(px(c_in, "msp_px"), px(c_out, "msp_px")),
        },
        "mean_foreign_fraction": {
            "camvid_val": float(np.mean(j_in["flag"])),
            "em_val": float(np.mean(j_out["flag"])),
        },
    }


def _kitti(model: torch.nn.Module, cfg: Config, device: torch.device) -> dict[str, Any]:
    data = dataclasses.replace(cfg.data, dataset="kitti", root=KITTI_ROOT, options={})
    dataset = UnionLabels(build_dataset(data, "train", train=False), _TableLabels())
    eval_cfg = dataclasses.replace(cfg.eval, max_images=None)
    evaluators = default_evaluators(
        model,
        num_classes=len(CAMVID_CLASSES),
        boundary_width=eval_cfg.boundary_width,
        class_names=CAMVID_CLASSES,
    )
    scores = evaluate(model, dataset, evaluators, eval_cfg=eval_cfg, device=device)
    return {
        "frames": len(dataset),
        "miou": scores.miou,
        "iou": dict(zip(CAMVID_CLASSES, scores.iou, strict=True)),
        "table": CITYSCAPES_TO_CAMVID,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=1800, help="CamVid-only iterations")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "multi_domain_bench"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "multi_domain.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-images", type=int, help="val images per dataset (default: all)")
    parser.add_argument("--set", action="append", default=[], help="override for every run")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time")
    parser.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    parser.add_argument(
        "--stage",
        choices=["all", "without-single", "single"],
        default="all",
        help="evaluate every run; all but joint_single_batches (its row of (d) left null); or "
        "only joint_single_batches, added to the --out a without-single stage wrote (so the "
        "other runs' evaluation can go on while it still trains)",
    )
    args = parser.parse_args()
    os.chdir(REPO)  # the configs' data roots are relative to the repository
    jobs = _jobs(args)
    start = time.perf_counter()
    if not args.skip_train:
        train(list(jobs.values()), parallel=args.jobs)
    trained_s = time.perf_counter() - start
    device = torch.device(args.device)
    logged = {name: _logged_seconds(job.work_dir) for name, job in jobs.items()}
    if args.stage == "single":
        _add_single(args.out, _load(jobs["joint_single_batches"].work_dir), device, logged)
        return
    joint, camvid = (_load(jobs[name].work_dir) for name in ("joint", "camvid"))
    joint_scores = _per_dataset(*joint, device)
    single_scores = None
    if args.stage == "all":
        single_scores = _per_dataset(*_load(jobs["joint_single_batches"].work_dir), device)
    c_model, c_cfg = camvid
    c_val = evaluate(
        c_model,
        build_dataset(c_cfg.data, c_cfg.data.val_split, train=False),
        default_evaluators(
            c_model, num_classes=len(CAMVID_CLASSES), boundary_width=c_cfg.eval.boundary_width
        ),
        eval_cfg=c_cfg.eval,
        device=device,
    )
    result = {
        "budget": {
            "camvid_iters": args.iters,
            "joint_iters": round(1.5 * args.iters),
            "overrides": args.set,
            "max_images": args.max_images,
            "checkpoint": "last.pt",
        },
        "a_joint_vs_camvid_only": {
            "camvid_val_miou": {"joint": joint_scores["camvid"]["miou"], "camvid_only": c_val.miou},
            "em_val_miou_joint": joint_scores["em"]["miou"],
        },
        "b_foreign_incidence": {n: s["foreign_fraction"] for n, s in joint_scores.items()},
        "c_em_as_ood": _ood(joint, camvid, device, args.max_images),
        "d_mixed_vs_single_batches": {
            "mixed": {n: s["miou"] for n, s in joint_scores.items()},
            "single": None
            if single_scores is None
            else {n: s["miou"] for n, s in single_scores.items()},
        },
        "e_camvid_model_on_kitti": _kitti(c_model, c_cfg, device),
        "per_dataset": {"joint": joint_scores, "joint_single_batches": single_scores},
        "train_seconds": None if args.skip_train else trained_s,
        # Per run, from its first to its last metrics.jsonl record (with --skip-train too).
        "train_seconds_logged": logged,
    }
    write_result(args.out, result, device=args.device)
    print(f"wrote {args.out}")


def _add_single(
    out: str, single: tuple[torch.nn.Module, Config], device: torch.device, logged: dict
) -> None:
    """``--stage single``: joint_single_batches' scores into the results of the other runs."""
    result = json.loads(Path(out).read_text())
    scores = _per_dataset(*single, device)
    result["d_mixed_vs_single_batches"]["single"] = {n: s["miou"] for n, s in scores.items()}
    result["per_dataset"]["joint_single_batches"] = scores
    result["train_seconds_logged"] = logged
    result["command_single_stage"] = command_line()
    result["machine_single_stage"] = machine(str(device))
    write_result(out, result)  # keeps the first stage's command and machine, dates this one
    print(f"added joint_single_batches to {out}")


if __name__ == "__main__":
    main()
