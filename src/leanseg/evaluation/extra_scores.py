"""Evaluators of thesis ch. 5's scores beside mIoU: iIoU and foreign-class incidence.

- :class:`InstanceIoUEvaluator`: instance-level iIoU when the ground truth has instance maps,
  and category iIoU when the classes are also Cityscapes' 19 (thesis 5.1.2;
  :class:`~leanseg.metrics.semantic.InstanceIoU`);
- :class:`ForeignClassEvaluator`: with a ``label_map`` (a union-space model scored in one
  dataset's own classes), the share of pixels predicted as classes foreign to the dataset
  (thesis Table 5.1), those predictions being scored as Void (thesis 5.3.1).

Category IoU, a function of the confusion matrix, is
:class:`~leanseg.evaluation.semantic.SemanticEvaluator`'s.
:func:`leanseg.evaluation.domains.evaluate_per_dataset` scores a multi-dataset model on every
dataset in its own label set with both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from leanseg.evaluation.base import Prediction
from leanseg.metrics.semantic import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_CLASS_CATEGORY,
    InstanceIoU,
    foreign_fraction,
    predicted_class_pixels,
)
from leanseg.structures.labels import IGNORE_INDEX


def sum_across_processes(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the processes of a distributed run (itself otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    else:
        moved = tensor.clone()
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(tensor.device)


class InstanceIoUEvaluator:
    """iIoU per class and, for Cityscapes' classes, per category (see the module doc).

    Fills nothing unless some batch has an ``instance`` map.

    Args:
        num_classes: classes scored (the dataset's, after the evaluation's ``label_map``).
        ignore_index: ground-truth label left out.
        categories: also score Cityscapes' categories (the scored classes are its 19).
    """

    def __init__(
        self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, categories: bool = False
    ):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.categories = categories
        self.instance_iou: InstanceIoU | None = None
        self.category_iiou: InstanceIoU | None = None

    def _start(self) -> None:
        self.instance_iou = InstanceIoU(self.num_classes, self.ignore_index)
        if self.categories:
            self.category_iiou = InstanceIoU(
                self.num_classes,
                self.ignore_index,
                class_to_group=CITYSCAPES_CLASS_CATEGORY,
                num_groups=len(CITYSCAPES_CATEGORIES),
            )

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        instance = batch.get("instance")
        if not isinstance(instance, Tensor):
            return
        if self.instance_iou is None:
            self._start()
        for metric in (self.instance_iou, self.category_iiou):
            if metric is not None:
                metric.update(prediction.labels, batch["label"], instance)

    def compute(self) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for name, metric in (("", self.instance_iou), ("category_", self.category_iiou)):
            if metric is None:
                continue
            for field in ("confusion", "instances", "instance_pixels", "hit_ratio"):
                setattr(metric, field, sum_across_processes(getattr(metric, field)))
            result = metric.compute()
            values: Any = result.iiou
            if name:
                values = dict(zip(CITYSCAPES_CATEGORIES, result.iiou, strict=True))
            entries[f"{name}iiou"], entries[f"{name}miiou"] = values, result.mean
        return entries


class ForeignClassEvaluator:
    """Share of all pixels (ignored ones included) predicted as classes foreign to the dataset.

    Args:
        label_map: ``(K,)`` model class -> scored class, ``IGNORE_INDEX`` (Void) for the classes
            foreign to the dataset.
    """

    def __init__(self, label_map: Tensor) -> None:
        self.label_map = label_map.to(torch.int64).cpu()
        self.predicted = torch.zeros(self.label_map.numel(), dtype=torch.int64)

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        self.predicted += predicted_class_pixels(prediction.classes, self.label_map.numel())

    def compute(self) -> dict[str, Any]:
        pixels = sum_across_processes(self.predicted)
        own = [k for k in range(self.label_map.numel()) if self.label_map[k] != IGNORE_INDEX]
        return {"foreign_fraction": foreign_fraction(pixels, own)}


__all__ = ["ForeignClassEvaluator", "InstanceIoUEvaluator", "sum_across_processes"]
