"""Buildings: facades along the street, their near end walls, and the distant skyline.

A facade is the vertical plane ``X = const`` between two depths (:meth:`Canvas.side_plane
<leanseg.data.synthetic.canvas.Canvas.side_plane>`), painted with a window grid, shop fronts and a
cornice drawn per building (:class:`_FacadeStyle`); its near end wall faces the camera. The
skyline is a row of flat, hazy buildings and tree lines far down the street.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leanseg.data.synthetic.canvas import Canvas
from leanseg.data.synthetic.colours import any_colour, foliage_colour, grey, near
from leanseg.data.synthetic.labels import BUILDING, TREE
from leanseg.data.synthetic.street import Street


def _facade_colour(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.35:
        return grey(rng, 80, 205, 8)
    if k < 0.55:
        return near(rng, (190, 170, 135), 20)  # sandstone, render
    if k < 0.70:
        return near(rng, (140, 72, 55), 18)  # brick
    if k < 0.80:
        return near(rng, (222, 216, 204), 12)  # white paint
    if k < 0.90:
        return near(rng, (62, 60, 64), 10)  # dark cladding
    return any_colour(rng)


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
            glass=grey(rng, 20, 120, 12) if rng.random() < 0.7 else near(rng, (110, 140, 170), 25),
            frame=grey(rng, 150, 240) if rng.random() < 0.6 else grey(rng, 20, 80),
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


def draw_buildings(canvas: Canvas, street: Street, side: int, shaded: bool) -> None:
    """A row of facades with gaps along one side, and sometimes a back row."""
    rng = canvas.rng
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
        _draw_building(canvas, x, z, z + length, height, side, 0.7 if shaded else 1.0)
        z += length
    if rng.random() < 0.5:  # a back row, seen through the gaps
        x = street.frontage(side) + side * rng.uniform(15, 40)
        _draw_building(canvas, x, rng.uniform(5, 30), z_end + 50, rng.uniform(8, 30), side, 1.0)


def _draw_building(
    canvas: Canvas, x: float, z0: float, z1: float, top: float, side: int, shade: float
) -> None:
    """A facade on the plane ``X = x`` from ``z0`` to ``z1`` and its near end wall."""
    style = _FacadeStyle.draw(canvas.rng)
    grid = canvas.side_plane(x, z0, z1, top)
    if grid is not None:
        sl, s, v, mask, depth = grid
        colour = style.colour(s, v, top) * shade * canvas.texture(sl, 0.04, 0.04)
        canvas.paint(sl, mask, depth, colour, BUILDING)
    width = canvas.rng.uniform(8, 20)  # the near end wall, facing the camera
    grid = canvas.billboard(x + side * width / 2, z0, -width / 2, width / 2, top)
    if grid is not None:
        sl, u, v = grid
        colour = style.colour(u, v, top) * (0.85 * shade) * canvas.texture(sl, 0.04, 0.04)
        canvas.paint(sl, np.ones(colour.shape[:2], bool), z0, colour, BUILDING)


def draw_skyline(canvas: Canvas, haze: np.ndarray) -> None:
    """Distant buildings and tree lines across the whole view, hazy."""
    rng, rig = canvas.rng, canvas.rig
    z = rng.uniform(120, 350)
    left = (0 - rig.cx) * z / rig.focal - 10
    right = (canvas.width - rig.cx) * z / rig.focal + 10
    x = left
    while x < right:
        width = rng.uniform(8, 35)
        grid = canvas.billboard(x + width / 2, z, -width / 2, width / 2, 60)
        x += width
        if grid is None or rng.random() < 0.15:
            continue
        sl, u, v = grid
        if rng.random() < 0.3:
            top = rng.uniform(6, 18) + 1.5 * np.sin(u * rng.uniform(0.5, 1.5))
            mask = np.broadcast_to(v <= top, (v.shape[0], u.shape[1]))
            colour = canvas.foliage(sl, mask, foliage_colour(rng) * 0.8)
            canvas.paint(sl, mask, z, colour, TREE)
        else:
            top = rng.uniform(6, 50)
            style = _FacadeStyle.draw(rng)
            colour = style.colour(u, v, top) * 0.9
            colour = colour + (haze - colour) * 0.3
            canvas.paint(sl, np.broadcast_to(v <= top, colour.shape[:2]), z, colour, BUILDING)
