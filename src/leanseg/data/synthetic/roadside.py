"""What stands beside the road: trees, hedges, fences, and poles carrying lamps, signs and lights.

Trees and poles are flat cut-outs at one depth (:meth:`Canvas.billboard
<leanseg.data.synthetic.canvas.Canvas.billboard>`); hedges and fences run along the street on a
vertical plane (:meth:`Canvas.side_plane <leanseg.data.synthetic.canvas.Canvas.side_plane>`).
Sign plates and traffic lights are labelled ``SIGN`` and their posts ``POLE``, as in CamVid.
"""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.canvas import Canvas, Slice
from leanseg.data.synthetic.colours import any_colour, foliage_colour, grey, near
from leanseg.data.synthetic.labels import FENCE, POLE, SIGN, TREE
from leanseg.data.synthetic.shapes import compose, ellipse, rect, segment, trapezoid


def draw_tree(canvas: Canvas, x: float, z: float) -> None:
    """A broadleaf tree with a ragged round crown, or a conifer, standing at (x, z)."""
    rng = canvas.rng
    ru, rv = rng.uniform(1.2, 3.5), rng.uniform(1.5, 4.0)
    trunk_top = rng.uniform(1.5, 3.5)
    conifer = rng.random() < 0.2
    top = trunk_top + (2.8 if conifer else 1.9) * rv
    grid = canvas.billboard(x, z, -ru * 1.3, ru * 1.3, top)
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
            a * np.sin(k * angle + rng.uniform(0, 6)) for a, k in ((0.1, 5), (0.07, 9), (0.05, 15))
        )
        crown = radius <= edge
    trunk = rect(u, v, -0.06 - 0.04 * ru, 0.06 + 0.04 * ru, 0, centre)
    trunk_rgb = near(rng, (85, 70, 55), 15)
    mask = np.broadcast_to(trunk | crown, shape)
    colour = canvas.foliage(sl, mask, foliage_colour(rng)).copy()
    colour[np.broadcast_to(trunk & ~crown, shape)] = trunk_rgb
    canvas.paint(sl, mask, z, colour, TREE)


def draw_hedge(canvas: Canvas, x: float, z0: float, z1: float) -> None:
    """A hedge with a wavy top on the plane ``X = x`` from depth ``z0`` to ``z1``."""
    rng = canvas.rng
    height = rng.uniform(0.8, 2.0)
    grid = canvas.side_plane(x, z0, z1, height + 0.3)
    if grid is None:
        return
    sl, s, v, mask, depth = grid
    top = height + 0.12 * np.sin(s * 2.3 + rng.uniform(0, 6)) + 0.08 * np.sin(s * 5.1)
    mask = mask & (v <= top)
    canvas.paint(sl, mask, depth, canvas.foliage(sl, mask, foliage_colour(rng)), TREE)


def draw_fence(canvas: Canvas, x: float, z0: float, z1: float) -> None:
    """A railing, picket, chain-link or board fence on the plane ``X = x`` from ``z0`` to ``z1``."""
    rng = canvas.rng
    height = rng.uniform(0.9, 2.0)
    grid = canvas.side_plane(x, z0, z1, height)
    if grid is None:
        return
    sl, s, v, mask, depth = grid
    kind = rng.integers(4)
    post = np.mod(s, rng.uniform(1.5, 3.0)) < 0.12
    rails = (v >= height - 0.08) | (np.abs(v - rng.uniform(0.1, 0.4)) < 0.05)
    if kind == 0:  # railing with thin bars
        body = post | rails | (np.mod(s, rng.uniform(0.12, 0.25)) < 0.03)
        rgb = grey(rng, 20, 200, 8) if rng.random() < 0.7 else near(rng, (40, 80, 50), 10)
    elif kind == 1:  # wooden pickets
        body = post | rails | (np.mod(s, rng.uniform(0.12, 0.2)) < 0.08)
        rgb = near(rng, (125, 95, 65), 25) if rng.random() < 0.7 else grey(rng, 200, 240)
    elif kind == 2:  # chain-link mesh
        pitch = rng.uniform(0.12, 0.25)
        diagonal = (np.mod(s + v, pitch) < 0.02) | (np.mod(s - v, pitch) < 0.02)
        body = post | rails | diagonal
        rgb = grey(rng, 90, 180, 5)
    else:  # solid boards
        body = np.ones_like(mask)
        rgb = any_colour(rng) if rng.random() < 0.4 else near(rng, (110, 85, 60), 20)
    mask = mask & body
    colour = np.broadcast_to(rgb, (*mask.shape, 3)) * canvas.texture(sl, 0.06)
    if kind == 3:
        colour = colour * (1 - 0.15 * (np.mod(s, 0.15) < 0.02))[..., None]
    canvas.paint(sl, mask, depth, colour, FENCE)


def draw_pole(canvas: Canvas, x: float, z: float, kind: str, side: int) -> None:
    """A lamp post, sign post, traffic light or utility pole; arms reach over the road.

    Args:
        canvas: The scene.
        x: Position across the street in metres.
        z: Depth in metres.
        kind: ``"lamp"``, ``"sign"``, ``"light"`` or ``"utility"``.
        side: Side of the street it stands on (-1 left, +1 right); arms reach the other way.
    """
    rng = canvas.rng
    height = {"lamp": (6, 9), "sign": (2.2, 3.5), "light": (3, 5), "utility": (7, 10)}[kind]
    height = rng.uniform(*height)
    arm = rng.uniform(1.5, 5) if kind in ("lamp", "light") and rng.random() < 0.6 else 0.0
    reach = -side * arm
    grid = canvas.billboard(x, z, min(reach, 0) - 1, max(reach, 0) + 1, height + 0.8)
    if grid is None:
        return
    sl, u, v = grid
    min_half = 0.5 * z / canvas.rig.focal  # at least one pixel wide
    radius = max(rng.uniform(0.05, 0.12), min_half)
    mask = (np.abs(u) <= radius) & (v <= height)
    if arm:
        mask = mask | segment(u, v, (0, height - 0.3), (reach, height), max(0.08, min_half * 2))
    if kind == "lamp":
        mask = mask | ellipse(u, v, reach, height - 0.05, 0.35, 0.12)
    if kind == "utility":
        mask = mask | rect(u, v, -0.8, 0.8, height - 0.6, height - 0.5)
    rgb = near(rng, (95, 75, 55), 15) if kind == "utility" else grey(rng, 30, 170, 6)
    if rng.random() < 0.15:
        rgb = near(rng, (40, 80, 60), 10)
    canvas.paint(sl, mask, z, np.broadcast_to(rgb, (*mask.shape, 3)), POLE)
    if kind == "sign":
        _sign_plate(canvas, sl, u, v, z, height)
    elif kind == "light":
        _traffic_light(canvas, sl, u, v, z, reach if arm else 0.0, height)


def _sign_plate(canvas: Canvas, sl: Slice, u, v, z: float, top: float) -> None:
    """One or two round, triangular or rectangular plates below ``top`` on a sign post."""
    rng = canvas.rng
    parts = []
    for k in range(rng.integers(1, 3)):
        size = rng.uniform(0.5, 0.9)
        cv = top - size / 2 - k * (size + 0.15)
        shape = rng.integers(3)
        if shape == 0:
            outer = ellipse(u, v, 0, cv, size / 2, size / 2)
            inner = ellipse(u, v, 0, cv, size / 2.8, size / 2.8)
        elif shape == 1:
            outer = trapezoid(u, v, cv - size / 2, cv + size / 2, size / 2, 0.02)
            inner = trapezoid(u, v, cv - size / 3, cv + size / 4, size / 3, 0.02)
        else:
            w = size * rng.uniform(0.7, 1.6)
            outer = rect(u, v, -w / 2, w / 2, cv - size / 2, cv + size / 2)
            inner = rect(u, v, -w / 2 + 0.06, w / 2 - 0.06, cv - size / 2 + 0.06, cv + 0.4)
        rim = near(rng, (200, 30, 30), 20) if rng.random() < 0.5 else any_colour(rng)
        parts += [(outer, rim), (inner, grey(rng, 180, 245) if rng.random() < 0.6 else rim)]
    mask, colour = compose((v.shape[0], u.shape[1]), parts)
    canvas.paint(sl, mask, z, colour, SIGN)


def _traffic_light(canvas: Canvas, sl: Slice, u, v, z: float, cu: float, top: float) -> None:
    """A three-lamp traffic light hanging below ``top`` at ``cu``, one lamp lit."""
    rng = canvas.rng
    box = rect(u, v, cu - 0.17, cu + 0.17, top - 0.95, top - 0.05)
    body = grey(rng, 20, 60) if rng.random() < 0.8 else near(rng, (200, 170, 40), 15)
    parts = [(box, body)]
    lit = rng.integers(3)
    for k, rgb in enumerate(((230, 40, 30), (240, 170, 30), (40, 220, 110))):
        lamp = ellipse(u, v, cu, top - 0.2 - 0.28 * k, 0.1, 0.1)
        parts.append((lamp, np.asarray(rgb, np.float32) * (1.0 if k == lit else 0.35)))
    mask, colour = compose((v.shape[0], u.shape[1]), parts)
    canvas.paint(sl, mask, z, colour, SIGN)
