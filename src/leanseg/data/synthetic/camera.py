"""The stereo camera of a synthetic scene, and where things on the ground plane appear.

Geometry (pinhole camera looking along the street, ground plane ``Y = 0``):

- focal length ``f = W * U(0.8, 1.0)`` pixels (a horizontal field of view of 53-64 degrees);
- stereo baseline ``B = 0.22`` m (a Cityscapes-like rig);
- camera height ``h = U(1.2, 1.7)`` m; horizon row ``y_h = H * U(0.4, 0.55)``; principal
  point (and vanishing point of the street) at column ``W * U(0.4, 0.6)``.

A ground point at depth ``Z`` projects to row ``y = y_h + f h / Z``, so ground pixels have
disparity ``f B / Z = B (y - y_h) / h``. Cars, pedestrians, cyclists, poles and trees are flat
fronto-parallel cut-outs at one depth ``Z``: constant disparity ``f B / Z``, bottom on the ground
row for ``Z`` and height ``f H_obj / Z`` pixels. Facades, fences and hedges along the street are
vertical planes ``X = const`` whose depth varies per column. Sky is infinitely far: disparity 0
(unknown). Use :func:`scene_rig` to get a scene's camera without rendering it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASELINE = 0.22  # metres


@dataclass(frozen=True)
class StereoRig:
    """The camera of one scene (see the module docstring for how each value is drawn).

    Attributes:
        focal: Focal length in pixels.
        baseline: Stereo baseline in metres.
        height: Camera height above the ground in metres.
        horizon: Image row of the horizon (fractional).
        cx: Image column of the principal point, where the street vanishes.
    """

    focal: float
    baseline: float
    height: float
    horizon: float
    cx: float

    def ground_row(self, depth: float) -> float:
        """Row where the ground at ``depth`` metres is seen."""
        return self.horizon + self.focal * self.height / depth

    def disparity(self, depth: float) -> float:
        """Disparity in pixels of a point at ``depth`` metres."""
        return self.focal * self.baseline / depth

    def ground_disparity(self, row: np.ndarray | float) -> np.ndarray | float:
        """Disparity of the ground plane seen at ``row`` (valid below the horizon)."""
        return self.baseline * (np.asarray(row) - self.horizon) / self.height


def draw_rig(rng: np.random.Generator, size: tuple[int, int]) -> StereoRig:
    """A scene's camera for an image of ``size`` ``(height, width)``: the first draws of ``rng``."""
    height, width = size
    return StereoRig(
        focal=width * rng.uniform(0.8, 1.0),
        baseline=BASELINE,
        height=rng.uniform(1.2, 1.7),
        horizon=height * rng.uniform(0.4, 0.55),
        cx=width * rng.uniform(0.4, 0.6),
    )


def scene_rig(seed: int, size: tuple[int, int] = (512, 1024)) -> StereoRig:
    """The camera :func:`~leanseg.data.synthetic.generate_scene` uses for ``seed``, ``size``."""
    return draw_rig(np.random.default_rng(seed), size)
