"""Stereo camera constants for depth-guided scale selection (thesis ch. 3): Cityscapes ``camera/``.

The scale-selection multiplexer (``leanseg.nn.scale_selection``, thesis eq. 3.1) needs each
image's stereo baseline ``b`` in metres beside its disparity in pixels. Cityscapes ships one
camera file per image, ``camera/<split>/<city>/<base>_camera.json``, next to
``disparity/<split>/<city>/<base>_disparity.png`` (which :class:`leanseg.data.datasets.Cityscapes`
already loads as ``sample["disparity"]``)::

    {"extrinsic": {"baseline": 0.209313, "pitch": ..., "roll": ..., "yaw": ..., "x": ..., ...},
     "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137}}

Only the baseline and the intrinsics are read. Depth is ``Z = fx * b / d``; eq. 3.1 needs only
``b``, since the focal length cancels. When an image is resized by a factor, its disparity values
(pixels) must be multiplied by the same factor: :func:`scale_disparity`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanseg.data.base import DatasetError


@dataclass(frozen=True)
class StereoCamera:
    """The constants of a rectified stereo pair that depth and scale selection need.

    Attributes:
        baseline: distance between the two cameras in metres.
        fx: horizontal focal length in pixels.
        fy: vertical focal length in pixels.
        u0: principal point, column, in pixels.
        v0: principal point, row, in pixels.
    """

    baseline: float
    fx: float
    fy: float
    u0: float
    v0: float

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """Depth ``Z = fx * b / d`` in metres; ``inf`` where the disparity is 0 (unknown)."""
        disparity = np.asarray(disparity, dtype=np.float64)
        with np.errstate(divide="ignore"):
            depth = self.fx * self.baseline / disparity
        return np.where(disparity > 0, depth, np.inf).astype(np.float32)


def read_cityscapes_camera(path: str | Path) -> StereoCamera:
    """Read a Cityscapes ``*_camera.json`` file.

    Raises:
        DatasetError: naming the file, when it is missing or not JSON, lacks a key, or holds a
            baseline or focal length that is not a positive finite number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"camera file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a JSON camera file ({err})") from None
    values = {}
    for section, key in (
        ("extrinsic", "baseline"),
        ("intrinsic", "fx"),
        ("intrinsic", "fy"),
        ("intrinsic", "u0"),
        ("intrinsic", "v0"),
    ):
        group = raw.get(section) if isinstance(raw, dict) else None
        value = group.get(key) if isinstance(group, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DatasetError(f"{path}: {section}.{key} missing or not a number")
        values[key] = float(value)
    for key in ("baseline", "fx", "fy"):
        if not math.isfinite(values[key]) or values[key] <= 0:
            raise DatasetError(f"{path}: {key} must be a positive number, got {values[key]}")
    return StereoCamera(**values)


def cityscapes_camera_path(root: str | Path, split: str, name: str) -> Path:
    """``camera/<split>/<city>/<name>_camera.json`` for an image named ``<city>_<seq>_<frame>``."""
    city = name.split("_", 1)[0]
    return Path(root) / "camera" / split / city / f"{name}_camera.json"


def scale_disparity(disparity: np.ndarray, factor: float) -> np.ndarray:
    """Disparity values of an image resized by ``factor`` (pixels scale with the image).

    Resizing the disparity map itself (nearest neighbour, so that unknown zeros are not blended
    into known values) is the caller's job; this only rescales the values.
    """
    return (np.asarray(disparity, dtype=np.float32) * np.float32(factor)).astype(np.float32)
