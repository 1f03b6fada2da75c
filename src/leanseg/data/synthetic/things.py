"""Cars, pedestrians and cyclists: the countable objects, each with its own instance id.

Each is a flat cut-out standing on the ground at one depth (:meth:`Canvas.billboard
<leanseg.data.synthetic.canvas.Canvas.billboard>`), built from shapes in metres, and casts a
shadow on the road or pavement beneath it. Cars are seen from behind or from the side (crossing
traffic), cyclists from behind or from the side.
"""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.canvas import Canvas
from leanseg.data.synthetic.colours import any_colour, grey, near
from leanseg.data.synthetic.labels import BICYCLIST, CAR, PEDESTRIAN
from leanseg.data.synthetic.shapes import compose, ellipse, rect, segment, trapezoid


def _vehicle_colour(rng: np.random.Generator) -> np.ndarray:
    return grey(rng, 25, 235, 5) if rng.random() < 0.55 else any_colour(rng)


def draw_car(canvas: Canvas, x: float, z: float, side_view: bool) -> None:
    """A car, van or bus from behind at (x, z), or a car from the side when ``side_view``."""
    rng = canvas.rng
    body, glass = _vehicle_colour(rng), grey(rng, 25, 150, 10)
    tyre, dark = grey(rng, 15, 40, 2), grey(rng, 25, 60, 3)
    if side_view:
        length, height = rng.uniform(3.8, 4.9), rng.uniform(1.35, 1.7)
        half_width, depth_extent = length / 2, 1.8
    else:
        big = rng.random() < 0.12
        half_width = rng.uniform(1.2, 1.3) if big else rng.uniform(0.82, 1.0)
        height = rng.uniform(2.6, 3.6) if big else rng.uniform(1.35, 2.0)
        depth_extent = rng.uniform(6, 12) if big else rng.uniform(3.8, 4.8)
    canvas.ground_shadow(x - half_width - 0.1, x + half_width + 0.1, z, z + depth_extent, 0.5)
    grid = canvas.billboard(x, z, -half_width, half_width, height)
    if grid is None:
        return
    sl, u, v = grid
    hw = half_width
    if side_view:
        flip = rng.choice((-1.0, 1.0))
        uf = u * flip
        sill = rng.uniform(0.8, 0.95)
        parts = [
            (rect(u, v, -hw, hw, 0.28, sill) & (np.abs(uf) < hw - 0.15 * (v - 0.5) ** 2), body),
            (trapezoid(uf, v, sill, height, 0.55 * hw, 0.38 * hw, -0.1 * hw), body),
            (trapezoid(uf, v, sill + 0.05, height - 0.07, 0.5 * hw, 0.33 * hw, -0.1 * hw), glass),
            (rect(uf, v, -0.12 * hw, -0.05 * hw, sill, height), body),
            (rect(u, v, -hw, hw, 0.28, 0.4), dark),
        ]
        for cu in (-0.62 * hw, 0.62 * hw):
            parts += [
                (ellipse(u, v, cu, 0.32, 0.32, 0.32), tyre),
                (ellipse(u, v, cu, 0.32, 0.17, 0.17), grey(rng, 110, 190)),
            ]
        parts.append((rect(uf, v, hw - 0.12, hw, 0.55, 0.68), near(rng, (220, 220, 200), 15)))
    else:
        top_half = rng.uniform(0.62, 0.8) * hw
        belt = height * (rng.uniform(0.45, 0.55) if height < 2.2 else rng.uniform(0.5, 0.9))
        lights = near(rng, (200, 35, 30), 20)
        parts = [
            (rect(u, v, -hw + 0.05, -hw + 0.3, 0, 0.45), tyre),
            (rect(u, v, hw - 0.3, hw - 0.05, 0, 0.45), tyre),
            (rect(u, v, -hw + 0.1, hw - 0.1, 0.12, 0.4), dark),
            (rect(u, v, -hw, hw, 0.3, belt), body),
            (trapezoid(u, v, belt, height, hw * 0.96, top_half), body),
            (trapezoid(u, v, belt + 0.07, height - 0.07, hw * 0.86, top_half * 0.88), glass),
            (rect(u, v, -hw, hw, 0.3, 0.45), dark),
            (rect(u, v, -hw + 0.04, -hw + 0.32, belt - 0.25, belt - 0.08), lights),
            (rect(u, v, hw - 0.32, hw - 0.04, belt - 0.25, belt - 0.08), lights),
            (rect(u, v, -0.25, 0.25, 0.48, 0.6), grey(rng, 190, 245)),
        ]
    mask, colour = compose((v.shape[0], u.shape[1]), parts)
    colour *= (0.85 + 0.25 * np.clip(v / height, 0, 1))[..., None] * canvas.texture(sl, 0.03)
    canvas.paint(sl, mask, z, colour, CAR, canvas.new_instance(CAR))


def draw_pedestrian(canvas: Canvas, x: float, z: float) -> None:
    """An adult (sometimes a child) walking, at (x, z), sometimes carrying a bag."""
    rng = canvas.rng
    h = rng.uniform(1.5, 1.95) if rng.random() < 0.9 else rng.uniform(1.0, 1.35)
    grid = canvas.billboard(x, z, -0.35 * h, 0.35 * h, h)
    if grid is None:
        return
    sl, u, v = grid
    canvas.ground_shadow(x - 0.3, x + 0.3, z - 0.2, z + 0.4, 0.35)
    shirt, legs = (
        any_colour(rng),
        any_colour(rng) if rng.random() < 0.5 else grey(rng, 20, 90),
    )
    skin = near(rng, (190, 150, 120), 35)
    stride, swing = rng.uniform(0.0, 0.16) * h, rng.uniform(-0.08, 0.08) * h
    hip, shoulder = 0.5 * h, 0.81 * h
    coat = rng.uniform(0.5, 0.62) * h if rng.random() < 0.3 else hip
    parts = [
        (segment(u, v, (-0.045 * h, hip), (-stride / 2, 0.03 * h), 0.09 * h), legs),
        (segment(u, v, (0.045 * h, hip), (stride / 2, 0.03 * h), 0.09 * h), legs),
        (rect(u, v, -stride / 2 - 0.05 * h, stride / 2 + 0.05 * h, 0, 0.03 * h), (30, 28, 28)),
        (segment(u, v, (-0.14 * h, shoulder), (-0.17 * h + swing, 0.47 * h), 0.065 * h), shirt),
        (segment(u, v, (0.14 * h, shoulder), (0.17 * h - swing, 0.47 * h), 0.065 * h), shirt),
        (trapezoid(u, v, coat, shoulder + 0.02 * h, 0.13 * h, 0.15 * h), shirt),
        (rect(u, v, -0.03 * h, 0.03 * h, shoulder, 0.88 * h), skin),
        (ellipse(u, v, 0, 0.925 * h, 0.055 * h, 0.07 * h), skin),
        (ellipse(u, v, 0, 0.95 * h, 0.058 * h, 0.05 * h), grey(rng, 10, 120, 15)),
    ]
    if rng.random() < 0.3:
        parts.append((rect(u, v, 0.15 * h, 0.28 * h, 0.45 * h, 0.62 * h), any_colour(rng)))
    mask, colour = compose((v.shape[0], u.shape[1]), parts)
    colour *= canvas.texture(sl, 0.05)
    canvas.paint(sl, mask, z, colour, PEDESTRIAN, canvas.new_instance(PEDESTRIAN))


def draw_cyclist(canvas: Canvas, x: float, z: float, side_view: bool) -> None:
    """A cyclist at (x, z), from behind, or from the side (wheels, frame, pedalling leg)."""
    rng = canvas.rng
    half = 0.9 if side_view else 0.35
    grid = canvas.billboard(x, z, -half, half, 1.8)
    if grid is None:
        return
    sl, u, v = grid
    canvas.ground_shadow(x - half, x + half, z - 0.2, z + (0.5 if side_view else 1.8), 0.35)
    frame, shirt = any_colour(rng), any_colour(rng)
    wheel = max(0.03, 0.5 * z / canvas.rig.focal)  # at least one pixel wide
    legs, skin, tyre = grey(rng, 20, 110), near(rng, (190, 150, 120), 35), (25, 25, 25)
    if side_view:
        uf, r = u * rng.choice((-1.0, 1.0)), 0.34
        ring = ((np.hypot(u - 0.52, v - r) - r) ** 2 < 0.0016) | (
            (np.hypot(u + 0.52, v - r) - r) ** 2 < 0.0016
        )
        hub_b, hub_f, crank = (-0.52, r), (0.52, r), (0, 0.3)
        seat, head_tube = (-0.12, 0.85), (0.38, 0.85)
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
            parts.append((segment(uf, v, p, q, 0.05), frame))
        knee = (0.12, 0.75) if rng.random() < 0.5 else (0.05, 0.65)
        parts += [
            (segment(uf, v, (-0.1, 0.95), knee, 0.13), legs),
            (segment(uf, v, knee, (0.02, 0.25), 0.11), legs),
            (segment(uf, v, (-0.1, 0.98), (0.18, 1.42), 0.3), shirt),
            (segment(uf, v, (0.18, 1.4), (0.34, 1.02), 0.08), shirt),
            (ellipse(uf, v, 0.25, 1.6, 0.11, 0.12), skin),
            (ellipse(uf, v, 0.25, 1.66, 0.13, 0.08), any_colour(rng)),
        ]
    else:
        parts = [
            (rect(u, v, -wheel, wheel, 0, 0.68), tyre),
            (segment(u, v, (-0.1, 0.95), (-0.12, 0.3), 0.12), legs),
            (segment(u, v, (0.1, 0.95), (0.1, 0.5), 0.12), legs),
            (rect(u, v, -0.3, 0.3, 1.0, 1.05), frame),
            (trapezoid(u, v, 0.9, 1.45, 0.16, 0.2), shirt),
            (segment(u, v, (-0.2, 1.4), (-0.28, 1.05), 0.08), shirt),
            (segment(u, v, (0.2, 1.4), (0.28, 1.05), 0.08), shirt),
            (ellipse(u, v, 0, 1.58, 0.1, 0.12), skin),
            (ellipse(u, v, 0, 1.63, 0.12, 0.08), any_colour(rng)),
        ]
    mask, colour = compose((v.shape[0], u.shape[1]), parts)
    colour *= canvas.texture(sl, 0.05)
    canvas.paint(sl, mask, z, colour, BICYCLIST, canvas.new_instance(BICYCLIST))
