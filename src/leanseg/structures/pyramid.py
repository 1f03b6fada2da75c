"""Semantic and unity pyramids of Specialize and Fuse (S&F section 3.1) as plain tensor code.

A pyramid has ``L`` levels in a tree-pyramid layout: level 1 is the coarsest, level ``L`` the
finest, and each coarser cell has exactly 4 children (``s_{l-1} = 2 s_l``, S&F 3.1 "Pyramid
structure"). Lists in this module are always ordered coarsest first, so ``levels[0]`` is level 1.

Ground truth (S&F 3.1 "Pyramidal ground truth"), computed with max-pooling only (no loops over
pixels): a cell is a *unit cell* when all its pixels share one class; the semantic target of a
unit cell is that class and of a mixed cell "don't care". The finest level is a downsampled label.

Choices the paper leaves to its supplementary material, and tested in ``tests/test_sandf.py``:

- **Ignore pixels inside a cell.** Ignore pixels are disregarded when deciding the class of a cell:
  ``Y^(l)`` is the shared class of the *labelled* pixels when they all agree (and at least one is
  labelled), otherwise "don't care". ``U^(l)`` is 1 only for cells whose pixels are all labelled
  and agree, 0 for cells holding two or more labelled classes (mixed whatever the ignored pixels
  are), and "don't care" (``ignore_index``) when the labelled pixels agree but some pixels are
  ignored, or all are ignored: the unlabelled pixels may or may not share the class.
- **Finest level.** For ``s_L > 1``, ``Y^(L)`` is the most frequent value among the ``s_L x s_L``
  pixels of the cell (``torch.mode``, which also breaks ties), counting the ignore label as
  a value of its own, so a cell that is mostly unlabelled is "don't care". For ``s_L = 1`` it is the
  label map itself.
- **True-positive relabelling** (S&F 3.1 "The training phase"): a cell is "done by coarser" when
  one of its ancestors is a ground-truth unit cell whose predicted unity is ``>= tau``; done cells
  become "don't care" in both ``Y^(l)`` and ``U^(l)``. The cell that is the true positive itself
  stays supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from leanseg.structures.labels import IGNORE_INDEX

Relabel = Literal["raw", "gt", "tp"]


@dataclass
class PyramidTargets:
    """Ground-truth pyramids, coarsest level first.

    Attributes:
        semantic: ``L`` maps ``(B, H/s_l, W/s_l)`` of class ids, ``ignore_index`` = "don't care".
        unity: ``L - 1`` maps ``(B, H/s_l, W/s_l)`` of 0 (mixed), 1 (unit) or ``ignore_index``;
            the finest level has no unity map (``U^(L) = 1``, S&F 3.2).
        strides: ``s_1 > ... > s_L`` in pixels.
    """

    semantic: list[Tensor]
    unity: list[Tensor]
    strides: list[int]


def level_strides(num_levels: int, finest_stride: int) -> list[int]:
    """``[s_1, ..., s_L]`` with ``s_L = finest_stride`` and ``s_{l-1} = 2 s_l`` (S&F 3.1)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    return [finest_stride * 2 ** (num_levels - 1 - i) for i in range(num_levels)]


def upsample_nearest(x: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upsampling of the last two dims that keeps the tree-pyramid (S&F eq. 2 Up).

    Works for any dtype (labels, booleans, scores) because it repeats entries.
    """
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def _max_pool(x: Tensor, kernel: int) -> Tensor:
    """Max over non-overlapping ``kernel x kernel`` cells of a ``(B, H, W)`` tensor."""
    if kernel == 1:
        return x
    return F.max_pool2d(x.unsqueeze(1), kernel).squeeze(1)


def _finest_label(label: Tensor, stride: int) -> Tensor:
    """Most frequent value of each ``stride x stride`` cell (ignore counts as a value)."""
    if stride == 1:
        return label
    cells = F.pixel_unshuffle(label.unsqueeze(1).float(), stride)  # (B, s*s, H/s, W/s)
    return cells.mode(dim=1).values.long()


def pyramid_targets(
    label: Tensor,
    *,
    num_levels: int,
    finest_stride: int,
    ignore_index: int = IGNORE_INDEX,
) -> PyramidTargets:
    """Unit-cell maps ``U^(l)`` and semantic targets ``Y^(l)`` of a label map (S&F 3.1).

    Purity is decided from the per-cell minimum and maximum of the labelled pixels, obtained by
    max-pooling the finest cells and then pooling 2x2 level by level (min = -max(-x)).

    Args:
        label: ``(B, H, W)`` class ids with ``ignore_index``; ``H`` and ``W`` must be divisible by
            the coarsest stride ``s_1 = finest_stride * 2**(num_levels - 1)``.
        num_levels: ``L``.
        finest_stride: ``s_L`` in pixels (the backbone output stride).
        ignore_index: "don't care" value in the input and the targets.

    Returns:
        :class:`PyramidTargets`, coarsest level first.
    """
    strides = level_strides(num_levels, finest_stride)
    height, width = label.shape[-2:]
    if height % strides[0] or width % strides[0]:
        raise ValueError(
            f"label size {height}x{width} is not divisible by the coarsest stride {strides[0]}"
        )
    label = label.long()
    valid = label != ignore_index
    big = torch.iinfo(torch.int32).max
    # Per-cell max and (negated) min of the labelled pixels, and whether any pixel is ignored;
    # ignored pixels take -1 so they never win a max.
    high = _max_pool(torch.where(valid, label, -1).float(), finest_stride)
    neg_low = _max_pool(torch.where(valid, -label, -big).float(), finest_stride)
    has_ignore = _max_pool((~valid).float(), finest_stride)
    semantic = [_finest_label(label, finest_stride)]
    unity: list[Tensor] = []
    for _ in range(num_levels - 1):
        high, neg_low, has_ignore = (_max_pool(t, 2) for t in (high, neg_low, has_ignore))
        any_valid = high >= 0
        pure = any_valid & (high == -neg_low)
        semantic.append(torch.where(pure, high.long(), ignore_index))
        u = torch.full_like(high, ignore_index, dtype=torch.long)
        u = torch.where(any_valid & ~pure, 0, u)
        u = torch.where(pure & (has_ignore == 0), 1, u)
        unity.append(u)
    return PyramidTargets(semantic[::-1], unity[::-1], strides)


def relabel(
    targets: PyramidTargets,
    unity_probs: Sequence[Tensor] | None,
    *,
    mode: Relabel,
    tau: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> PyramidTargets:
    """The training-time relabelling of S&F 3.1, one of Table 2a's settings D, E, F.

    ``raw`` (D) returns the targets unchanged. ``gt`` (E) marks every descendant of a ground-truth
    unit cell "don't care". ``tp`` (F, the paper's) marks descendants of true positives only: cells
    that are unit cells in the ground truth *and* whose predicted unity probability is ``>= tau``.

    Args:
        targets: from :func:`pyramid_targets`.
        unity_probs: ``L - 1`` predicted unity probabilities ``(B, h_l, w_l)``, coarsest first; only
            read by ``tp`` (detach them: the relabelling is not differentiated).
        mode: ``raw``, ``gt`` or ``tp``.
        tau: the unity threshold (S&F eq. 2).
        ignore_index: "don't care" value.

    Returns:
        New :class:`PyramidTargets` with "done by coarser" cells set to ``ignore_index``.
    """
    if mode == "raw":
        return targets
    if mode not in ("gt", "tp"):
        raise ValueError(f"relabel mode must be raw, gt or tp, got {mode!r}")
    if mode == "tp" and unity_probs is None:
        raise ValueError("true-positive relabelling needs the predicted unity pyramid")
    semantic = [targets.semantic[0]]
    unity = [targets.unity[0]] if targets.unity else []
    done = torch.zeros_like(targets.semantic[0], dtype=torch.bool)
    num_levels = len(targets.semantic)
    for level in range(num_levels - 1):
        positive = targets.unity[level] == 1
        if mode == "tp":
            positive = positive & (unity_probs[level] >= tau)  # type: ignore[index]
        done = upsample_nearest(done | positive, 2)  # the children of done or positive cells
        semantic.append(targets.semantic[level + 1].masked_fill(done, ignore_index))
        if level + 1 < num_levels - 1:
            unity.append(targets.unity[level + 1].masked_fill(done, ignore_index))
    return PyramidTargets(semantic, unity, targets.strides)


def fuse(
    semantic: Sequence[Tensor], unity_probs: Sequence[Tensor], tau: float = 0.5
) -> tuple[Tensor, Tensor]:
    """The fuser of S&F eq. 2: each cell takes the semantic prediction of its coarsest unit cell.

    Args:
        semantic: ``L`` tensors ``(B, K, h_l, w_l)`` (scores, or labels with ``K = 1``), coarsest
            first, each level twice the resolution of the previous one.
        unity_probs: ``L - 1`` unity probabilities ``(B, h_l, w_l)``; the finest level is taken as
            a unit cell everywhere (``U^(L) = 1``, S&F 3.2).
        tau: threshold; a cell is a predicted unit cell when its probability is ``>= tau``.

    Returns:
        ``(fused, level)``: ``fused`` ``(B, K, h_L, w_L)`` and ``level`` ``(B, h_L, w_L)``, the
        0-based index (0 = coarsest) of the one level that served each finest cell.
    """
    num_levels = len(semantic)
    if len(unity_probs) != num_levels - 1:
        raise ValueError(f"{num_levels} semantic levels need {num_levels - 1} unity maps")
    finest = semantic[-1]
    unit = [
        upsample_nearest(u >= tau, 2 ** (num_levels - 1 - i)) for i, u in enumerate(unity_probs)
    ]
    unit.append(torch.ones_like(finest[:, 0], dtype=torch.bool))
    # argmax returns the first maximum: the coarsest predicted unit cell (the product in eq. 2).
    level = torch.stack(unit).to(torch.uint8).argmax(dim=0)  # (B, h_L, w_L)
    fused = torch.zeros_like(finest)
    for i, scores in enumerate(semantic):
        chosen = (level == i).unsqueeze(1)
        fused = torch.where(chosen, upsample_nearest(scores, 2 ** (num_levels - 1 - i)), fused)
    return fused, level
