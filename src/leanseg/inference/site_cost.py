"""Counting the data-dependent cost of heads that report it (QGN's active sites per level).

A head that declares :class:`~leanseg.nn.heads.base.CostReporting` reports the active sites per
level of its last forward pass (QGN 3.3). One image may take several passes (tiles, scales,
flips), so :class:`SiteCounter` wraps the model: its forward is the model's, and after each pass
it adds the head's report to ``totals``. Evaluation passes the counter to
:func:`~leanseg.inference.predictor.predict_scores` in place of the model and reports the mean cost
per image.
"""

from __future__ import annotations

from torch import Tensor, nn

from leanseg.nn.heads.base import CostReporting
from leanseg.nn.segmentor import Segmentor


class SiteCounter(nn.Module):
    """``model`` that also adds up its head's active sites over every forward pass.

    Build it with :meth:`wrap`, which gives ``None`` for a model whose head reports no cost.

    Args:
        model: a segmentor whose head is :class:`~leanseg.nn.heads.base.CostReporting`.

    Attributes:
        size_divisor: the model's, so tiled inference cuts the same tiles as for the model.
    """

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        head = model.head
        if not isinstance(head, CostReporting):
            raise TypeError(f"{type(head).__name__} does not report its cost (CostReporting)")
        self.model = model
        self.size_divisor = model.size_divisor
        self._levels = head.cost_levels()
        self._report = head.active_sites  # a bound method: not registered as a submodule
        self._totals: dict[str, int] = {}

    @classmethod
    def wrap(cls, model: nn.Module) -> SiteCounter | None:
        """A counter around ``model``, or ``None`` when its head does not report a cost."""
        if isinstance(model, Segmentor) and isinstance(model.head, CostReporting):
            return cls(model)
        return None

    def forward(self, images: Tensor) -> Tensor:
        scores = self.model(images)
        for level, sites in self._report().items():
            self._totals[level] = self._totals.get(level, 0) + int(sites)
        return scores

    @property
    def totals(self) -> dict[str, int]:
        """Active sites per level summed over the passes since the last :meth:`reset`, in the
        head's order of :meth:`~leanseg.nn.heads.base.CostReporting.cost_levels`."""
        return {level: self._totals[level] for level in self._levels if level in self._totals}

    def reset(self) -> None:
        self._totals = {}
