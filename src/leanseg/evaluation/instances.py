"""Instance AP during evaluation, for heads that predict instances (SSN §4, Tables 5-7).

:func:`leanseg.evaluation.evaluator.default_evaluators` asks :func:`predicts_instances` whether
the model predicts instances and, if so, adds an :class:`InstanceAPEvaluator`, whose result
fills :attr:`SegmentationScores.instance_ap <leanseg.metrics.semantic.SegmentationScores>`, so
``leanseg eval`` and the periodic validation of ``leanseg train`` report AP / AP50 alike.

Choices made here (the metric's own are in :mod:`leanseg.metrics.instance`):

- A model predicts instances when its head declares it (``predicts_instances``, as
  :class:`~leanseg.nn.heads.ssn_instance.SSNInstanceHead` does; :func:`predicts_instances` is
  the one place that decides it); every other model gets no AP (None).
- AP needs instance labels: batches without an ``instance`` entry add nothing, and a split
  without any (e.g. CamVid) gives None, never an AP of 0.
- Instances are predicted once per image, at the input scale and unflipped
  (:func:`~leanseg.nn.heads.ssn_instance.predict_instances`), whatever ``eval.scales`` and
  ``eval.flip`` say for the class scores: instance ids of several passes cannot be averaged
  the way class scores are, and SSN reports single-scale AP.
- Ground-truth instances below :data:`MIN_GT_AREA` pixels are ignored (neither found nor
  missed), as in ``benchmarks/papers/ssn_instance_iterations.py``; it equals the head's default
  ``min_area``, below which the head drops its own instances.
- Per-class entries are keyed by the class id as a string (``"8"``), as the JSON of a run's
  metrics log keys them; the command line prints class names.
- In a distributed run every rank's records are gathered and merged, so each rank returns the
  same AP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from leanseg.evaluation.base import Prediction
from leanseg.metrics.instance import InstanceAP
from leanseg.nn.heads.base import head_predicts_instances
from leanseg.nn.heads.ssn_instance import predict_instances
from leanseg.runtime import distributed

# Ground-truth instances smaller than this (pixels) are ignored, see the module docstring.
MIN_GT_AREA = 64


def predicts_instances(model: nn.Module) -> bool:
    """Whether ``model`` predicts instances: its head declares ``predicts_instances``
    (:func:`~leanseg.nn.heads.base.head_predicts_instances`)."""
    return head_predicts_instances(model)


class InstanceAPEvaluator:
    """Instance AP of one model over the batches of an evaluation (see the module doc).

    Args:
        model: a segmentor that :func:`predicts_instances` (its head has ``thing_classes``).
        min_gt_area: ground-truth instances smaller than this are ignored.
    """

    def __init__(self, model: nn.Module, *, min_gt_area: int = MIN_GT_AREA) -> None:
        head = getattr(model, "head", None)
        if not predicts_instances(model):
            raise TypeError(f"model head {type(head).__name__} does not predict instances")
        self.model = model
        self.metric = InstanceAP(head.thing_classes, min_gt_area=min_gt_area)
        self.num_images = 0

    @torch.no_grad()
    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        """Predict the instances of the batch's images and score them against ``batch``.

        A batch without ``instance`` labels is skipped.
        """
        if "instance" not in batch:
            return
        images = prediction.images
        instances = predict_instances(self.model, images)
        for index in range(images.shape[0]):
            self.metric.update(
                instances.instance[index],
                instances.scores[index],
                batch["instance"][index],
                batch["label"][index],
            )
        self.num_images += images.shape[0]

    def compute(self) -> dict[str, Any]:
        """``instance_ap``: AP / AP50 overall and per class (:meth:`InstanceAP.compute`), or None
        without instance labels; every rank's records are gathered and merged."""
        return {"instance_ap": self._gathered()}

    def _gathered(self) -> dict[str, Any] | None:
        metric, count = self.metric, self.num_images
        if distributed.is_distributed():
            shares: list[Any] = [None] * distributed.world_size()
            dist.all_gather_object(shares, (self.metric, self.num_images))
            metric = InstanceAP(self.metric.thing_classes, min_gt_area=self.metric.min_gt_area)
            for other, _ in shares:
                metric.merge(other)
            count = sum(images for _, images in shares)
        if count == 0:
            return None
        return metric.compute()


__all__ = ["MIN_GT_AREA", "InstanceAPEvaluator", "predicts_instances"]
