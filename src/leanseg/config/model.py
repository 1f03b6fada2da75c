"""The ``model`` section: :class:`ModelConfig`, which components make the model.

The components' options are open-ended mappings; their keyword arguments are checked against the
builders' signatures by :func:`leanseg.models.load_run_config`, above this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leanseg.config.ranges import RangeTable, finite


@dataclass
class ModelConfig:
    """Which parts make the model: backbone -> context (optional) -> head."""

    # ``{name: resnet18, pretrained: path/to/weights.pth, ...}``; the other keys are the
    # keyword arguments of the backbone builder named by ``name``.
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18"})
    # ``null`` for no context module, else ``{name: ..., **kwargs}``.
    context: dict[str, Any] | None = None
    # ``{name: bilinear, **kwargs}``; the head owns the output representation and the loss.
    head: dict[str, Any] = field(default_factory=lambda: {"name": "bilinear"})
    # Weigh each pixel's loss by min(10^3, 1 / p(c)), p(c) its class's share of the batch's
    # labelled pixels (thesis 3.4): for heads whose loss is the dense cross-entropy.
    class_balancing: bool = False
    # Train each step on the hardest fraction (0, 1] of the labelled pixels, those with the
    # largest loss (online hard example mining): for heads whose loss is the dense cross-entropy.
    hard_pixel_fraction: float | None = None
    # Compute the dense cross-entropy at this many random pixels per image (drawn anew each
    # step) instead of at every pixel: the scores are interpolated there from the head's coarse
    # scores, which skips the full-resolution upsampling in training. For heads that predict at
    # a stride and upsample bilinearly (ladder, bilinear, NRD, ...); evaluation is unchanged.
    loss_points: int | None = None


# The values each key of the section may take (beside their types); :mod:`.validation` runs them.
MODEL_RANGES: RangeTable = {
    "model.hard_pixel_fraction": (
        lambda v: v is None or (finite(v) and 0 < v <= 1),
        "in (0, 1], e.g. 0.25, or null",
    ),
    "model.loss_points": (
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "a positive number of pixels per image, e.g. 16384, or null",
    ),
}
