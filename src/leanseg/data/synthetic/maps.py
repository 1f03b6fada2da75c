"""Disparity and instance maps: from the canvas's buffers to a sample, and to 16-bit files."""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.camera import StereoRig


def disparity_map(rig: StereoRig, depth: np.ndarray) -> np.ndarray:
    """Disparity ``f B / Z`` in pixels (float32) of a depth map in metres; 0 where ``Z`` is inf."""
    with np.errstate(divide="ignore"):
        return (rig.focal * rig.baseline / depth).astype(np.float32)


def renumber_instances(instance: np.ndarray) -> np.ndarray:
    """Renumber visible instances ``class * 1000 + 1, 2, ...`` per class, in drawing order."""
    counts = np.bincount(instance.ravel())
    present = np.flatnonzero(counts[1:]) + 1
    if present.size == 0:
        return instance
    classes = present // 1000
    rank = np.arange(present.size) - np.searchsorted(classes, classes)
    table = np.zeros(counts.size, np.int32)
    table[present] = classes * 1000 + rank + 1
    return table[instance]


def encode_disparity(disparity: np.ndarray) -> np.ndarray:
    """Cityscapes 16-bit disparity: ``p = d * 256 + 1`` for ``d > 0``, ``0`` = unknown."""
    coded = np.where(disparity > 0, np.round(disparity * 256.0) + 1, 0)
    return np.clip(coded, 0, 65535).astype(np.uint16)


def decode_disparity(coded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_disparity` (to 1/256 pixel), ``float32``."""
    coded = coded.astype(np.float32)
    return np.where(coded > 0, (coded - 1) / 256.0, 0).astype(np.float32)
