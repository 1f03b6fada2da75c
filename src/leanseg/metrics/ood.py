"""Foreign classes as an out-of-distribution flag (thesis 5.3.3), its baseline and AUROC.

A model trained on several domains in one union label space (thesis ch. 5) predicts classes of
every domain. When it is used in one domain, a pixel whose most likely class is *foreign* to
that domain (an indoor class on a road) is a pixel the model does not recognise as belonging
there: the thesis found most such pixels on WildDash's negative, out-of-distribution images
(5.3.3, Table 5.2). :func:`foreign_map` gives that flag and the probability mass of the foreign
classes as a graded score; :func:`max_softmax_score` is the usual baseline, one minus the
largest class probability (Hendrycks & Gimpel, ICLR 2017); :func:`auroc` says how well a score
separates in- from out-of-domain images or pixels.

Scores grow with how out-of-distribution a pixel looks. Image scores (:func:`image_score`) are
the mean of the pixel scores; the thesis does not say how to pool them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class ForeignMap(NamedTuple):
    """Per-pixel foreign-class output, shaped like the probabilities without the class axis.

    Attributes:
        foreign: ``bool``, the most likely class is foreign to the domain.
        mass: ``float32`` in ``[0, 1]``, summed probability of the foreign classes.
    """

    foreign: Tensor
    mass: Tensor


def _native_mask(num_classes: int, native: Sequence[int], device: torch.device) -> Tensor:
    native = [int(c) for c in native]
    if not native:
        raise ValueError("give at least one class native to the domain")
    if min(native) < 0 or max(native) >= num_classes:
        raise ValueError(f"native classes {native} are outside 0..{num_classes - 1}")
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[native] = True
    return mask


def foreign_map(probabilities: Tensor, native: Sequence[int]) -> ForeignMap:
    """Whether each pixel's argmax is foreign to a domain, and the foreign probability mass.

    Args:
        probabilities: union-space class probabilities ``(C, H, W)`` or ``(B, C, H, W)``
            (a softmax output, e.g. :meth:`leanseg.inference.predictor.Predictor.predict_scores`).
        native: union classes that occur in the domain (``DatasetLabels.own_classes``); every
            other class is foreign.

    Returns:
        :class:`ForeignMap` of shape ``(H, W)`` or ``(B, H, W)``.
    """
    axis = probabilities.dim() - 3  # the class axis of (C, H, W) or (B, C, H, W)
    if axis not in (0, 1):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W), got {tuple(probabilities.shape)}")
    num_classes = probabilities.shape[axis]
    native_mask = _native_mask(num_classes, native, probabilities.device)
    shape = [1] * probabilities.dim()
    shape[axis] = num_classes
    foreign_classes = (~native_mask).view(shape)
    mass = (probabilities.float() * foreign_classes).sum(dim=axis).clamp_(0.0, 1.0)
    foreign = ~native_mask[probabilities.argmax(dim=axis)]
    return ForeignMap(foreign, mass)


def max_softmax_score(probabilities: Tensor) -> Tensor:
    """The max-softmax baseline as an out-of-distribution score: ``1 - max_c p_c`` per pixel.

    Args:
        probabilities: ``(C, H, W)`` or ``(B, C, H, W)``.
    """
    axis = probabilities.dim() - 3
    return 1.0 - probabilities.float().amax(dim=axis)


def image_score(pixel_scores: Tensor) -> float:
    """One score per image: the mean of its pixel scores (a foreign flag gives its fraction)."""
    return float(pixel_scores.float().mean())


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="stable")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each tie group's first member
    group_rank = first + (counts + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def auroc(in_scores: np.ndarray | Tensor, out_scores: np.ndarray | Tensor) -> float:
    """Area under the ROC curve of a score that should be higher out of distribution.

    The probability that a random out-of-distribution sample scores higher than a random
    in-distribution one, ties counting one half: the Mann-Whitney U statistic over
    ``n_in * n_out``, computed from average ranks (``O(n log n)``, no loop over thresholds).
    0.5 for identical distributions, 1 for perfect separation, 0 for reversed.

    Args:
        in_scores: scores of in-distribution images or pixels (any shape, flattened).
        out_scores: scores of out-of-distribution ones.

    Raises:
        ValueError: when either set is empty or holds NaN.
    """
    a = _as_array(in_scores)
    b = _as_array(out_scores)
    if a.size == 0 or b.size == 0:
        raise ValueError("AUROC needs at least one in- and one out-of-distribution score")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("AUROC scores must not be NaN")
    ranks = average_ranks(np.concatenate([a, b]))
    n_in, n_out = float(a.size), float(b.size)
    u = ranks[a.size :].sum() - n_out * (n_out + 1) / 2.0
    return float(u / (n_in * n_out))


def _as_array(scores: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().cpu().numpy()
    return np.asarray(scores, dtype=np.float64).ravel()


__all__ = [
    "ForeignMap",
    "auroc",
    "average_ranks",
    "foreign_map",
    "image_score",
    "max_softmax_score",
]
