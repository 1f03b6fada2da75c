"""Evaluator of the data-dependent cost of heads that report it (QGN 3.3: active sites).

:func:`~leanseg.evaluation.evaluator.evaluate` counts the active sites of every pass of a batch
(tiles, scales, flips; :class:`~leanseg.inference.site_cost.SiteCounter`) into its
:class:`~leanseg.evaluation.base.Prediction`; :class:`ActiveSitesEvaluator` reports their mean
per image, averaged over the processes of a distributed run, in ``active_sites``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from leanseg.evaluation.base import Prediction
from leanseg.nn.heads.base import CostReporting
from leanseg.nn.segmentor import Segmentor
from leanseg.runtime import distributed


def reports_cost(model: nn.Module) -> bool:
    """Whether ``model``'s head reports its cost (:class:`~leanseg.nn.heads.base.CostReporting`)."""
    return isinstance(model, Segmentor) and isinstance(model.head, CostReporting)


class ActiveSitesEvaluator:
    """Mean active sites per image and level of a head that reports its cost.

    Args:
        levels: the head's level names, coarse to fine
            (:meth:`~leanseg.nn.heads.base.CostReporting.cost_levels`); the result keeps this
            order and holds the levels some pass computed.
    """

    def __init__(self, levels: Sequence[str]) -> None:
        self.levels = tuple(levels)
        self.totals: dict[str, int] = {}
        self.num_images = 0
        self.device = torch.device("cpu")

    def update(self, batch: Mapping[str, Any], prediction: Prediction) -> None:
        self.num_images += prediction.images.shape[0]
        self.device = prediction.images.device
        for level, sites in (prediction.active_sites or {}).items():
            self.totals[level] = self.totals.get(level, 0) + sites

    def compute(self) -> dict[str, Any]:
        ordered = [level for level in self.levels if level in self.totals]
        per_image = {level: self.totals[level] / max(1, self.num_images) for level in ordered}
        reduced = distributed.mean_across_processes(per_image, self.device)
        return {"active_sites": {level: reduced[level] for level in per_image}}


__all__ = ["ActiveSitesEvaluator", "reports_cost"]
