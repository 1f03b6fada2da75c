"""What every evaluator sees and gives: :class:`Prediction` and the :class:`Evaluator` protocol.

:func:`~leanseg.evaluation.evaluator.evaluate` runs the model once per batch and hands the batch
and its :class:`Prediction` to each evaluator's :meth:`Evaluator.update`; after the last batch it
asks each for its :meth:`Evaluator.compute` and fills
:class:`~leanseg.metrics.semantic.SegmentationScores` with what they return. One evaluator per
kind of score: the confusion-matrix scores (:mod:`~leanseg.evaluation.semantic`), the boundary
band, iIoU and foreign-class incidence (:mod:`~leanseg.evaluation.extra_scores`), instance AP
(:mod:`~leanseg.evaluation.instances`) and the active sites of heads that report them
(:mod:`~leanseg.evaluation.cost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor


@dataclass(frozen=True)
class Prediction:
    """The model's prediction of one batch, computed once and shared by every evaluator.

    Attributes:
        images: ``(B, 3, H, W)`` the batch's images on the evaluation device.
        probabilities: ``(B, K, H, W)`` class probabilities of the model's ``K`` classes,
            averaged over the scales and flips of ``eval`` (and refined by its CRF).
        classes: ``(B, H, W)`` int64 on the CPU: the most probable of the model's classes.
        labels: ``(B, H, W)`` int64 on the CPU: ``classes`` as scored labels, i.e. through the
            evaluation's ``label_map`` (255 = Void for classes foreign to the dataset), or
            ``classes`` itself without one.
        active_sites: for a head that reports its cost, its active sites per level summed over
            every pass of this batch (tiles, scales, flips); None for other heads.
    """

    images: Tensor
    probabilities: Tensor
    classes: Tensor
    labels: Tensor
    active_sites: dict[str, int] | None = None


class Evaluator(Protocol):
    """Accumulates one kind of score over the batches of an evaluation.

    :meth:`update` is called on every batch of this process's share of the images;
    :meth:`compute` once at the end, on every process of a distributed run and in the same
    order (it may sum or gather across processes), so every process gets the same entries.
    """

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        """Add one batch: its sample entries (``label``, maybe ``instance``) and prediction."""
        ...

    def compute(self) -> dict[str, Any]:
        """Fields of :class:`~leanseg.metrics.semantic.SegmentationScores` this evaluator fills,
        reduced over the processes of a distributed run."""
        ...


__all__ = ["Evaluator", "Prediction"]
