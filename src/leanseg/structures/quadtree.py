"""Quadtree and T-pyramid label representations (QGN section 3.1, eq. 1-3, Table 5).

A label map ``(B, H, W)`` with class ids ``0..k-1`` and an ignore value (255) becomes a
*T-pyramid*: a list ``[T_0, T_1, ..., T_L]`` with ``T_0`` the label map itself and
``T_{l+1} = M(T_l)`` (QGN eq. 3), where the merge operator ``M`` (QGN eq. 2) maps every 2x2 patch to
its value when all four agree and to the *composite* class otherwise.

The composite class lives in one place: :data:`COMPOSITE` (the value ``-1`` in T-pyramid tensors)
and :func:`composite_channel` (the channel ``k`` of a ``k+1``-way prediction, i.e. after the ``k``
real classes). The paper numbers classes ``1..k`` and uses ``0`` for composite; leanseg keeps class
ids ``0..k-1`` everywhere, so the composite takes the otherwise unused value ``-1`` in labels
and the last channel in scores.

How the ignore label merges (the paper is silent); two modes:

- ``"keep"`` (exactly lossless): ignore is an ordinary value. Four ignore pixels merge to ignore,
  ignore next to a class makes the patch composite. ``decode(encode(label)) == label`` exactly.
  This is the mode of :func:`encode`, :func:`decode` and of the Table 5 statistics.
- ``"wildcard"`` (training targets): ignore pixels agree with anything. A patch merges to the one
  class its non-ignore pixels share (ignore if all are ignore), and to composite when two classes
  meet or a child is composite. Ignore pixels then never force propagation; the decoded map
  differs from the input only at ignore pixels.

Sizes that are not a multiple of ``2**num_levels-1`` are padded at the bottom and right with the
ignore value before merging (and cropped again by :func:`decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from leanseg.structures.labels import IGNORE_INDEX

COMPOSITE = -1
"""Value of the composite class in T-pyramid tensors (QGN eq. 2's ``0``)."""

IGNORE_MODES = ("keep", "wildcard")


def composite_channel(num_classes: int) -> int:
    """Channel of the composite class in a ``k+1``-way prediction (after the ``k`` classes)."""
    return num_classes


def merge(level: Tensor, ignore_index: int = IGNORE_INDEX, ignore: str = "keep") -> Tensor:
    """QGN eq. 2: merge every 2x2 patch of ``level`` ``(B, h, w)``, h and w even.

    Returns ``(B, h/2, w/2)`` with the common value, or :data:`COMPOSITE`. See the module
    docstring for the two ``ignore`` modes.
    """
    if ignore not in IGNORE_MODES:
        raise ValueError(f"ignore must be one of {IGNORE_MODES}, got {ignore!r}")
    b, h, w = level.shape
    patches = (
        level.reshape(b, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(b, h // 2, w // 2, 4)
    )
    if ignore == "keep":
        first = patches[..., 0]
        same = (patches == first.unsqueeze(-1)).all(dim=-1)
        return torch.where(same, first, torch.full_like(first, COMPOSITE))
    # wildcard: composite children stay composite; ignore pixels agree with every class.
    is_ignore = patches == ignore_index
    any_composite = (patches == COMPOSITE).any(dim=-1)
    big = torch.iinfo(patches.dtype).max
    low = torch.where(is_ignore, torch.full_like(patches, big), patches).amin(dim=-1)
    high = torch.where(is_ignore, torch.full_like(patches, -big), patches).amax(dim=-1)
    all_ignore = is_ignore.all(dim=-1)
    out = torch.where(low == high, low, torch.full_like(low, COMPOSITE))
    out = torch.where(all_ignore, torch.full_like(low, ignore_index), out)
    return torch.where(any_composite, torch.full_like(low, COMPOSITE), out)


def pad_to_multiple(label: Tensor, multiple: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pad ``(B, H, W)`` at the bottom and right with ``ignore_index`` to a ``multiple``."""
    pad_h = (-label.shape[-2]) % multiple
    pad_w = (-label.shape[-1]) % multiple
    if pad_h == 0 and pad_w == 0:
        return label
    return F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)


def t_pyramid(
    label: Tensor, num_levels: int = 6, ignore_index: int = IGNORE_INDEX, ignore: str = "keep"
) -> list[Tensor]:
    """QGN eq. 3: ``[T_0, ..., T_{num_levels-1}]`` of a label map ``(B, H, W)`` (or ``(H, W)``).

    ``T_0`` is the label padded with ``ignore_index`` to a multiple of ``2**(num_levels-1)``;
    ``T_l`` has shape ``(B, H/2**l, W/2**l)``. The dtype is int64 (so that :data:`COMPOSITE` fits).
    """
    if label.dim() == 2:
        label = label.unsqueeze(0)
    levels = [pad_to_multiple(label.long(), 2 ** (num_levels - 1), ignore_index)]
    for _ in range(num_levels - 1):
        levels.append(merge(levels[-1], ignore_index, ignore))
    return levels


@dataclass
class Quadtree:
    """Linear quadtree of a label batch (QGN eq. 1): the leaves of every level.

    Attributes:
        coords: per level ``l`` an int64 ``(n_l, 3)`` tensor of ``(batch, y, x)`` cell indices at
            that level's resolution; index 0 is the finest level (pixels).
        values: per level the leaves' values ``(n_l,)`` (class id or ignore; never composite).
        shape: ``(B, H, W)`` of the original label map.
        padded_shape: ``(B, H', W')`` after padding to a multiple of ``2**(L-1)``.
    """

    coords: list[Tensor]
    values: list[Tensor]
    shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]

    @property
    def num_levels(self) -> int:
        return len(self.values)

    def num_leaves(self) -> int:
        return sum(int(v.numel()) for v in self.values)


def leaf_masks(pyramid: list[Tensor]) -> list[Tensor]:
    """Per level a bool mask of the cells that are quadtree leaves.

    A cell is a leaf when it is not composite and it is the top level or its parent is composite
    (QGN 3.1: "cells whose parents are not composite can be removed").
    """
    masks = []
    top = len(pyramid) - 1
    for level, values in enumerate(pyramid):
        leaf = values != COMPOSITE
        if level < top:
            parent = pyramid[level + 1].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
            leaf &= parent == COMPOSITE
        masks.append(leaf)
    return masks


def encode(
    label: Tensor, num_levels: int = 6, ignore_index: int = IGNORE_INDEX, ignore: str = "keep"
) -> Quadtree:
    """Quadtree of a label map ``(B, H, W)`` or ``(H, W)``; ``ignore="keep"`` is lossless."""
    if label.dim() == 2:
        label = label.unsqueeze(0)
    pyramid = t_pyramid(label, num_levels, ignore_index, ignore)
    coords, values = [], []
    for level, mask in zip(pyramid, leaf_masks(pyramid), strict=True):
        coords.append(mask.nonzero())  # (n, 3): batch, y, x
        values.append(level[mask])
    return Quadtree(coords, values, tuple(label.shape), tuple(pyramid[0].shape))


def decode(tree: Quadtree) -> Tensor:
    """Dense label map ``(B, H, W)`` of a :class:`Quadtree` (inverse of :func:`encode`)."""
    b, h, w = tree.padded_shape
    top = tree.num_levels - 1
    dense = torch.zeros((b, h >> top, w >> top), dtype=torch.long, device=tree.values[0].device)
    for level in range(top, -1, -1):
        if level < top:
            dense = dense.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        c = tree.coords[level]
        dense[c[:, 0], c[:, 1], c[:, 2]] = tree.values[level]
    return dense[:, : tree.shape[1], : tree.shape[2]]


def leaf_level_map(pyramid: list[Tensor]) -> Tensor:
    """Per pixel ``(B, H', W')`` the level on which its quadtree leaf lies."""
    top = len(pyramid) - 1
    out = torch.full_like(pyramid[0], top)
    for level in range(top - 1, -1, -1):
        # A pixel's leaf lies at level <= l when its ancestor at level l+1 is composite.
        scale = 2 ** (level + 1)
        parent = (
            pyramid[level + 1].repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        )
        out = torch.where(parent == COMPOSITE, torch.full_like(out, level), out)
    return out


def level_pixel_counts(
    label: Tensor, num_levels: int = 6, ignore_index: int = IGNORE_INDEX, ignore: str = "keep"
) -> Tensor:
    """Number of original pixels whose leaf lies on each level (index = level), for Table 5.

    Padding pixels are not counted; ignore pixels are (they are part of the label map).
    """
    if label.dim() == 2:
        label = label.unsqueeze(0)
    pyramid = t_pyramid(label, num_levels, ignore_index, ignore)
    levels = leaf_level_map(pyramid)[:, : label.shape[-2], : label.shape[-1]]
    return torch.bincount(levels.reshape(-1), minlength=num_levels)


@dataclass
class LevelStats:
    """QGN Table 5: percentage of pixels per leaf level and the compression ratio."""

    counts: list[int]  # pixels per level, index = level (0 = finest)

    @property
    def percentages(self) -> list[float]:
        total = max(sum(self.counts), 1)
        return [100.0 * c / total for c in self.counts]

    @property
    def ratio(self) -> float:
        """Compression ratio in % = sum_l frac_l / 4**l (QGN Table 5, last column)."""
        return sum(p / 4**level for level, p in enumerate(self.percentages))

    def add(self, counts: Tensor) -> None:
        for level, c in enumerate(counts.tolist()):
            self.counts[level] += int(c)
