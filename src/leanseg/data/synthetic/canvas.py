"""The canvas a scene is painted on: image, label, instance and depth buffers with a z-buffer.

:class:`Canvas` holds the buffers, the scene's random generator and camera, and the noise fields
textures are made of. It finds where a flat cut-out standing on the ground
(:meth:`~Canvas.billboard`) or a vertical plane along the street (:meth:`~Canvas.side_plane`)
falls in the image, writes a shape only where it is not behind what is already there
(:meth:`~Canvas.paint`, so occlusion follows depth exactly), and finishes the image with the
scene's haze, illumination gradient, colour cast and sensor noise (:meth:`~Canvas.finish`).
What is drawn, and where, is decided by the drawing and layout modules beside this one.
"""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.camera import StereoRig
from leanseg.data.synthetic.labels import PAVEMENT, ROAD, THING_CLASSES

# A region of the buffers: (rows, columns).
Slice = tuple[slice, slice]


def _value_noise(rng: np.random.Generator, size: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]: a grid of random values every ``cell`` pixels, bilinear."""
    height, width = size
    gh, gw = int(np.ceil(height / cell)) + 1, int(np.ceil(width / cell)) + 1
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    ys = np.arange(height, dtype=np.float32) / cell
    xs = np.arange(width, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top, bottom = grid[y0], grid[y0 + 1]  # (H, gw)
    upper = top[:, x0] + (top[:, x0 + 1] - top[:, x0]) * fx
    lower = bottom[:, x0] + (bottom[:, x0 + 1] - bottom[:, x0]) * fx
    return upper + (lower - upper) * fy


class Canvas:
    """Image, label, instance and depth buffers of one scene, and how to paint into them.

    Args:
        rng: The scene's generator; the canvas draws its noise fields from it at once, and the
            drawing functions draw from it through ``canvas.rng``.
        rig: The scene's camera.
        size: ``(height, width)`` in pixels.
    """

    def __init__(self, rng: np.random.Generator, rig: StereoRig, size: tuple[int, int]) -> None:
        self.rng, self.rig = rng, rig
        self.height, self.width = size
        self.image = np.empty((*size, 3), np.float32)
        self.label = np.zeros(size, np.uint8)
        self.instance = np.zeros(size, np.int32)
        self.depth = np.full(size, np.inf, np.float32)
        self.fine = rng.standard_normal(size, dtype=np.float32)
        self.mid = _value_noise(rng, size, 5.0)
        self.coarse = _value_noise(rng, size, max(size) / 5)
        self.counts = dict.fromkeys(THING_CLASSES, 0)

    def paint(self, sl: Slice, mask, depth, colour, label: int, instance: int = 0) -> None:
        """Write where ``mask`` is set and ``depth`` is not behind what is already there."""
        zbuf = self.depth[sl]
        depth = np.broadcast_to(np.asarray(depth, np.float32), zbuf.shape)
        write = np.broadcast_to(mask, zbuf.shape) & (depth <= zbuf)
        zbuf[write] = depth[write]
        self.label[sl][write] = label
        self.instance[sl][write] = instance
        colour = np.asarray(colour, np.float32)
        self.image[sl][write] = colour[write] if colour.ndim == 3 else colour

    def billboard(self, x: float, z: float, u0: float, u1: float, top: float):
        """Pixel grid of a fronto-parallel cut-out standing on the ground at (x, z).

        Returns ``(slice, u, v)`` with ``u`` (1, w) metres right of ``x`` and ``v`` (h, 1) metres
        above the ground, or None when it is off the image.
        """
        rig = self.rig
        scale = rig.focal / z
        xc, yb = rig.cx + x * scale, rig.ground_row(z)
        x0, x1 = max(int(np.floor(xc + u0 * scale)), 0), int(np.ceil(xc + u1 * scale)) + 1
        y0, y1 = max(int(np.floor(yb - top * scale)), 0), int(np.floor(yb)) + 1
        x1, y1 = min(x1, self.width), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        u = (np.arange(x0, x1, dtype=np.float32)[None, :] - xc) / scale
        v = (yb - np.arange(y0, y1, dtype=np.float32)[:, None]) / scale
        return (slice(y0, y1), slice(x0, x1)), u, v

    def side_plane(self, x: float, z0: float, z1: float, top: float):
        """Pixel grid of the vertical plane ``X = x`` between depths ``z0..z1`` up to ``top``.

        Returns ``(slice, s, v, mask, depth)``: ``s`` (1, w) is the depth of each column (the
        coordinate along the street), ``v`` (h, w) the height above the ground; or None.
        """
        rig = self.rig
        z0 = max(z0, 0.3)
        if z1 <= z0:
            return None
        ends = (rig.cx + rig.focal * x / z0, rig.cx + rig.focal * x / z1)
        x0 = max(int(np.floor(min(ends))), 0)
        x1 = min(int(np.ceil(max(ends))) + 1, self.width)
        if x0 >= x1:
            return None
        offset = np.arange(x0, x1, dtype=np.float32) - rig.cx
        with np.errstate(divide="ignore"):
            s = rig.focal * x / offset
        cols = (s >= z0) & (s <= z1)
        if not cols.any():
            return None
        s = np.where(cols, s, z1)[None, :]
        near = float(s[0, cols].min())
        tops = rig.horizon + rig.focal * (rig.height - top) / s[0, cols]
        y0 = max(int(np.floor(tops.min())), 0)
        y1 = min(int(np.floor(rig.ground_row(near))) + 1, self.height)
        if y0 >= y1:
            return None
        rows = np.arange(y0, y1, dtype=np.float32)[:, None]
        v = rig.height - (rows - rig.horizon) * s / rig.focal
        mask = cols[None, :] & (v >= 0) & (v <= top)
        return (slice(y0, y1), slice(x0, x1)), s, v, mask, s

    def new_instance(self, label: int) -> int:
        """A new instance id ``label * 1000 + n`` (renumbered once the scene is drawn)."""
        self.counts[label] += 1
        return label * 1000 + self.counts[label]

    def texture(self, sl: Slice, fine: float, mid: float = 0.0) -> np.ndarray:
        """Brightness factor (h, w, 1): ``1 + fine * fine noise + mid * mid noise``."""
        return (1.0 + fine * self.fine[sl] + mid * self.mid[sl])[..., None]

    def foliage(self, sl: Slice, mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """Leaves of colour ``rgb`` over ``mask``'s shape: light and dark patches, (h, w, 3)."""
        leaves = np.clip(0.55 + 0.45 * self.mid[sl] + 0.3 * self.fine[sl], 0.15, 1.3)
        return np.broadcast_to(rgb, (*mask.shape, 3)) * leaves[..., None]

    def ground_shadow(self, x0: float, x1: float, z0: float, z1: float, strength: float):
        """Darken road and pavement pixels over the ground rectangle [x0, x1] x [z0, z1]."""
        rig = self.rig
        y0 = max(int(np.ceil(rig.ground_row(z1))), int(np.floor(rig.horizon)) + 1)
        y1 = min(int(np.floor(rig.ground_row(max(z0, 0.3)))) + 1, self.height)
        if y0 >= y1:
            return
        xs = [rig.cx + rig.focal * x / z for x in (x0, x1) for z in (max(z0, 0.3), z1)]
        c0, c1 = max(int(np.floor(min(xs))), 0), min(int(np.ceil(max(xs))) + 1, self.width)
        if c0 >= c1:
            return
        sl = (slice(y0, y1), slice(c0, c1))
        z = rig.focal * rig.height / (np.arange(y0, y1, dtype=np.float32)[:, None] - rig.horizon)
        x = (np.arange(c0, c1, dtype=np.float32)[None, :] - rig.cx) * z / rig.focal
        label = self.label[sl]
        ground = (label == ROAD) | (label == PAVEMENT)
        shade = (x >= x0) & (x <= x1) & (z >= z0) & (z <= z1) & ground & (self.instance[sl] == 0)
        self.image[sl][shade] *= 1.0 - strength

    def finish(self, haze: np.ndarray) -> np.ndarray:
        """Haze, illumination gradient, colour cast and sensor noise; returns uint8 RGB."""
        rng = self.rng
        with np.errstate(over="ignore"):
            fog = 1 - np.exp(-self.depth / rng.uniform(120, 600))
        fog[~np.isfinite(self.depth)] = 0.0
        image = self.image + (haze - self.image) * fog[..., None]
        angle = rng.uniform(0, 2 * np.pi)
        ys = np.linspace(-1, 1, self.height, dtype=np.float32)[:, None] * np.sin(angle)
        xs = np.linspace(-1, 1, self.width, dtype=np.float32)[None, :] * np.cos(angle)
        light = 1 + rng.uniform(0, 0.3) * (ys + xs) + rng.uniform(0, 0.12) * self.coarse
        gain = rng.uniform(0.65, 1.25) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
        image *= light[..., None] * gain
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image += noise * rng.uniform(2, 9)
        return np.clip(image, 0, 255).astype(np.uint8)
