"""The ``eval`` section: :class:`EvalConfig`, how a model is measured, with its optional
:class:`CRFConfig` post-processing and :data:`EVAL_RANGES`, the values each key may take."""

from __future__ import annotations

from dataclasses import dataclass, field

from leanseg.config import limits
from leanseg.config.ranges import BATCH_SIZE, RangeTable, non_negative, optional, positive


@dataclass
class CRFConfig:
    """Fully connected CRF post-processing (thesis §3.4; :mod:`leanseg.inference.dense_crf`).

    The thesis fixes w2 = 3, θγ = 3, 10 mean-field iterations, and grid-searches
    w1 in {5, 10}, θα in {50..90}, θβ in {3..9}; the defaults are the middle of that grid.
    """

    iterations: int = 10
    # w1, θα (pixels), θβ (0-255 colour units): the appearance (bilateral) kernel.
    appearance_weight: float = 5.0
    appearance_xy: float = 70.0
    appearance_rgb: float = 6.0
    # w2, θγ (pixels): the smoothness kernel.
    smoothness_weight: float = 3.0
    smoothness_xy: float = 3.0


@dataclass
class EvalConfig:
    """How validation and ``leanseg eval`` measure a model."""

    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    # Half-width in pixels of the band around label boundaries for boundary mIoU (trimap).
    boundary_width: int = 8
    batch_size: int = 1
    # Evaluate on at most this many validation images; ``null`` means all of them.
    max_images: int | None = None
    # Refine the probabilities with the fully connected CRF (``{}`` for its defaults); ``null``
    # for none. CPU seconds per megapixel: docs/notes/issue-14.md.
    crf: CRFConfig | None = None


EVAL_RANGES: RangeTable = {
    "eval.scales": (
        lambda v: bool(v) and all(map(positive, v)) and limits.scales_problem(v) is None,
        f"a non-empty list of at most {limits.MAX_SCALE_COUNT} positive numbers, each at most "
        f"{limits.MAX_SCALE:g}",
    ),
    "eval.boundary_width": (
        lambda v: 0 <= v <= limits.MAX_BOUNDARY_WIDTH,
        f"in 0..{limits.MAX_BOUNDARY_WIDTH} (pixels)",
    ),
    "eval.batch_size": BATCH_SIZE,
    "eval.max_images": (optional(positive), "a positive integer or null"),
    "eval.crf.iterations": (
        lambda v: 0 <= v <= limits.MAX_CRF_ITERATIONS,
        f"in 0..{limits.MAX_CRF_ITERATIONS}",
    ),
    "eval.crf.appearance_weight": (non_negative, "0 or more"),
    "eval.crf.appearance_xy": (positive, "a positive number"),
    "eval.crf.appearance_rgb": (positive, "a positive number"),
    "eval.crf.smoothness_weight": (non_negative, "0 or more"),
    "eval.crf.smoothness_xy": (positive, "a positive number"),
}
