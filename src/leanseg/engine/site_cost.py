"""Counting the data-dependent cost of heads that report it (QGN's active sites per level).

A head with a ``last_active_sites`` attribute (``{level: sites}`` of its latest forward pass, QGN
3.3) spends compute in proportion to those sites. :class:`ActiveSiteCounter` adds them up over
every forward pass it sees, so tiled, multi-scale or flipped inference reports the whole cost of an
image and evaluation reports the mean cost per image.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def by_level_name(sites: dict[int, int], divisor: int | None = None) -> dict[str, float]:
    """``{"Q5": ..., "Q0": ...}`` coarse to fine: counts, or means over ``divisor`` images."""
    ordered = sorted(sites, reverse=True)
    if divisor is None:
        return {f"Q{level}": sites[level] for level in ordered}
    return {f"Q{level}": sites[level] / divisor for level in ordered}


class ActiveSiteCounter:
    """Sums ``model.head.last_active_sites`` over the head's forward passes.

    ``enabled`` is false (and ``totals`` stays empty) for heads that do not report a cost. Use as
    a context manager to remove the hook afterwards, or keep it for the model's lifetime.
    """

    def __init__(self, model: nn.Module) -> None:
        head = getattr(model, "head", None)
        self.enabled = head is not None and hasattr(head, "last_active_sites")
        self.totals: dict[int, int] = {}
        self._handle = head.register_forward_hook(self._add) if self.enabled else None

    def _add(self, head: nn.Module, inputs: Any, output: Any) -> None:
        for level, sites in head.last_active_sites.items():
            self.totals[level] = self.totals.get(level, 0) + int(sites)

    def reset(self) -> None:
        self.totals = {}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> ActiveSiteCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
