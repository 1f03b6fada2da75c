"""ScanNet 2D frames (Dai et al., CVPR 2017) with the 20 classes of the ScanNet benchmark.

The indoor dataset of thesis chapter 5 (5.1.4). Layout of exported frames (ScanNet's
``scannet_frames_25k`` download and its frame exporter): ``<root>/<scene>/color/<frame>.jpg``
with ``<root>/<scene>/label/<frame>.png`` of the same frame number, scenes named like
``scene0000_00``. Splits are lists of scene names, one per line, as ScanNet publishes them
(``scannetv2_train.txt``, ``scannetv2_val.txt``).

Label PNGs here hold NYU40 ids (0 = unannotated, 1..40), as the ROB 2018 devkit writes them;
the benchmark keeps 20 of the 40 (:data:`SCANNET20_NYU40_IDS`) and ignores the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanseg.data.base import IGNORE_INDEX, DatasetError, SampleFiles, Transform
from leanseg.data.classes import bit_palette
from leanseg.data.datasets import _FileDataset, _list_images, _read_split_file, _require_labels

# The ScanNet semantic-labelling benchmark (v2): NYU40 id of each of its 20 classes, in its
# order, which is the train id order here.
SCANNET20_NYU40_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39,
)  # fmt: skip
SCANNET20_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip
NUM_NYU40_VALUES = 41  # 0 = unannotated, 1..40


def nyu40_to_scannet20_lut() -> np.ndarray:
    """``uint8 (256,)``: NYU40 id -> ScanNet-20 train id; 0 and the 20 unused ids -> 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS), dtype=np.uint8)
    return lut


class ScanNet(_FileDataset):
    """ScanNet frames, NYU40 labels read as the 20 benchmark classes.

    Sample names are ``<scene>_<frame>`` (``scene0000_00_000100``). Colour images and labels
    must have the same size (export the labels at the colour resolution).

    Args:
        root: The folder holding the scene folders.
        split: Split name; its scenes come from ``split_file``.
        transform: Applied to each sample by ``__getitem__``.
        split_file: Scene list of the split, relative to ``root``; ``{split}`` in it becomes the
            split name.
    """

    classes = SCANNET20_CLASSES
    palette = bit_palette(len(SCANNET20_CLASSES), offset=1)
    label_lut = nyu40_to_scannet20_lut()
    num_label_values = NUM_NYU40_VALUES

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        split_file: str = "scannetv2_{split}.txt",
    ) -> None:
        self.split_file = split_file
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        listing = self.root / self.split_file.format(split=self.split)
        scenes = _read_split_file(listing)
        files = []
        for scene in scenes:
            colour = self.root / scene / "color"
            if not colour.is_dir():
                raise DatasetError(
                    f"{listing}: scene {scene!r} has no colour frames (expected {colour})"
                )
            labels = self.root / scene / "label"
            files += [
                SampleFiles(f"{scene}_{p.stem}", p, labels / f"{p.stem}.png")
                for p in _list_images(colour)
            ]
        return _require_labels(files)


__all__ = [
    "SCANNET20_CLASSES",
    "SCANNET20_NYU40_IDS",
    "ScanNet",
    "nyu40_to_scannet20_lut",
]
