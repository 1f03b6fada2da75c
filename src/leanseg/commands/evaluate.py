"""``leanseg eval``: scores of a checkpoint on a dataset split, per dataset and OOD AUROC.

:func:`add_parser` adds it to the ``leanseg`` command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from leanseg.commands import common
from leanseg.config import Config, ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from leanseg.evaluation.ood import OODSeparation
    from leanseg.inference.loading import TrainedModel
    from leanseg.inference.speed import PreparedModel
    from leanseg.metrics.semantic import SegmentationScores


def add_parser(commands: Any) -> None:
    """Add ``eval`` to ``commands`` (what ``add_subparsers`` returned)."""
    from leanseg.inference.speed import add_inference_arguments

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    evaluate.add_argument(
        "target", help="run directory, checkpoint file, or YAML config file (with --checkpoint)"
    )
    evaluate.add_argument(
        "--checkpoint", help="checkpoint file (default for a run directory: checkpoints/best.pt)"
    )
    evaluate.add_argument(
        "--training-weights",
        action="store_true",
        help="for a run trained with train.ema_decay: evaluate the weights as trained instead "
        "of their moving average (which the checkpoints hold as the model)",
    )
    common.add_overrides(evaluate)
    evaluate.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    evaluate.add_argument(
        "--scales",
        type=common.POSITIVE_FLOAT,
        nargs="+",
        help="run the model on the image rescaled by each of these factors and average the "
        "scores, e.g. 0.75 1 1.25 (more accurate on objects of varied size, slower; "
        "default: the config's eval.scales)",
    )
    evaluate.add_argument(
        "--flip",
        action="store_true",
        help="also run the model on the mirrored image and average the two (a little more "
        "accurate, twice the time)",
    )
    evaluate.add_argument(
        "--crf",
        action="store_true",
        help="clean up the label map with a fully connected CRF, which pulls nearby pixels of "
        "similar colour towards the same class (slow on large images; --set eval.crf.* tunes "
        "it; Krähenbühl & Koltun 2011, thesis sec. 3.4)",
    )
    evaluate.add_argument(
        "--ood-images",
        metavar="DIR",
        help="a folder of images unlike the training data (another kind of scene): report how "
        "well the model's confidence tells them apart from the evaluated split, as the area "
        "under the ROC curve (1 = perfectly, 0.5 = not at all); the confidence is the highest "
        "class probability (and, with --ood-domain, the share of pixels given classes of "
        "the other datasets)",
    )
    evaluate.add_argument(
        "--ood-domain",
        metavar="NAME",
        help="for a model trained on several datasets (data.datasets): the entry whose images "
        "count as familiar; predictions of the other entries' classes mark foreign content",
    )
    evaluate.add_argument(
        "--max-images", type=common.POSITIVE_INT, help="evaluate at most this many images"
    )
    common.add_json_arguments(
        evaluate,
        "eval",
        "the scores (the printed mIoU and per-class IoU in percent, miou_percent and "
        "iou_percent, and every score as a fraction in [0, 1] under its own name: miou, iou, "
        "pixel_accuracy ...)",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument(
        "--device", type=common.device_name, default="auto", help="cpu, cuda, cuda:1 or auto"
    )
    add_inference_arguments(evaluate)
    evaluate.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Score the checkpoint of ``args.target`` on a split; print, and write ``--json``."""
    from leanseg.data import build_dataset, dataset_classes
    from leanseg.inference.loading import load_trained_model
    from leanseg.inference.speed import prepare_model

    overrides = _eval_overrides(args)
    common.check_json_target(args.json, "eval", force=args.force)
    device = common.select_device(args.device)
    trained = load_trained_model(
        args.target, args.checkpoint, overrides, training_weights=args.training_weights
    )
    cfg = trained.cfg
    model = trained.model.to(device)
    prepared = prepare_model(model, common.inference_options(args, device), device=device)
    common.print_notes(prepared.notes)
    split = args.split or cfg.data.val_split
    dataset = build_dataset(cfg.data, split, train=False)
    class_names = dataset_classes(cfg.data)
    scores = _measure_scores(args, model, cfg, dataset, split, class_names, prepared, device)
    out = Console()
    _print_scores(out, scores, class_names, prepared)
    ood = _ood_separation(args, model, cfg, split, device) if args.ood_images else None
    if ood is not None:
        aurocs = ", ".join(f"{name} {value:.3f}" for name, value in ood.auroc.items())
        out.print(f"OOD image AUROC ({ood.in_images} in-domain, {ood.out_images} OOD): {aurocs}")
    per_dataset = {}
    if cfg.data.datasets is not None:
        per_dataset = _per_dataset_scores(out, model, cfg, split, device)
    if args.json:
        record = _eval_record(trained, split, prepared, scores, class_names, per_dataset, ood)
        common.write_json_result(record, args.json, "eval", force=args.force)
    return 0


def _eval_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of ``args``: its own, then those its eval flags stand for."""
    overrides = list(args.overrides)
    if args.scales:
        overrides.append(f"eval.scales={list(args.scales)}")
    if args.flip:
        overrides.append("eval.flip=true")
    if args.max_images is not None:
        overrides.append(f"eval.max_images={args.max_images}")
    if args.crf:
        overrides.append("eval.crf={}")
    return overrides


def _measure_scores(
    args: argparse.Namespace,
    model: nn.Module,
    cfg: Config,
    dataset: Any,
    split: str,
    class_names: Sequence[str],
    prepared: PreparedModel,
    device: torch.device,
) -> SegmentationScores:
    """Scores of ``model`` on ``dataset`` by the default evaluators, with a progress bar."""
    from rich.progress import Progress

    from leanseg.data.transforms import input_statistics
    from leanseg.evaluation.evaluator import default_evaluators, evaluate

    console = common.console()
    with Progress(console=console, transient=True, disable=args.no_progress) as progress:
        task = progress.add_task(f"eval {split}", total=None)
        evaluators = default_evaluators(
            model,
            num_classes=len(class_names),
            boundary_width=cfg.eval.boundary_width,
            ignore_index=cfg.data.ignore_index,
            class_names=class_names,
        )
        return evaluate(
            model,
            dataset,
            evaluators,
            eval_cfg=cfg.eval,
            device=device,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
            options=prepared,
            image_statistics=input_statistics(cfg.data),
        )


def _print_scores(
    out: Console, scores: SegmentationScores, class_names: Sequence[str], prepared: PreparedModel
) -> None:
    """Print the scores table, the inference options and every extra score that was measured."""
    from leanseg.metrics.semantic import format_percent, format_scores

    out.print(format_scores(scores, class_names))
    out.print(f"inference: {prepared.options.describe()}")
    if scores.active_sites is not None:
        cost = ", ".join(f"{level} {sites:.0f}" for level, sites in scores.active_sites.items())
        out.print(f"active sites per image: {cost}")
    if scores.instance_ap is not None:
        from leanseg.metrics.instance import format_instance_ap

        out.print(format_instance_ap(scores.instance_ap, class_names))
    if scores.category_iou is not None and scores.category_miou is not None:
        cats = ", ".join(f"{name} {format_percent(v)}" for name, v in scores.category_iou.items())
        out.print(f"category IoU {format_percent(scores.category_miou)} % ({cats})")
    if scores.miiou is not None:
        out.print(f"iIoU {format_percent(scores.miiou)} % (classes with instances)")
    if scores.category_miiou is not None:
        out.print(f"category iIoU {format_percent(scores.category_miiou)} %")


def _per_dataset_scores(
    out: Console, model: nn.Module, cfg: Config, split: str, device: torch.device
) -> dict[str, SegmentationScores]:
    """Scores of a union-space model on each dataset of ``data.datasets``; prints each."""
    from leanseg.evaluation.domains import evaluate_per_dataset
    from leanseg.metrics.semantic import format_percent

    per_dataset = evaluate_per_dataset(model, cfg.data, split, eval_cfg=cfg.eval, device=device)
    for name, own in per_dataset.items():
        foreign = own.foreign_fraction or 0.0
        mean = format_percent(own.miou)
        out.print(f"{name}: mIoU {mean} %, foreign pixels {100 * foreign:.3f} %")
    return per_dataset


def _eval_record(
    trained: TrainedModel,
    split: str,
    prepared: PreparedModel,
    scores: SegmentationScores,
    class_names: Sequence[str],
    per_dataset: dict[str, SegmentationScores],
    ood: OODSeparation | None,
) -> dict[str, Any]:
    """The ``--json`` record of ``leanseg eval``."""
    from leanseg.metrics.semantic import percent, percent_scores

    cfg = trained.cfg
    record = {
        "checkpoint": str(trained.checkpoint),
        "iteration": trained.iteration,
        "split": split,
        "scales": cfg.eval.scales,
        "flip": cfg.eval.flip,
        "inference": {**prepared.options.to_dict(), "notes": list(prepared.notes)},
        **percent_scores(scores, class_names),
        **scores.to_dict(),
    }
    if per_dataset:
        record["per_dataset"] = {
            name: {"miou_percent": percent(own.miou), **own.to_dict()}
            for name, own in per_dataset.items()
        }
    if ood is not None:
        record["ood"] = ood.to_dict()
    return record


def _ood_separation(
    args: argparse.Namespace, model: nn.Module, cfg: Config, split: str, device: object
) -> OODSeparation:
    """``--ood-images`` / ``--ood-domain`` of ``leanseg eval`` (:mod:`leanseg.evaluation.ood`)."""
    from leanseg.evaluation.ood import in_domain_images, ood_separation, read_images
    from leanseg.inference.ood_maps import domain_classes
    from leanseg.inference.predictor import Predictor

    native = None if args.ood_domain is None else domain_classes(cfg.data, args.ood_domain)
    try:
        out_paths = common.collect_images([args.ood_images])
    except FileNotFoundError as err:
        raise ConfigError(f"--ood-images: {err}") from None
    predictor = Predictor(
        model,
        cfg,
        device=device,
        scales=tuple(cfg.eval.scales),
        flip=cfg.eval.flip,
        options=common.inference_options(args, device),
    )
    return ood_separation(
        predictor.predict_scores,
        in_domain_images(cfg, split, args.ood_domain),
        read_images(out_paths),
        native,
    )
