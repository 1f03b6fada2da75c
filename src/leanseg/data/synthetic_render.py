"""The renderer behind :mod:`leanseg.data.synthetic` (private: import from that module).

:func:`leanseg.data.synthetic.generate_scene` draws a scene's camera (:class:`StereoRig`) and
street layout and decides what stands where; this module paints it: value noise, colour and
shape helpers in object coordinates, and :class:`_Renderer`, which rasterises the sky, ground,
facades, skyline, trees, hedges, fences, poles, signs, traffic lights, cars, pedestrians and
cyclists into image, label, instance and depth buffers with a z-buffer, then adds the scene's
colour cast, illumination, haze and sensor noise. The class ids live here because the renderer
writes them; :mod:`leanseg.data.synthetic` re-exports them next to ``CLASSES`` and ``PALETTE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from leanseg.data.synthetic import StereoRig, _Street

# Label ids, indices into ``leanseg.data.synthetic.CLASSES`` (CamVid's order).
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
# Classes whose objects get instance ids ``class_id * 1000 + index``.
THING_CLASSES: tuple[int, ...] = (CAR, PEDESTRIAN, BICYCLIST)

_Slice = tuple[slice, slice]


# ---------------------------------------------------------------------------------------------
# helpers: noise, colours and shapes in object coordinates (u across, v up, in metres)


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


def _rgb(values: object) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float32), 0, 255)


def _grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 6.0) -> np.ndarray:
    return _rgb(rng.uniform(lo, hi) + rng.normal(0, tint, 3))


def _near(rng: np.random.Generator, rgb: tuple[float, float, float], sd: float) -> np.ndarray:
    return _rgb(np.asarray(rgb) + rng.normal(0, sd, 3))


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    return _rgb(rng.uniform(15, 240, 3))


def _vehicle_colour(rng: np.random.Generator) -> np.ndarray:
    return _grey(rng, 25, 235, 5) if rng.random() < 0.55 else _any_colour(rng)


def _facade_colour(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.35:
        return _grey(rng, 80, 205, 8)
    if k < 0.55:
        return _near(rng, (190, 170, 135), 20)  # sandstone, render
    if k < 0.70:
        return _near(rng, (140, 72, 55), 18)  # brick
    if k < 0.80:
        return _near(rng, (222, 216, 204), 12)  # white paint
    if k < 0.90:
        return _near(rng, (62, 60, 64), 10)  # dark cladding
    return _any_colour(rng)


def _foliage_colour(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.7:
        return _near(rng, (70, 105, 45), 18)
    if k < 0.85:
        return _near(rng, (40, 60, 35), 10)  # dark evergreen
    return _near(rng, (150, 120, 50), 25)  # autumn


def _rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _trapezoid(u, v, v0: float, v1: float, half0: float, half1: float, cu: float = 0.0):
    """Rows ``v0..v1`` whose half-width goes linearly from ``half0`` to ``half1``."""
    half = half0 + (half1 - half0) * (v - v0) / (v1 - v0)
    return (v >= v0) & (v <= v1) & (np.abs(u - cu) <= half)


def _segment(u, v, p: tuple[float, float], q: tuple[float, float], width: float) -> np.ndarray:
    """Points within ``width / 2`` of the segment ``p``-``q``."""
    du, dv = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return (u - p[0] - t * du) ** 2 + (v - p[1] - t * dv) ** 2 <= (width / 2) ** 2


def _compose(shape: tuple[int, ...], parts: list[tuple[np.ndarray, np.ndarray]]):
    """Union mask and colours of parts painted in order (later parts cover earlier ones)."""
    colour = np.zeros((*shape, 3), np.float32)
    mask = np.zeros(shape, bool)
    for part, rgb in parts:
        part = np.broadcast_to(part, shape)
        colour[part] = rgb
        mask |= part
    return mask, colour


# ---------------------------------------------------------------------------------------------
# the renderer


class _Renderer:
    """Paints one scene into image, label, instance and depth buffers."""

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

    # -- primitives ---------------------------------------------------------------------------

    def paint(self, sl: _Slice, mask, depth, colour, label: int, instance: int = 0) -> None:
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
        self.counts[label] += 1
        return label * 1000 + self.counts[label]

    def texture(self, sl: _Slice, fine: float, mid: float = 0.0) -> np.ndarray:
        return (1.0 + fine * self.fine[sl] + mid * self.mid[sl])[..., None]

    def foliage(self, sl: _Slice, mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
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

    # -- stuff --------------------------------------------------------------------------------

    def sky(self) -> np.ndarray:
        """Fill the image with sky; returns the colour at the horizon (used for haze)."""
        rng = self.rng
        kind = rng.choice(3, p=(0.4, 0.4, 0.2))
        if kind == 0:  # blue
            top = _rgb((rng.uniform(50, 110), rng.uniform(100, 160), rng.uniform(175, 235)))
            horizon = _near(rng, (185, 205, 228), 12)
        elif kind == 1:  # overcast grey
            grey = _grey(rng, 110, 200, 5)
            top, horizon = grey - rng.uniform(0, 30), grey + rng.uniform(0, 30)
        else:  # hazy white
            top, horizon = _grey(rng, 190, 225, 4), _grey(rng, 220, 250, 3)
        t = np.clip(np.arange(self.height, dtype=np.float32) / max(self.rig.horizon, 1.0), 0, 1)
        self.image[:] = (top * (1 - t[:, None]) + horizon * t[:, None])[:, None, :]
        cloud = np.clip(1.4 * self.coarse + 0.3 * self.mid - rng.uniform(-0.3, 0.8), 0, 1)
        cloud_rgb = _grey(rng, 150, 250, 4) if kind != 2 else _grey(rng, 170, 210, 4)
        self.image += (cloud_rgb - self.image) * (0.8 * cloud)[..., None]
        return _rgb(horizon)

    def ground(self, street: _Street, sunny: bool) -> None:
        """Road (lane markings, crossing), kerbs, pavements and verges below the horizon."""
        rig, rng = self.rig, self.rng
        y0 = int(np.floor(rig.horizon)) + 1
        if y0 >= self.height:
            return
        sl = (slice(y0, self.height), slice(0, self.width))
        z = rig.focal * rig.height / (np.arange(y0, self.height, dtype=np.float32) - rig.horizon)
        z = z[:, None]  # (h, 1)
        x = (np.arange(self.width, dtype=np.float32)[None, :] - rig.cx) * z / rig.focal
        rel = x - street.centre
        half = street.road_width / 2
        right = (rel > 0).astype(np.int64)
        walk = np.where(right == 1, street.sidewalk[1], street.sidewalk[-1])
        dist = np.abs(rel)
        # 0 road, 1/2 kerb left/right, 3/4 pavement left/right, 5/6 verge left/right
        region = np.where(dist < half, 0, np.where(dist < half + 0.25, 1, 3))
        region = np.where(dist >= half + walk, 5, region)
        region = np.where(region > 0, region + right, 0)

        road = _grey(rng, 55, 140, 5)
        walks = [self._pavement_colour() for _ in range(2)]
        kerb = _grey(rng, 120, 210, 4)
        verges = []
        for side in (-1, 1):
            grass = street.grass_verge[side]
            verges.append(_near(rng, (85, 115, 55), 18) if grass else self._pavement_colour())
        colours = np.stack([road, kerb, kerb, *walks, *verges])
        grass_l, grass_r = street.grass_verge[-1], street.grass_verge[1]
        labels = np.array(
            [ROAD, PAVEMENT, PAVEMENT, PAVEMENT, PAVEMENT]
            + [TREE if grass_l else PAVEMENT, TREE if grass_r else PAVEMENT],
            np.uint8,
        )
        fine = np.array([0.05, 0.04, 0.04, 0.05, 0.05, 0.05, 0.05], np.float32)
        fine[5:] += 0.25 * np.array([grass_l, grass_r], np.float32)
        factor = 1 + fine[region] * self.fine[sl] + 0.08 * self.coarse[sl]
        factor += np.where(region >= 5, 0.2, 0.03) * self.mid[sl]
        image = colours[region] * factor[..., None]

        tile = rng.uniform(0.4, 1.2)
        joints = (np.mod(x, tile) < 0.04) | (np.mod(z, tile) < 0.04)
        image[joints & ((region == 3) | (region == 4))] *= 0.82
        marking = self._markings(rel, z, half, street)
        image[marking & (region == 0)] = _grey(rng, 170, 235, 3) * rng.uniform(0.9, 1.0, 3)
        if sunny:
            side = int(rng.choice((-1, 1)))
            edge = half + street.sidewalk[side] - rng.uniform(0, street.road_width + 3)
            edge = edge + 3 * np.sin(z / rng.uniform(6, 20) + rng.uniform(0, 6))
            image[rel * side > edge] *= rng.uniform(0.45, 0.65)
        self.image[sl] = image
        self.label[sl] = labels[region]
        self.depth[sl] = z

    def _pavement_colour(self) -> np.ndarray:
        rng, k = self.rng, self.rng.random()
        if k < 0.5:
            return _grey(rng, 105, 200, 5)
        if k < 0.7:
            return _near(rng, (150, 98, 88), 15)
        if k < 0.85:
            return _near(rng, (178, 168, 142), 15)
        return _grey(rng, 75, 110, 4)

    def _markings(self, rel: np.ndarray, z: np.ndarray, half: float, street: _Street):
        rng = self.rng
        lane = street.road_width / street.lanes
        dash, phase = rng.uniform(2, 4), rng.uniform(0, 10)
        marks = np.zeros(rel.shape, bool)
        for k in range(1, street.lanes):
            boundary = -half + k * lane
            marks |= (np.abs(rel - boundary) < 0.07) & (np.mod(z + phase, 3 * dash) < dash)
        if rng.random() < 0.6:
            marks |= np.abs(np.abs(rel) - (half - 0.3)) < 0.06
        if rng.random() < 0.3:
            zc = rng.uniform(8, 40)
            marks |= (z > zc) & (z < zc + 3.5) & (np.mod(rel, 1.1) < 0.55)
        return marks

    def buildings(self, street: _Street, side: int, shaded: bool) -> None:
        """A row of facades with gaps along one side, and sometimes a back row."""
        rng = self.rng
        z = 0.5 if rng.random() < 0.7 else rng.uniform(2, 20)
        z_end = rng.uniform(60, 250)
        gap_rate = rng.uniform(0.05, 0.35)
        while z < z_end:
            if rng.random() < gap_rate:
                z += rng.uniform(4, 20)
                continue
            length = rng.uniform(8, 35)
            setback = 0.0 if rng.random() < 0.6 else rng.uniform(0.5, 5)
            height = rng.uniform(5, 15) if rng.random() < 0.8 else rng.uniform(15, 35)
            x = street.frontage(side) + side * setback
            self.building(x, z, z + length, height, side, 0.7 if shaded else 1.0)
            z += length
        if rng.random() < 0.5:  # a back row, seen through the gaps
            x = street.frontage(side) + side * rng.uniform(15, 40)
            self.building(x, rng.uniform(5, 30), z_end + 50, rng.uniform(8, 30), side, 1.0)

    def building(self, x: float, z0: float, z1: float, top: float, side: int, shade: float):
        """A facade on the plane ``X = x`` from ``z0`` to ``z1`` and its near end wall."""
        style = _FacadeStyle.draw(self.rng)
        grid = self.side_plane(x, z0, z1, top)
        if grid is not None:
            sl, s, v, mask, depth = grid
            colour = style.colour(s, v, top) * shade * self.texture(sl, 0.04, 0.04)
            self.paint(sl, mask, depth, colour, BUILDING)
        width = self.rng.uniform(8, 20)  # the near end wall, facing the camera
        grid = self.billboard(x + side * width / 2, z0, -width / 2, width / 2, top)
        if grid is not None:
            sl, u, v = grid
            colour = style.colour(u, v, top) * (0.85 * shade) * self.texture(sl, 0.04, 0.04)
            self.paint(sl, np.ones(colour.shape[:2], bool), z0, colour, BUILDING)

    def skyline(self, haze: np.ndarray) -> None:
        """Distant buildings and tree lines across the whole view, hazy."""
        rng, rig = self.rng, self.rig
        z = rng.uniform(120, 350)
        left = (0 - rig.cx) * z / rig.focal - 10
        right = (self.width - rig.cx) * z / rig.focal + 10
        x = left
        while x < right:
            width = rng.uniform(8, 35)
            grid = self.billboard(x + width / 2, z, -width / 2, width / 2, 60)
            x += width
            if grid is None or rng.random() < 0.15:
                continue
            sl, u, v = grid
            if rng.random() < 0.3:
                top = rng.uniform(6, 18) + 1.5 * np.sin(u * rng.uniform(0.5, 1.5))
                mask = np.broadcast_to(v <= top, (v.shape[0], u.shape[1]))
                colour = self.foliage(sl, mask, _foliage_colour(rng) * 0.8)
                self.paint(sl, mask, z, colour, TREE)
            else:
                top = rng.uniform(6, 50)
                style = _FacadeStyle.draw(rng)
                colour = style.colour(u, v, top) * 0.9
                colour = colour + (haze - colour) * 0.3
                self.paint(sl, np.broadcast_to(v <= top, colour.shape[:2]), z, colour, BUILDING)

    def tree(self, x: float, z: float) -> None:
        rng = self.rng
        ru, rv = rng.uniform(1.2, 3.5), rng.uniform(1.5, 4.0)
        trunk_top = rng.uniform(1.5, 3.5)
        conifer = rng.random() < 0.2
        top = trunk_top + (2.8 if conifer else 1.9) * rv
        grid = self.billboard(x, z, -ru * 1.3, ru * 1.3, top)
        if grid is None:
            return
        sl, u, v = grid
        shape = (v.shape[0], u.shape[1])
        centre = trunk_top + rv * 0.8
        if conifer:  # tiers of branches: a jagged, narrowing silhouette
            base = trunk_top * 0.6
            rise = np.clip((v - base) / (top - base), 0, 1)
            tier = np.mod((v - base) * rng.uniform(0.8, 1.6), 1.0)
            crown = (v >= base) & (np.abs(u) <= ru * (1 - rise) * (0.6 + 0.4 * tier))
        else:
            angle = np.arctan2((v - centre) / rv, u / ru)
            radius = np.sqrt((u / ru) ** 2 + ((v - centre) / rv) ** 2)
            edge = 1 + sum(
                a * np.sin(k * angle + rng.uniform(0, 6))
                for a, k in ((0.1, 5), (0.07, 9), (0.05, 15))
            )
            crown = radius <= edge
        trunk = _rect(u, v, -0.06 - 0.04 * ru, 0.06 + 0.04 * ru, 0, centre)
        trunk_rgb = _near(self.rng, (85, 70, 55), 15)
        mask = np.broadcast_to(trunk | crown, shape)
        colour = self.foliage(sl, mask, _foliage_colour(rng)).copy()
        colour[np.broadcast_to(trunk & ~crown, shape)] = trunk_rgb
        self.paint(sl, mask, z, colour, TREE)

    def hedge(self, x: float, z0: float, z1: float) -> None:
        rng = self.rng
        height = rng.uniform(0.8, 2.0)
        grid = self.side_plane(x, z0, z1, height + 0.3)
        if grid is None:
            return
        sl, s, v, mask, depth = grid
        top = height + 0.12 * np.sin(s * 2.3 + rng.uniform(0, 6)) + 0.08 * np.sin(s * 5.1)
        mask = mask & (v <= top)
        self.paint(sl, mask, depth, self.foliage(sl, mask, _foliage_colour(rng)), TREE)

    def fence(self, x: float, z0: float, z1: float) -> None:
        rng = self.rng
        height = rng.uniform(0.9, 2.0)
        grid = self.side_plane(x, z0, z1, height)
        if grid is None:
            return
        sl, s, v, mask, depth = grid
        kind = rng.integers(4)
        post = np.mod(s, rng.uniform(1.5, 3.0)) < 0.12
        rails = (v >= height - 0.08) | (np.abs(v - rng.uniform(0.1, 0.4)) < 0.05)
        if kind == 0:  # railing with thin bars
            body = post | rails | (np.mod(s, rng.uniform(0.12, 0.25)) < 0.03)
            rgb = _grey(rng, 20, 200, 8) if rng.random() < 0.7 else _near(rng, (40, 80, 50), 10)
        elif kind == 1:  # wooden pickets
            body = post | rails | (np.mod(s, rng.uniform(0.12, 0.2)) < 0.08)
            rgb = _near(rng, (125, 95, 65), 25) if rng.random() < 0.7 else _grey(rng, 200, 240)
        elif kind == 2:  # chain-link mesh
            pitch = rng.uniform(0.12, 0.25)
            diagonal = (np.mod(s + v, pitch) < 0.02) | (np.mod(s - v, pitch) < 0.02)
            body = post | rails | diagonal
            rgb = _grey(rng, 90, 180, 5)
        else:  # solid boards
            body = np.ones_like(mask)
            rgb = _any_colour(rng) if rng.random() < 0.4 else _near(rng, (110, 85, 60), 20)
        mask = mask & body
        colour = np.broadcast_to(rgb, (*mask.shape, 3)) * self.texture(sl, 0.06)
        if kind == 3:
            colour = colour * (1 - 0.15 * (np.mod(s, 0.15) < 0.02))[..., None]
        self.paint(sl, mask, depth, colour, FENCE)

    def pole(self, x: float, z: float, kind: str, side: int) -> None:
        """A lamp post, sign post, traffic light or utility pole; arms reach over the road."""
        rng = self.rng
        height = {"lamp": (6, 9), "sign": (2.2, 3.5), "light": (3, 5), "utility": (7, 10)}[kind]
        height = rng.uniform(*height)
        arm = rng.uniform(1.5, 5) if kind in ("lamp", "light") and rng.random() < 0.6 else 0.0
        reach = -side * arm
        grid = self.billboard(x, z, min(reach, 0) - 1, max(reach, 0) + 1, height + 0.8)
        if grid is None:
            return
        sl, u, v = grid
        min_half = 0.5 * z / self.rig.focal  # at least one pixel wide
        radius = max(rng.uniform(0.05, 0.12), min_half)
        mask = (np.abs(u) <= radius) & (v <= height)
        if arm:
            mask = mask | _segment(
                u, v, (0, height - 0.3), (reach, height), max(0.08, min_half * 2)
            )
        if kind == "lamp":
            mask = mask | _ellipse(u, v, reach, height - 0.05, 0.35, 0.12)
        if kind == "utility":
            mask = mask | _rect(u, v, -0.8, 0.8, height - 0.6, height - 0.5)
        rgb = _near(rng, (95, 75, 55), 15) if kind == "utility" else _grey(rng, 30, 170, 6)
        if rng.random() < 0.15:
            rgb = _near(rng, (40, 80, 60), 10)
        self.paint(sl, mask, z, np.broadcast_to(rgb, (*mask.shape, 3)), POLE)
        if kind == "sign":
            self.sign_plate(sl, u, v, z, height)
        elif kind == "light":
            self.traffic_light(sl, u, v, z, reach if arm else 0.0, height)

    def sign_plate(self, sl: _Slice, u, v, z: float, top: float) -> None:
        rng = self.rng
        parts = []
        for k in range(rng.integers(1, 3)):
            size = rng.uniform(0.5, 0.9)
            cv = top - size / 2 - k * (size + 0.15)
            shape = rng.integers(3)
            if shape == 0:
                outer = _ellipse(u, v, 0, cv, size / 2, size / 2)
                inner = _ellipse(u, v, 0, cv, size / 2.8, size / 2.8)
            elif shape == 1:
                outer = _trapezoid(u, v, cv - size / 2, cv + size / 2, size / 2, 0.02)
                inner = _trapezoid(u, v, cv - size / 3, cv + size / 4, size / 3, 0.02)
            else:
                w = size * rng.uniform(0.7, 1.6)
                outer = _rect(u, v, -w / 2, w / 2, cv - size / 2, cv + size / 2)
                inner = _rect(u, v, -w / 2 + 0.06, w / 2 - 0.06, cv - size / 2 + 0.06, cv + 0.4)
            rim = _near(rng, (200, 30, 30), 20) if rng.random() < 0.5 else _any_colour(rng)
            parts += [(outer, rim), (inner, _grey(rng, 180, 245) if rng.random() < 0.6 else rim)]
        mask, colour = _compose((v.shape[0], u.shape[1]), parts)
        self.paint(sl, mask, z, colour, SIGN)

    def traffic_light(self, sl: _Slice, u, v, z: float, cu: float, top: float) -> None:
        rng = self.rng
        box = _rect(u, v, cu - 0.17, cu + 0.17, top - 0.95, top - 0.05)
        body = _grey(rng, 20, 60) if rng.random() < 0.8 else _near(rng, (200, 170, 40), 15)
        parts = [(box, body)]
        lit = rng.integers(3)
        for k, rgb in enumerate(((230, 40, 30), (240, 170, 30), (40, 220, 110))):
            lamp = _ellipse(u, v, cu, top - 0.2 - 0.28 * k, 0.1, 0.1)
            parts.append((lamp, np.asarray(rgb, np.float32) * (1.0 if k == lit else 0.35)))
        mask, colour = _compose((v.shape[0], u.shape[1]), parts)
        self.paint(sl, mask, z, colour, SIGN)

    # -- things -------------------------------------------------------------------------------

    def car(self, x: float, z: float, side_view: bool) -> None:
        rng = self.rng
        body, glass = _vehicle_colour(rng), _grey(rng, 25, 150, 10)
        tyre, dark = _grey(rng, 15, 40, 2), _grey(rng, 25, 60, 3)
        if side_view:
            length, height = rng.uniform(3.8, 4.9), rng.uniform(1.35, 1.7)
            half_width, depth_extent = length / 2, 1.8
        else:
            big = rng.random() < 0.12
            half_width = rng.uniform(1.2, 1.3) if big else rng.uniform(0.82, 1.0)
            height = rng.uniform(2.6, 3.6) if big else rng.uniform(1.35, 2.0)
            depth_extent = rng.uniform(6, 12) if big else rng.uniform(3.8, 4.8)
        self.ground_shadow(x - half_width - 0.1, x + half_width + 0.1, z, z + depth_extent, 0.5)
        grid = self.billboard(x, z, -half_width, half_width, height)
        if grid is None:
            return
        sl, u, v = grid
        hw = half_width
        if side_view:
            flip = rng.choice((-1.0, 1.0))
            uf = u * flip
            sill = rng.uniform(0.8, 0.95)
            parts = [
                (
                    _rect(u, v, -hw, hw, 0.28, sill) & (np.abs(uf) < hw - 0.15 * (v - 0.5) ** 2),
                    body,
                ),
                (_trapezoid(uf, v, sill, height, 0.55 * hw, 0.38 * hw, -0.1 * hw), body),
                (
                    _trapezoid(uf, v, sill + 0.05, height - 0.07, 0.5 * hw, 0.33 * hw, -0.1 * hw),
                    glass,
                ),
                (_rect(uf, v, -0.12 * hw, -0.05 * hw, sill, height), body),
                (_rect(u, v, -hw, hw, 0.28, 0.4), dark),
            ]
            for cu in (-0.62 * hw, 0.62 * hw):
                parts += [
                    (_ellipse(u, v, cu, 0.32, 0.32, 0.32), tyre),
                    (_ellipse(u, v, cu, 0.32, 0.17, 0.17), _grey(rng, 110, 190)),
                ]
            parts.append((_rect(uf, v, hw - 0.12, hw, 0.55, 0.68), _near(rng, (220, 220, 200), 15)))
        else:
            top_half = rng.uniform(0.62, 0.8) * hw
            belt = height * (rng.uniform(0.45, 0.55) if height < 2.2 else rng.uniform(0.5, 0.9))
            lights = _near(rng, (200, 35, 30), 20)
            parts = [
                (_rect(u, v, -hw + 0.05, -hw + 0.3, 0, 0.45), tyre),
                (_rect(u, v, hw - 0.3, hw - 0.05, 0, 0.45), tyre),
                (_rect(u, v, -hw + 0.1, hw - 0.1, 0.12, 0.4), dark),
                (_rect(u, v, -hw, hw, 0.3, belt), body),
                (_trapezoid(u, v, belt, height, hw * 0.96, top_half), body),
                (_trapezoid(u, v, belt + 0.07, height - 0.07, hw * 0.86, top_half * 0.88), glass),
                (_rect(u, v, -hw, hw, 0.3, 0.45), dark),
                (_rect(u, v, -hw + 0.04, -hw + 0.32, belt - 0.25, belt - 0.08), lights),
                (_rect(u, v, hw - 0.32, hw - 0.04, belt - 0.25, belt - 0.08), lights),
                (_rect(u, v, -0.25, 0.25, 0.48, 0.6), _grey(rng, 190, 245)),
            ]
        mask, colour = _compose((v.shape[0], u.shape[1]), parts)
        colour *= (0.85 + 0.25 * np.clip(v / height, 0, 1))[..., None] * self.texture(sl, 0.03)
        self.paint(sl, mask, z, colour, CAR, self.new_instance(CAR))

    def pedestrian(self, x: float, z: float) -> None:
        rng = self.rng
        h = rng.uniform(1.5, 1.95) if rng.random() < 0.9 else rng.uniform(1.0, 1.35)
        grid = self.billboard(x, z, -0.35 * h, 0.35 * h, h)
        if grid is None:
            return
        sl, u, v = grid
        self.ground_shadow(x - 0.3, x + 0.3, z - 0.2, z + 0.4, 0.35)
        shirt, legs = (
            _any_colour(rng),
            _any_colour(rng) if rng.random() < 0.5 else _grey(rng, 20, 90),
        )
        skin = _near(rng, (190, 150, 120), 35)
        stride, swing = rng.uniform(0.0, 0.16) * h, rng.uniform(-0.08, 0.08) * h
        hip, shoulder = 0.5 * h, 0.81 * h
        coat = rng.uniform(0.5, 0.62) * h if rng.random() < 0.3 else hip
        parts = [
            (_segment(u, v, (-0.045 * h, hip), (-stride / 2, 0.03 * h), 0.09 * h), legs),
            (_segment(u, v, (0.045 * h, hip), (stride / 2, 0.03 * h), 0.09 * h), legs),
            (_rect(u, v, -stride / 2 - 0.05 * h, stride / 2 + 0.05 * h, 0, 0.03 * h), (30, 28, 28)),
            (
                _segment(u, v, (-0.14 * h, shoulder), (-0.17 * h + swing, 0.47 * h), 0.065 * h),
                shirt,
            ),
            (_segment(u, v, (0.14 * h, shoulder), (0.17 * h - swing, 0.47 * h), 0.065 * h), shirt),
            (_trapezoid(u, v, coat, shoulder + 0.02 * h, 0.13 * h, 0.15 * h), shirt),
            (_rect(u, v, -0.03 * h, 0.03 * h, shoulder, 0.88 * h), skin),
            (_ellipse(u, v, 0, 0.925 * h, 0.055 * h, 0.07 * h), skin),
            (_ellipse(u, v, 0, 0.95 * h, 0.058 * h, 0.05 * h), _grey(rng, 10, 120, 15)),
        ]
        if rng.random() < 0.3:
            parts.append((_rect(u, v, 0.15 * h, 0.28 * h, 0.45 * h, 0.62 * h), _any_colour(rng)))
        mask, colour = _compose((v.shape[0], u.shape[1]), parts)
        colour *= self.texture(sl, 0.05)
        self.paint(sl, mask, z, colour, PEDESTRIAN, self.new_instance(PEDESTRIAN))

    def cyclist(self, x: float, z: float, side_view: bool) -> None:
        rng = self.rng
        half = 0.9 if side_view else 0.35
        grid = self.billboard(x, z, -half, half, 1.8)
        if grid is None:
            return
        sl, u, v = grid
        self.ground_shadow(x - half, x + half, z - 0.2, z + (0.5 if side_view else 1.8), 0.35)
        frame, shirt = _any_colour(rng), _any_colour(rng)
        wheel = max(0.03, 0.5 * z / self.rig.focal)  # at least one pixel wide
        legs, skin, tyre = _grey(rng, 20, 110), _near(rng, (190, 150, 120), 35), (25, 25, 25)
        if side_view:
            uf, r = u * rng.choice((-1.0, 1.0)), 0.34
            ring = ((np.hypot(u - 0.52, v - r) - r) ** 2 < 0.0016) | (
                (np.hypot(u + 0.52, v - r) - r) ** 2 < 0.0016
            )
            hub_b, hub_f, seat, head_tube, crank = (
                (-0.52, r),
                (0.52, r),
                (-0.12, 0.85),
                (0.38, 0.85),
                (0, 0.3),
            )
            parts = [(ring, tyre)]
            for p, q in (
                (hub_b, seat),
                (seat, crank),
                (crank, hub_b),
                (seat, head_tube),
                (head_tube, crank),
                (head_tube, hub_f),
                (head_tube, (0.34, 1.02)),
            ):
                parts.append((_segment(uf, v, p, q, 0.05), frame))
            knee = (0.12, 0.75) if rng.random() < 0.5 else (0.05, 0.65)
            parts += [
                (_segment(uf, v, (-0.1, 0.95), knee, 0.13), legs),
                (_segment(uf, v, knee, (0.02, 0.25), 0.11), legs),
                (_segment(uf, v, (-0.1, 0.98), (0.18, 1.42), 0.3), shirt),
                (_segment(uf, v, (0.18, 1.4), (0.34, 1.02), 0.08), shirt),
                (_ellipse(uf, v, 0.25, 1.6, 0.11, 0.12), skin),
                (_ellipse(uf, v, 0.25, 1.66, 0.13, 0.08), _any_colour(rng)),
            ]
        else:
            parts = [
                (_rect(u, v, -wheel, wheel, 0, 0.68), tyre),
                (_segment(u, v, (-0.1, 0.95), (-0.12, 0.3), 0.12), legs),
                (_segment(u, v, (0.1, 0.95), (0.1, 0.5), 0.12), legs),
                (_rect(u, v, -0.3, 0.3, 1.0, 1.05), frame),
                (_trapezoid(u, v, 0.9, 1.45, 0.16, 0.2), shirt),
                (_segment(u, v, (-0.2, 1.4), (-0.28, 1.05), 0.08), shirt),
                (_segment(u, v, (0.2, 1.4), (0.28, 1.05), 0.08), shirt),
                (_ellipse(u, v, 0, 1.58, 0.1, 0.12), skin),
                (_ellipse(u, v, 0, 1.63, 0.12, 0.08), _any_colour(rng)),
            ]
        mask, colour = _compose((v.shape[0], u.shape[1]), parts)
        colour *= self.texture(sl, 0.05)
        self.paint(sl, mask, z, colour, BICYCLIST, self.new_instance(BICYCLIST))

    # -- finish -------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class _FacadeStyle:
    """Colours and window grid of one facade."""

    wall: np.ndarray
    glass: np.ndarray
    frame: np.ndarray
    floor: float
    ground_floor: float
    spacing: float
    window: float
    sill: float
    window_height: float
    offset: float
    shops: bool

    @staticmethod
    def draw(rng: np.random.Generator) -> _FacadeStyle:
        floor = rng.uniform(2.8, 3.6)
        spacing = rng.uniform(2.2, 4.5)
        return _FacadeStyle(
            wall=_facade_colour(rng),
            glass=_grey(rng, 20, 120, 12)
            if rng.random() < 0.7
            else _near(rng, (110, 140, 170), 25),
            frame=_grey(rng, 150, 240) if rng.random() < 0.6 else _grey(rng, 20, 80),
            floor=floor,
            ground_floor=rng.uniform(3.2, 4.8),
            spacing=spacing,
            window=spacing * rng.uniform(0.3, 0.65),
            sill=rng.uniform(0.6, 1.0),
            window_height=floor * rng.uniform(0.35, 0.6),
            offset=rng.uniform(0, spacing),
            shops=bool(rng.random() < 0.5),
        )

    def colour(self, s: np.ndarray, v: np.ndarray, top: float) -> np.ndarray:
        """Facade colour at ``s`` metres along the wall and ``v`` metres up, (h, w, 3)."""
        s, v = np.broadcast_arrays(s, v)
        shape = v.shape
        colour = np.empty((*shape, 3), np.float32)
        colour[:] = self.wall
        along = np.mod(s - self.offset, self.spacing)
        level = v - self.ground_floor
        in_floor = np.mod(level, self.floor)
        rows = (level > 0) & (v < top - 1.2)
        frame = (
            rows
            & (
                np.abs(in_floor - self.sill - self.window_height / 2)
                < self.window_height / 2 + 0.12
            )
            & (along < self.window + 0.24)
        )
        window = rows & (in_floor > self.sill) & (in_floor < self.sill + self.window_height)
        window &= (along > 0.12) & (along < self.window + 0.12)
        colour[frame] = self.frame
        # Windows differ a little (curtains, lights, reflections).
        pane = np.floor((s - self.offset) / self.spacing) * 7 + np.floor(level / self.floor) * 13
        pane = 0.75 + 0.5 * np.mod(pane * 0.618, 1.0)
        colour[window] = self.glass * pane[window][:, None]
        if self.shops:
            shop = (v > 0.4) & (v < self.ground_floor - 0.7) & (along < self.spacing * 0.8)
            colour[shop] = self.glass * 0.8
        colour[v > top - 0.35] *= 0.75  # cornice
        return colour
