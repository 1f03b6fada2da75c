"""Exponential moving average of a model's weights (Polyak averaging), ``train.ema_decay``.

After every optimisation step the average moves towards the current weights,
``average <- d * average + (1 - d) * weights``, with ``d = min(decay, (1 + n) / (10 + n))`` at
the ``n``-th update: early on, while the weights are far from where they end, the average
forgets its start quickly, and from about ``10 / (1 - decay)`` updates on it follows ``decay``.
Every floating-point entry of the state dict is averaged, BatchNorm's running statistics too;
integer buffers (``num_batches_tracked``) stay as the model has them.

The trainer evaluates and saves the average; :meth:`WeightAverage.applied` swaps it into the
model for that time and back out after, so training always continues from its own weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s floating-point state, started at its current values.

    Args:
        model: the model being trained; the average holds a copy of its state.
        decay: weight of the old average per update, in ``(0, 1)`` (0.999 averages over about
            the last thousand steps).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay {decay} is not in (0, 1)")
        self.decay = decay
        self.updates = 0
        self.average = {
            name: value.detach().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    def current_decay(self) -> float:
        """The decay of the next update: ``decay``, less during the first updates."""
        step = self.updates + 1
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state by one step."""
        weight = 1.0 - self.current_decay()
        state = model.state_dict()
        for name, average in self.average.items():
            average.lerp_(state[name].detach(), weight)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside, ``model`` holds the average (what it computes and what its ``state_dict``
        gives); changes made to its state inside (recomputed BatchNorm statistics) stay in the
        average. On leaving, the model gets its own weights back."""
        state = model.state_dict()
        own = {name: state[name].detach().clone() for name in self.average}
        with torch.no_grad():
            for name, average in self.average.items():
                state[name].copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, average in self.average.items():
                    average.copy_(state[name])
                    state[name].copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        """The update count; the averaged weights travel as the checkpoint's ``model``."""
        return {"updates": self.updates}

    def load(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Continue from ``weights`` (a full state dict of the model) after ``updates`` updates."""
        with torch.no_grad():
            for name, average in self.average.items():
                average.copy_(weights[name])
        self.updates = updates
