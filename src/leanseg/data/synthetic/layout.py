"""Scene layout: what stands where along the street, drawn in the order the scene's seed fixes.

Each function draws one group of objects on the canvas at positions in metres from the street's
layout (:class:`~leanseg.data.synthetic.street.Street`); which objects and how many come from the
canvas's random generator, so the order of the calls is part of what a seed means.
"""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.buildings import draw_buildings
from leanseg.data.synthetic.canvas import Canvas
from leanseg.data.synthetic.roadside import draw_fence, draw_hedge, draw_pole, draw_tree
from leanseg.data.synthetic.street import Street
from leanseg.data.synthetic.things import draw_car, draw_cyclist, draw_pedestrian


def _place(rng: np.random.Generator, lo: float, hi: float, power: float = 1.3) -> float:
    """A depth in [lo, hi], denser near the camera."""
    return lo + (hi - lo) * rng.random() ** power


def place_roadside(canvas: Canvas, street: Street, side: int, sunny: bool) -> None:
    """Buildings, parks, street trees and lamp posts on one side of the street."""
    rng = canvas.rng
    if not street.open_side[side]:
        draw_buildings(canvas, street, side, shaded=sunny and rng.random() < 0.5)
    frontage = street.frontage(side)
    if street.open_side[side] or rng.random() < 0.3:
        for _ in range(rng.integers(3, 12)):
            draw_tree(canvas, frontage + side * rng.uniform(1, 25), rng.uniform(5, 120))
        z0 = rng.uniform(1, 30)
        draw_hedge(canvas, frontage + side * 0.5, z0, z0 + rng.uniform(10, 60))
    if rng.random() < 0.55:  # street trees
        z, x = rng.uniform(2, 12), street.kerb(side) + side * rng.uniform(0.6, 1.2)
        while z < 90:
            draw_tree(canvas, x, z)
            z += rng.uniform(7, 20)
    z = rng.uniform(3, 25)
    while z < 110:
        kind = "lamp" if rng.random() < 0.8 else "utility"
        draw_pole(canvas, street.kerb(side) + side * 0.4, z, kind, side)
        z += rng.uniform(18, 40)


def place_street_furniture(canvas: Canvas, street: Street) -> None:
    """Fences along the kerb or the frontage; sign posts (at least one) and traffic lights."""
    rng = canvas.rng
    for _ in range(rng.integers(1, 4)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) + side * rng.uniform(0.2, 0.6)
        if rng.random() < 0.5:
            x = street.frontage(side) + side * rng.uniform(0.0, 0.3)
        z = _place(rng, 1, 50)
        draw_fence(canvas, x, z, z + rng.uniform(4, 35))
    for k in range(rng.integers(1, 5)):
        side = int(rng.choice((-1, 1)))
        kind = "sign" if k == 0 or rng.random() < 0.6 else "light"
        x = street.kerb(side) + side * rng.uniform(0.3, 0.8)
        draw_pole(canvas, x, _place(rng, 4, 60), kind, side)


def place_traffic(canvas: Canvas, street: Street) -> None:
    """Cars in the lanes, parked and crossing; pedestrians; cyclists near the kerbs."""
    rng = canvas.rng
    lane = street.road_width / street.lanes
    for _ in range(rng.integers(1, 8)):
        x = street.kerb(-1) + lane * (rng.integers(street.lanes) + 0.5) + rng.uniform(-0.3, 0.3)
        draw_car(canvas, x, _place(rng, 7, 90), side_view=False)
    for side in (-1, 1):
        if rng.random() < 0.4:  # parked along the kerb
            z = rng.uniform(5, 20)
            while z < 70:
                if rng.random() < 0.7:
                    draw_car(canvas, street.kerb(side) - side * 1.1, z, side_view=False)
                z += rng.uniform(5, 8)
    if rng.random() < 0.3:  # crossing traffic
        draw_car(canvas, street.centre + rng.uniform(-6, 6), rng.uniform(20, 60), side_view=True)
    for _ in range(rng.integers(1, 9)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) + side * rng.uniform(0.5, street.sidewalk[side] - 0.3)
        if rng.random() < 0.1:  # crossing the road
            x = street.centre + rng.uniform(-street.road_width / 2, street.road_width / 2)
        draw_pedestrian(canvas, x, _place(rng, 3, 50))
    for _ in range(rng.integers(1, 4)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) - side * rng.uniform(0.4, 1.4)
        draw_cyclist(canvas, x, _place(rng, 4, 45), side_view=bool(rng.random() < 0.35))
