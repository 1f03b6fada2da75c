"""Scores of thesis ch. 5 beside mIoU: category IoU, iIoU and foreign-class incidence.

:func:`~leanseg.evaluation.evaluator.evaluate` fills, through :class:`ExtraScores`:

- Cityscapes category IoU when the scored classes are Cityscapes' 19 (thesis Table 5.3);
- instance-level iIoU when the ground truth has instance maps, and category iIoU when both
  apply (thesis 5.1.2; :class:`~leanseg.metrics.semantic.InstanceIoU`);
- with a ``label_map`` (a union-space model scored in one dataset's own classes): the share of
  pixels predicted as classes foreign to the dataset (thesis Table 5.1), those predictions being
  scored as Void (thesis 5.3.1).

:func:`leanseg.evaluation.domains.evaluate_per_dataset` scores a multi-dataset model on every
dataset in its own label set through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from leanseg.data.classes import CITYSCAPES_CLASSES
from leanseg.metrics.semantic import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_CLASS_CATEGORY,
    InstanceIoU,
    SegmentationScores,
    category_iou,
    foreign_fraction,
    predicted_class_pixels,
)


def _sum_across_processes(tensor: Tensor) -> Tensor:
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


class ExtraScores:
    """Accumulates the ch. 5 scores that apply to a model's evaluation (see the module doc).

    Args:
        num_classes: classes scored (the dataset's, after ``label_map``).
        class_names: their names; Cityscapes' 19 turn category IoU on.
        label_map: ``(K,)`` model class -> scored class, 255 (Void) for foreign classes; None
            when the model predicts the scored classes themselves.
        ignore_index: ground-truth label left out.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        label_map: Tensor | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cityscapes = class_names is not None and tuple(class_names) == CITYSCAPES_CLASSES
        self.label_map = None if label_map is None else label_map.to(torch.int64).cpu()
        self.instance_iou: InstanceIoU | None = None
        self.category_iiou: InstanceIoU | None = None
        self.predicted: Tensor | None = None
        if self.label_map is not None:
            self.predicted = torch.zeros(self.label_map.numel(), dtype=torch.int64)

    def scored(self, pred: Tensor) -> Tensor:
        """Model predictions as scored labels; counts foreign predictions on the way."""
        pred = pred.to(torch.int64).cpu()
        if self.label_map is None or self.predicted is None:
            return pred
        self.predicted += predicted_class_pixels(pred, self.label_map.numel())
        return self.label_map[pred]

    def update(self, pred: Tensor, batch: dict[str, Any]) -> None:
        """Add a batch: ``pred`` the scored labels (after :meth:`scored`)."""
        instance = batch.get("instance")
        if not isinstance(instance, Tensor):
            return
        if self.instance_iou is None:
            self.instance_iou = InstanceIoU(self.num_classes, self.ignore_index)
            if self.cityscapes:
                self.category_iiou = InstanceIoU(
                    self.num_classes,
                    self.ignore_index,
                    class_to_group=CITYSCAPES_CLASS_CATEGORY,
                    num_groups=len(CITYSCAPES_CATEGORIES),
                )
        for metric in (self.instance_iou, self.category_iiou):
            if metric is not None:
                metric.update(pred, batch["label"], instance)

    def apply(
        self, scores: SegmentationScores, confusion: Tensor, void: Tensor | None = None
    ) -> SegmentationScores:
        """``scores`` with the fields that apply filled in; ``confusion`` and ``void`` are the
        summed counts of the :class:`~leanseg.metrics.semantic.SegmentationMetric` (other counts are
        summed over ranks here)."""
        extra: dict[str, Any] = {}
        if self.cityscapes:
            extra["category_iou"], extra["category_miou"] = category_iou(confusion, void=void)
        for name, metric in (("", self.instance_iou), ("category_", self.category_iiou)):
            if metric is None:
                continue
            for field in ("confusion", "instances", "instance_pixels", "hit_ratio"):
                setattr(metric, field, _sum_across_processes(getattr(metric, field)))
            result = metric.compute()
            values: Any = result.iiou
            if name:
                values = dict(zip(CITYSCAPES_CATEGORIES, result.iiou, strict=True))
            extra[f"{name}iiou"], extra[f"{name}miiou"] = values, result.mean
        if self.predicted is not None and self.label_map is not None:
            pixels = _sum_across_processes(self.predicted)
            own = [k for k in range(self.label_map.numel()) if self.label_map[k] != 255]
            extra["foreign_fraction"] = foreign_fraction(pixels, own)
        return dataclasses.replace(scores, **extra) if extra else scores


__all__ = ["ExtraScores"]
