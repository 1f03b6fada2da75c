"""Shape masks in object coordinates (``u`` across, ``v`` up, in metres), and their composition.

``u`` and ``v`` are the broadcastable pixel coordinates that :meth:`Canvas.billboard
<leanseg.data.synthetic.canvas.Canvas.billboard>` returns, so a shape is drawn at the size its
depth gives it.
"""

from __future__ import annotations

import numpy as np


def rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def trapezoid(u, v, v0: float, v1: float, half0: float, half1: float, cu: float = 0.0):
    """Rows ``v0..v1`` whose half-width goes linearly from ``half0`` to ``half1``."""
    half = half0 + (half1 - half0) * (v - v0) / (v1 - v0)
    return (v >= v0) & (v <= v1) & (np.abs(u - cu) <= half)


def segment(u, v, p: tuple[float, float], q: tuple[float, float], width: float) -> np.ndarray:
    """Points within ``width / 2`` of the segment ``p``-``q``."""
    du, dv = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return (u - p[0] - t * du) ** 2 + (v - p[1] - t * dv) ** 2 <= (width / 2) ** 2


def compose(shape: tuple[int, ...], parts: list[tuple[np.ndarray, np.ndarray]]):
    """Union mask and colours of parts painted in order (later parts cover earlier ones)."""
    colour = np.zeros((*shape, 3), np.float32)
    mask = np.zeros(shape, bool)
    for part, rgb in parts:
        part = np.broadcast_to(part, shape)
        colour[part] = rgb
        mask |= part
    return mask, colour
