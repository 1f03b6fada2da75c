"""Classes of the synthetic scenes: CamVid's 11, with CamVid's ids and colours."""

from __future__ import annotations

from leanseg.data.classes import CAMVID_CLASSES, CAMVID_PALETTE

# The same 11 classes, ids and colours as CamVid (SegNet layout), so models move between them.
CLASSES: tuple[str, ...] = CAMVID_CLASSES
PALETTE: tuple[tuple[int, int, int], ...] = CAMVID_PALETTE
# Label ids, indices into ``CLASSES``.
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
# Classes whose objects get instance ids ``class_id * 1000 + index``.
THING_CLASSES: tuple[int, ...] = (CAR, PEDESTRIAN, BICYCLIST)
