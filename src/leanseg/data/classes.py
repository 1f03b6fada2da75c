"""Class tables of the supported datasets: names, colours and label-id lookup tables.

Every table lists train ids in order, so ``CLASSES[k]`` is the name of train id ``k`` and
``PALETTE[k]`` its RGB colour; the ignore label 255 has no entry. Lookup tables (LUTs) are
256-entry ``uint8`` arrays indexed by the value stored in a label file, so a whole label map is
converted with one ``lut[label]``.

KITTI semantics uses the Cityscapes label ids and train ids, so it shares the Cityscapes tables.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from leanseg.data.base import IGNORE_INDEX

Colour = tuple[int, int, int]


def bit_palette(num_colours: int, offset: int = 0) -> tuple[Colour, ...]:
    """Deterministic, well-separated colours: the Pascal VOC bit-interleaving colour map.

    Colour ``i`` spreads the bits of ``i + offset`` over the high bits of R, G and B (bit 0 to
    R, bit 1 to G, bit 2 to B, the next three bits one position lower, and so on), so
    consecutive ids get clearly different colours. With ``offset=0`` the first 21 colours are
    exactly the Pascal VOC 2012 palette.

    Args:
        num_colours: How many colours to make.
        offset: Index of the first colour in the colour map; 1 skips black.

    Returns:
        ``num_colours`` RGB triples.
    """
    ids = np.arange(offset, offset + num_colours, dtype=np.int64)
    rgb = np.zeros((num_colours, 3), dtype=np.int64)
    for shift in range(8):  # 8 groups of 3 bits, enough for 2**24 colours
        bits = ids >> (3 * shift)
        for channel in range(3):
            rgb[:, channel] |= ((bits >> channel) & 1) << (7 - shift)
    return tuple((int(r), int(g), int(b)) for r, g, b in rgb)


def identity_lut(void_values: tuple[int, ...] = ()) -> np.ndarray:
    """A 256-entry ``uint8`` LUT mapping ``k -> k`` except ``void_values -> 255``.

    Values outside the class range are kept, so that
    :func:`leanseg.data.base.check_label_values` still reports them after the lookup.
    """
    lut = np.arange(256, dtype=np.uint8)
    lut[list(void_values)] = IGNORE_INDEX
    return lut


# --------------------------------------------------------------------------------------------
# CamVid, 11 classes as in the SegNet preprocessing (Brostow et al. 2008; Badrinarayanan et al.)
# --------------------------------------------------------------------------------------------

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
# The SegNet tutorial colours (its ``class_colours_camvid11.png`` key).
CAMVID_PALETTE: tuple[Colour, ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
# Value 11 in the SegNet annotation files is "Unlabelled" (void).
CAMVID_VOID = 11
CAMVID_LUT: np.ndarray = identity_lut((CAMVID_VOID,))


# --------------------------------------------------------------------------------------------
# Cityscapes (Cordts et al. 2016): 34 label ids -> 19 train ids
# --------------------------------------------------------------------------------------------


class CityscapesLabel(NamedTuple):
    """One row of the Cityscapes label table (``cityscapesscripts/helpers/labels.py``)."""

    name: str
    id: int
    train_id: int
    colour: Colour


# The license plate (id -1) is left out: it is not a label id that occurs in ``labelIds`` files
# as a distinct class, and its train id is 255 like every other unused id.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
)
NUM_CITYSCAPES_LABEL_IDS = len(CITYSCAPES_LABELS)

_CITYSCAPES_TRAIN = sorted(
    (label for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX),
    key=lambda label: label.train_id,
)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(label.name for label in _CITYSCAPES_TRAIN)
CITYSCAPES_PALETTE: tuple[Colour, ...] = tuple(label.colour for label in _CITYSCAPES_TRAIN)


def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.train_id
    return lut


# Label id (as stored in ``*_gtFine_labelIds.png``) -> train id; unused ids -> 255.
CITYSCAPES_ID_TO_TRAINID: np.ndarray = _cityscapes_lut()

# KITTI semantics (Abu Alhaija et al. 2018) follows the Cityscapes label ids.
KITTI_CLASSES = CITYSCAPES_CLASSES
KITTI_PALETTE = CITYSCAPES_PALETTE
KITTI_ID_TO_TRAINID = CITYSCAPES_ID_TO_TRAINID


# --------------------------------------------------------------------------------------------
# ADE20K SceneParsing (Zhou et al. 2017): 150 classes, file value 0 = "other" (ignored)
# --------------------------------------------------------------------------------------------

ADE20K_CLASSES: tuple[str, ...] = (
    # Short names of ``objectInfo150.csv``, in its order (file value k -> train id k - 1).
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
# Not the MIT colour table: the VOC bit colour map from its second entry, so no class is black.
ADE20K_PALETTE: tuple[Colour, ...] = bit_palette(len(ADE20K_CLASSES), offset=1)


def _ade20k_lut() -> np.ndarray:
    # File value 0 ("other") -> 255, k -> k - 1; 255 stays 255 so the LUT is total.
    lut = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
    lut[0] = IGNORE_INDEX
    lut[255] = IGNORE_INDEX
    return lut


ADE20K_LUT: np.ndarray = _ade20k_lut()


# --------------------------------------------------------------------------------------------
# Pascal VOC 2012 (Everingham et al. 2010): 20 object classes + background
# --------------------------------------------------------------------------------------------

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# The palette stored in the VOC ``SegmentationClass`` PNGs.
VOC_PALETTE: tuple[Colour, ...] = bit_palette(len(VOC_CLASSES))
