"""Sky and ground, the backdrop every scene is drawn on first.

:func:`draw_sky` fills the whole image (blue, overcast or hazy, with clouds) and returns the
colour at the horizon, which is also the scene's haze. :func:`draw_ground` paints the ground plane
below the horizon - road with lane markings and sometimes a crossing, kerbs, pavements with
joints, pavement or grass verges, and on sunny days a shadow over one side - and the depth of
every row.
"""

from __future__ import annotations

import numpy as np

from leanseg.data.synthetic.canvas import Canvas
from leanseg.data.synthetic.colours import as_rgb, grey, near
from leanseg.data.synthetic.labels import PAVEMENT, ROAD, TREE
from leanseg.data.synthetic.street import Street


def draw_sky(canvas: Canvas) -> np.ndarray:
    """Fill the image with sky; returns the colour at the horizon (used for haze)."""
    rng = canvas.rng
    kind = rng.choice(3, p=(0.4, 0.4, 0.2))
    if kind == 0:  # blue
        top = as_rgb((rng.uniform(50, 110), rng.uniform(100, 160), rng.uniform(175, 235)))
        horizon = near(rng, (185, 205, 228), 12)
    elif kind == 1:  # overcast grey
        base = grey(rng, 110, 200, 5)
        top, horizon = base - rng.uniform(0, 30), base + rng.uniform(0, 30)
    else:  # hazy white
        top, horizon = grey(rng, 190, 225, 4), grey(rng, 220, 250, 3)
    rows = np.arange(canvas.height, dtype=np.float32)
    t = np.clip(rows / max(canvas.rig.horizon, 1.0), 0, 1)
    canvas.image[:] = (top * (1 - t[:, None]) + horizon * t[:, None])[:, None, :]
    cloud = np.clip(1.4 * canvas.coarse + 0.3 * canvas.mid - rng.uniform(-0.3, 0.8), 0, 1)
    cloud_rgb = grey(rng, 150, 250, 4) if kind != 2 else grey(rng, 170, 210, 4)
    canvas.image += (cloud_rgb - canvas.image) * (0.8 * cloud)[..., None]
    return as_rgb(horizon)


def draw_ground(canvas: Canvas, street: Street, sunny: bool) -> None:
    """Road (lane markings, crossing), kerbs, pavements and verges below the horizon."""
    rig, rng = canvas.rig, canvas.rng
    y0 = int(np.floor(rig.horizon)) + 1
    if y0 >= canvas.height:
        return
    sl = (slice(y0, canvas.height), slice(0, canvas.width))
    z = rig.focal * rig.height / (np.arange(y0, canvas.height, dtype=np.float32) - rig.horizon)
    z = z[:, None]  # (h, 1)
    x = (np.arange(canvas.width, dtype=np.float32)[None, :] - rig.cx) * z / rig.focal
    rel = x - street.centre
    half = street.road_width / 2
    right = (rel > 0).astype(np.int64)
    walk = np.where(right == 1, street.sidewalk[1], street.sidewalk[-1])
    dist = np.abs(rel)
    # 0 road, 1/2 kerb left/right, 3/4 pavement left/right, 5/6 verge left/right
    region = np.where(dist < half, 0, np.where(dist < half + 0.25, 1, 3))
    region = np.where(dist >= half + walk, 5, region)
    region = np.where(region > 0, region + right, 0)

    road = grey(rng, 55, 140, 5)
    walks = [_pavement_colour(rng) for _ in range(2)]
    kerb = grey(rng, 120, 210, 4)
    verges = []
    for side in (-1, 1):
        grass = street.grass_verge[side]
        verges.append(near(rng, (85, 115, 55), 18) if grass else _pavement_colour(rng))
    colours = np.stack([road, kerb, kerb, *walks, *verges])
    grass_l, grass_r = street.grass_verge[-1], street.grass_verge[1]
    labels = np.array(
        [ROAD, PAVEMENT, PAVEMENT, PAVEMENT, PAVEMENT]
        + [TREE if grass_l else PAVEMENT, TREE if grass_r else PAVEMENT],
        np.uint8,
    )
    fine = np.array([0.05, 0.04, 0.04, 0.05, 0.05, 0.05, 0.05], np.float32)
    fine[5:] += 0.25 * np.array([grass_l, grass_r], np.float32)
    factor = 1 + fine[region] * canvas.fine[sl] + 0.08 * canvas.coarse[sl]
    factor += np.where(region >= 5, 0.2, 0.03) * canvas.mid[sl]
    image = colours[region] * factor[..., None]

    tile = rng.uniform(0.4, 1.2)
    joints = (np.mod(x, tile) < 0.04) | (np.mod(z, tile) < 0.04)
    image[joints & ((region == 3) | (region == 4))] *= 0.82
    marking = _markings(rng, rel, z, half, street)
    image[marking & (region == 0)] = grey(rng, 170, 235, 3) * rng.uniform(0.9, 1.0, 3)
    if sunny:
        side = int(rng.choice((-1, 1)))
        edge = half + street.sidewalk[side] - rng.uniform(0, street.road_width + 3)
        edge = edge + 3 * np.sin(z / rng.uniform(6, 20) + rng.uniform(0, 6))
        image[rel * side > edge] *= rng.uniform(0.45, 0.65)
    canvas.image[sl] = image
    canvas.label[sl] = labels[region]
    canvas.depth[sl] = z


def _pavement_colour(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.5:
        return grey(rng, 105, 200, 5)
    if k < 0.7:
        return near(rng, (150, 98, 88), 15)
    if k < 0.85:
        return near(rng, (178, 168, 142), 15)
    return grey(rng, 75, 110, 4)


def _markings(
    rng: np.random.Generator, rel: np.ndarray, z: np.ndarray, half: float, street: Street
):
    """Dashed lane lines, sometimes edge lines and a zebra crossing, over the ground grid."""
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
