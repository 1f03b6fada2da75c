"""One street scene from one seed: the order in which a scene is drawn, and the sample it gives."""

from __future__ import annotations

import numpy as np

from leanseg.data.base import Sample
from leanseg.data.synthetic.buildings import draw_skyline
from leanseg.data.synthetic.camera import draw_rig
from leanseg.data.synthetic.canvas import Canvas
from leanseg.data.synthetic.ground import draw_ground, draw_sky
from leanseg.data.synthetic.layout import place_roadside, place_street_furniture, place_traffic
from leanseg.data.synthetic.maps import disparity_map, renumber_instances
from leanseg.data.synthetic.street import Street

# Bumped whenever a seed renders a different scene, so cached copies on disk are rewritten.
GENERATOR_VERSION = 1


def generate_scene(seed: int, size: tuple[int, int] = (512, 1024)) -> Sample:
    """Render one street scene, deterministically from ``seed``.

    The camera, the street and every object are drawn from one ``numpy.random.default_rng(seed)``
    in a fixed order: camera, canvas noise, street, sky, ground, skyline, each side of the
    street, street furniture, traffic, then the image's finish. Changing that order changes what
    a seed renders (bump :data:`GENERATOR_VERSION`).

    Args:
        seed: Seed of ``numpy.random.default_rng``; equal seeds give identical samples.
        size: ``(height, width)`` in pixels, at least 8 x 8.

    Returns:
        A :data:`~leanseg.data.base.Sample` with ``image`` (uint8 H x W x 3), ``label``
        (uint8 H x W, every pixel in 0..10), ``instance`` (int32, ``class_id * 1000 + index``
        for cars, pedestrians and cyclists, 0 elsewhere), ``disparity`` (float32, pixels, 0 for
        sky) and ``name`` ``synthetic_<seed>``.
    """
    height, width = size
    if height < 8 or width < 8:
        raise ValueError(f"scene size must be at least 8 x 8, got {size}")
    rng = np.random.default_rng(seed)
    rig = draw_rig(rng, size)
    canvas = Canvas(rng, rig, (height, width))
    street = Street.draw(rng)
    sunny = bool(rng.random() < 0.4)
    haze = draw_sky(canvas)
    draw_ground(canvas, street, sunny)
    if rng.random() < 0.6:
        draw_skyline(canvas, haze)
    for side in (-1, 1):
        place_roadside(canvas, street, side, sunny)
    place_street_furniture(canvas, street)
    place_traffic(canvas, street)

    image = canvas.finish(haze)
    return {
        "image": image,
        "label": canvas.label,
        "instance": renumber_instances(canvas.instance),
        "disparity": disparity_map(rig, canvas.depth),
        "name": f"synthetic_{seed:06d}",
    }
