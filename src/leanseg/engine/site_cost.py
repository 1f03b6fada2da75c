"""Counting the data-dependent cost of heads that report it (QGN's active sites per level).

A head with a ``last_active_sites`` attribute (``{level: sites}`` of its latest forward pass, QGN
3.3) spends compute in proportion to those sites. :class:`ActiveSiteCounter` adds them up over
every forward pass it sees, so tiled, multi-scale or flipped inference reports the whole cost of an
image and evaluation reports the mean cost per image.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class ActiveSiteCounter:
    """Sums ``model.head.last_active_sites`` over the head's forward passes.

    ``enabled`` is false (and ``totals`` stays empty) for heads that do not report a cost. Use as
    a context manager to remove the hook afterwards, or keep it for the model's lifetime.
    """

    def __init__(self, model: nn.Module) -> None:
        head = getattr(model, "head", None)
        self.enabled = head is not None and hasattr(head, "last_active_sites")
        self.totals: dict[int, int] = {}
        self.passes = 0
        self._handle = head.register_forward_hook(self._add) if self.enabled else None

    def _add(self, head: nn.Module, inputs: Any, output: Any) -> None:
        for level, sites in head.last_active_sites.items():
            self.totals[level] = self.totals.get(level, 0) + int(sites)
        self.passes += 1

    def reset(self) -> None:
        self.totals = {}
        self.passes = 0

    def by_level_name(self, divisor: float = 1.0) -> dict[str, float]:
        """``{"Q5": ..., ..., "Q0": ...}`` coarse to fine, each total divided by ``divisor``."""
        return {f"Q{level}": self.totals[level] / divisor for level in sorted(self.totals)[::-1]}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> ActiveSiteCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
