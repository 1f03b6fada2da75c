"""Per-dataset evaluation of a multi-dataset model in each dataset's own label set (thesis 5.3).

Each dataset of ``data.datasets`` is one :func:`~leanseg.evaluation.evaluator.evaluate` with the
:func:`~leanseg.evaluation.evaluator.default_evaluators` of its classes and the ``label_map``
from the union label space to them, which adds foreign-class incidence
(:class:`~leanseg.evaluation.extra_scores.ForeignClassEvaluator`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from leanseg.config import DataConfig, EvalConfig
from leanseg.data import build_dataset, entry_config, entry_split, union_label_space
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.metrics.semantic import SegmentationScores


def evaluate_per_dataset(
    model: nn.Module,
    data_cfg: DataConfig,
    split: str,
    *,
    eval_cfg: EvalConfig,
    device: torch.device,
    num_workers: int = 0,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> dict[str, SegmentationScores]:
    """Scores of a union-space model on each dataset of ``data.datasets``, in its own classes.

    Every dataset is read with its own labels (no remapping); union predictions become its
    classes through ``to_dataset``, and predictions of classes foreign to it are Void: they cost
    the pixel's class a false negative and are nobody's false positive, as the ROB benchmark
    scripts count them (thesis 5.3.1). Each result carries ``foreign_fraction``, the share of
    the dataset's pixels predicted as foreign classes (thesis Table 5.1).

    Args:
        split: ``data.val_split`` (or ``train_split``) names each entry's own split; any other
            name is used for every entry.
        on_batch: called as ``on_batch(entry name, done, total)``.

    Returns:
        Entry name -> its scores, in the order of ``data.datasets``.
    """
    space = union_label_space(data_cfg)
    if getattr(model, "num_classes", len(space.classes)) != len(space.classes):
        raise ValueError(
            f"the model predicts {model.num_classes} classes, the union label space of "
            f"data.datasets has {len(space.classes)}"
        )
    results = {}
    for entry in data_cfg.datasets or []:
        single = entry_config(data_cfg, entry)
        dataset = build_dataset(single, entry_split(data_cfg, entry, split), train=False)
        labels = space.datasets[entry.key]
        label_map = torch.from_numpy(labels.to_dataset[: len(space.classes)].astype("int64"))
        progress = None
        if on_batch is not None:
            progress = (lambda name: lambda done, total: on_batch(name, done, total))(entry.key)
        evaluators = default_evaluators(
            model,
            num_classes=len(labels.classes),
            boundary_width=eval_cfg.boundary_width,
            ignore_index=data_cfg.ignore_index,
            class_names=labels.classes,
            label_map=label_map,
        )
        results[entry.key] = evaluate(
            model,
            dataset,
            evaluators,
            eval_cfg=eval_cfg,
            device=device,
            num_workers=num_workers,
            on_batch=progress,
            label_map=label_map,
        )
    return results


__all__ = ["evaluate_per_dataset"]
