"""COCO-Stuff 10k (Caesar et al., CVPR 2018), 171 classes: S&F Table 1's second benchmark.

Two layouts are read:

- **Official** (``cocostuff-10k-v1.1``): ``images/<name>.jpg``, ``annotations/<name>.mat`` (MATLAB
  files whose ``S`` array holds COCO ids: 0 = unlabelled, 1-91 things, 92-182 stuff) and the
  split lists ``imageLists/{train,test}.txt``. Reading ``.mat`` files needs ``scipy``.
- **Converted PNG**: ``images/<split>/*.jpg`` with ``annotations/<split>/<stem>.png`` already
  holding train ids 0..170 and 255 (what common conversion scripts write).

COCO ids map to train ids by dropping the 11 thing ids COCO never uses (12, 26, 29, 30, 45, 66,
68, 69, 71, 83, 91): 1..182 -> 0..170 in order, 0 -> 255.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, SampleFiles, check_label_values
from leanseg.data.datasets import (
    Transform,
    _check_size,
    _FileDataset,
    _list_images,
    _require_dir,
    _require_labels,
)
from leanseg.data.io import read_rgb

UNUSED_COCO_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)

COCOSTUFF_CLASSES: tuple[str, ...] = (
    # 80 things
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    # 91 stuff
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net",
    "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield",
    "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip


def coco_id_lut() -> np.ndarray:
    """``(256,)`` lookup from COCO-Stuff ids (0 unlabelled, 1..182) to train ids (0..170, 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    used = [i for i in range(1, 183) if i not in UNUSED_COCO_IDS]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


def read_mat_label(path: Path) -> np.ndarray:
    """The ``S`` array of an official COCO-Stuff 10k ``.mat`` annotation."""
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise DatasetError(
            f"{path}: reading COCO-Stuff .mat annotations needs scipy (pip install scipy), "
            "or convert them to PNG train ids (annotations/<split>/<name>.png)"
        ) from error
    return np.asarray(loadmat(str(path))["S"])


class COCOStuff10k(_FileDataset):
    """COCO-Stuff 10k: 9k train / 1k test images, 171 classes (see module docstring).

    Args:
        root: the dataset folder (holding ``images/`` and ``annotations/``).
        split: ``train`` or ``test`` (``val`` is accepted for ``test``).
        transform: applied to each sample by ``__getitem__``.
    """

    classes = COCOSTUFF_CLASSES
    label_lut = coco_id_lut()
    num_label_values = 183
    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "test": "test", "val": "test"}

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        self._official = False
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        if self.split not in self.SPLITS:
            raise DatasetError(
                f"COCO-Stuff 10k has no split {self.split!r}; valid: {', '.join(self.SPLITS)}"
            )
        split = self.SPLITS[self.split]
        listing = self.root / "imageLists" / f"{split}.txt"
        if listing.is_file():
            self._official = True
            names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            return _require_labels(
                [
                    SampleFiles(
                        n, self.root / "images" / f"{n}.jpg", self.root / "annotations" / f"{n}.mat"
                    )
                    for n in names
                ]
            )
        images = _list_images(_require_dir(self.root / "images" / split, "COCO-Stuff images"))
        labels = self.root / "annotations" / split
        return _require_labels([SampleFiles(p.stem, p, labels / f"{p.stem}.png") for p in images])

    def load_raw(self, index: int) -> Sample:
        """Read sample ``index``; official ``.mat`` labels go through :func:`read_mat_label`."""
        files = self.files[index]
        if files.label is None or files.label.suffix != ".mat":
            return super().load_raw(index)
        image = read_rgb(files.image)
        raw = read_mat_label(files.label)
        _check_size(files.image, image.shape[:2], files.label, "label", raw.shape)
        return {
            "image": image,
            "name": files.name,
            "label": self._convert_label(raw, files.label),
        }

    def _convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self._official:
            return super()._convert_label(raw, path)
        check_label_values(raw, len(self.classes), path)  # converted PNGs hold train ids
        return raw.astype(np.uint8)
