"""How widely the apparent size of each class varies across the synthetic scenes.

Depth-guided scale selection (thesis ch. 3) only has something to do on data where the same
class appears at many scales. For the scenes' fronto-parallel objects the apparent size in
pixels is ``f H_obj / Z = H_obj d / B`` (:mod:`.camera`): proportional to the disparity ``d``, so
the spread of disparity at a class's pixels is the spread of its apparent size (for the ground
and facades, whose depth varies within an object, it is the spread of the local scale).
:func:`disparity_by_class` measures it over many scenes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leanseg.data.synthetic.labels import CLASSES
from leanseg.data.synthetic.scene import generate_scene
from leanseg.data.synthetic.splits import scene_seed


@dataclass(frozen=True)
class ClassDisparity:
    """Disparity at the pixels of one class, pooled over scenes.

    Attributes:
        pixels: pixels of the class with valid (positive) disparity.
        scenes: scenes in which the class has such pixels.
        percentiles: ``{p: disparity}`` in pixels, over the class's pixels.
        spread: ratio of the highest to the lowest requested percentile (how many times larger
            the class appears at the one than at the other); NaN without pixels.
    """

    pixels: int
    scenes: int
    percentiles: dict[float, float]
    spread: float


def disparity_by_class(
    num_scenes: int = 50,
    size: tuple[int, int] = (128, 256),
    *,
    split: str = "train",
    seed: int = 0,
    percentiles: Sequence[float] = (5.0, 50.0, 95.0),
) -> dict[str, ClassDisparity]:
    """Per class, the distribution of disparity at its pixels over ``num_scenes`` scenes.

    Sky (disparity 0, unknown) has no pixels. Pixels are pooled, so a class's large near
    instances weigh more than its small far ones, as they do in a pixel-wise loss.

    Args:
        num_scenes: scenes ``0..num_scenes-1`` of ``split`` (as the dataset renders them).
        size: ``(height, width)`` of the scenes; disparity scales with the width.
        split: which split's scenes.
        seed: the dataset seed.
        percentiles: percentiles to report, ascending.
    """
    values: list[list[np.ndarray]] = [[] for _ in CLASSES]
    for index in range(num_scenes):
        scene = generate_scene(scene_seed(split, index, seed), size)
        label, disparity = scene["label"], scene["disparity"]
        valid = disparity > 0
        for class_id in range(len(CLASSES)):
            at_class = disparity[valid & (label == class_id)]
            if at_class.size:
                values[class_id].append(at_class)
    result = {}
    for class_id, name in enumerate(CLASSES):
        pooled = np.concatenate(values[class_id]) if values[class_id] else np.zeros(0, np.float32)
        if pooled.size:
            found = np.percentile(pooled, percentiles)
            table = {float(p): float(v) for p, v in zip(percentiles, found, strict=True)}
            spread = float(found[-1] / found[0])
        else:
            table = {float(p): float("nan") for p in percentiles}
            spread = float("nan")
        result[name] = ClassDisparity(int(pooled.size), len(values[class_id]), table, spread)
    return result
