"""Evaluators of the confusion-matrix scores: mIoU, accuracies, category IoU and boundary mIoU.

:class:`SemanticEvaluator` fills the fields every evaluation has (IoU per class, mIoU, pixel and
class accuracy, the confusion matrix) and, when the scored classes are Cityscapes' 19, category
IoU (thesis Table 5.3), which is a function of the same confusion matrix.
:class:`BoundaryEvaluator` scores the pixels near ground-truth boundaries (the trimap of
Specialize-and-Fuse, Table 2b); the conventions of both are those of
:mod:`leanseg.metrics.semantic`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from leanseg.data.classes import CITYSCAPES_CLASSES
from leanseg.evaluation.base import Prediction
from leanseg.metrics.semantic import SegmentationMetric, boundary_band, category_iou


def cityscapes_classes(class_names: Sequence[str] | None) -> bool:
    """Whether ``class_names`` are Cityscapes' 19 (which turns category scores on)."""
    return class_names is not None and tuple(class_names) == CITYSCAPES_CLASSES


class SemanticEvaluator:
    """IoU, mIoU, accuracies and the confusion matrix of the scored labels.

    Args:
        num_classes: classes scored (the dataset's, after the evaluation's ``label_map``).
        ignore_index: ground-truth label left out.
        void_index: predicted label meaning Void (255 with a ``label_map``: a false negative of
            the pixel's class, thesis 5.3.1); None when every prediction is a class.
        class_names: names of the scored classes; Cityscapes' 19 add category IoU.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        void_index: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.metric = SegmentationMetric(
            num_classes, ignore_index=ignore_index, boundary_width=None, void_index=void_index
        )
        self.cityscapes = cityscapes_classes(class_names)

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        self.metric.update(prediction.labels, batch["label"])

    def compute(self) -> dict[str, Any]:
        self.metric.reduce_across_processes()
        scores = self.metric.compute()
        entries = {
            "miou": scores.miou,
            "iou": scores.iou,
            "pixel_accuracy": scores.pixel_accuracy,
            "mean_class_accuracy": scores.mean_class_accuracy,
            "class_accuracy": scores.class_accuracy,
            "confusion": scores.confusion,
            "num_pixels": scores.num_pixels,
        }
        if self.cityscapes:
            categories, mean = category_iou(self.metric.confusion, void=self.metric.void)
            entries.update(category_iou=categories, category_miou=mean)
        return entries


class BoundaryEvaluator:
    """IoU inside the band of ``width`` pixels around ground-truth boundaries (trimap).

    The band is :func:`~leanseg.metrics.semantic.boundary_band` of the ground truth; pixels
    outside it count as ignored, so the scores are the confusion-matrix scores of the band.

    Args:
        width: half-width of the band in pixels (``eval.boundary_width``; 8 follows
            Specialize-and-Fuse, Table 2b).
        num_classes, ignore_index, void_index: as for :class:`SemanticEvaluator`.
    """

    def __init__(
        self,
        width: int,
        num_classes: int,
        *,
        ignore_index: int = 255,
        void_index: int | None = None,
    ) -> None:
        if width < 0:
            raise ValueError(f"boundary_width must be >= 0 or None, got {width}")
        self.width = width
        self.ignore_index = ignore_index
        self.metric = SegmentationMetric(
            num_classes, ignore_index=ignore_index, boundary_width=None, void_index=void_index
        )

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        target = batch["label"].to(torch.int64)
        band = boundary_band(target, self.width, self.ignore_index)
        self.metric.update(prediction.labels, torch.where(band, target, self.ignore_index))

    def compute(self) -> dict[str, Any]:
        self.metric.reduce_across_processes()
        scores = self.metric.compute()
        return {
            "boundary_miou": scores.miou,
            "boundary_iou": scores.iou,
            "boundary_num_pixels": scores.num_pixels,
        }


__all__ = ["BoundaryEvaluator", "SemanticEvaluator", "cityscapes_classes"]
