"""Driving datasets of thesis chapter 5: WildDash 1, Berkeley DeepDrive and Mapillary Vistas.

Each reads its published layout (below) into the sample contract of :mod:`leanseg.data.base`;
wrong layouts raise :class:`DatasetError` naming the folder or file that is missing or bad.

- **WildDash 1** (Zendel et al. 2018): the archive ``wd_val_01.zip`` unpacks to one flat folder
  ``wd_val_01/`` of images ``<name>.png`` (or ``.jpg``) beside ``<name>_labelIds.png``
  (Cityscapes label ids) and, where given, ``<name>_instanceIds.png``; ``wd_bench_01/`` holds
  the unlabelled test images. Labels follow the Cityscapes labelling policy.
- **Berkeley DeepDrive** (Yu et al. 2020), the 10k segmentation set: ``images/10k/<split>/*.jpg``
  with ``labels/sem_seg/masks/<split>/<stem>.png`` holding the 19 Cityscapes train ids and 255.
- **Mapillary Vistas** (Neuhold et al. 2017): ``<split dir>/images/*.jpg`` with
  ``<split dir>/<version>/labels/<stem>.png`` (palette PNGs whose indices are label ids) for the
  split folders ``training``, ``validation`` and ``testing``; the classes, their order and their
  colours come from ``config_<version>.json`` beside them (65 evaluated classes + "Unlabeled"
  in v1.2, 124 in v2.0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from leanseg.data.base import IGNORE_INDEX, DatasetError, SampleFiles, Transform
from leanseg.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    NUM_CITYSCAPES_LABEL_IDS,
    Colour,
)
from leanseg.data.datasets import (
    IMAGE_SUFFIXES,
    _FileDataset,
    _list_images,
    _require_dir,
    _require_labels,
    _resolve_root,
)

# Cityscapes instance ids are ``class_id * 1000 + index``; smaller values carry no instance.
_INSTANCE_BASE = 1000

# --------------------------------------------------------------------------------------------
# WildDash 1
# --------------------------------------------------------------------------------------------

# Files beside the images in a WildDash folder that are ground truth, not images.
WILDDASH_GT_SUFFIXES = ("_labelIds", "_instanceIds", "_labelTrainIds", "_color", "_panoptic")


class WildDash(_FileDataset):
    """WildDash 1 (Zendel et al., ECCV 2018): hazardous driving scenes, Cityscapes labels.

    Label ids map to the 19 Cityscapes train ids as Cityscapes' do. Void handling: every id
    without a train id (unlabelled, ego vehicle, out of ROI, static, dynamic, ground, ...) and
    the value 255 becomes the ignore label, so WildDash's void regions, which its benchmark scores
    as correct whatever is predicted there, are neither trained on nor scored. Whole-image
    negatives (all void) therefore contribute no pixels; their foreign-class predictions are
    what thesis 5.3.3 examines. A Void prediction on a labelled pixel is scored by
    ``SegmentationMetric(void_index=...)`` (thesis 5.3.1).

    Args:
        root: The folder holding ``wd_val_01/`` (and ``wd_bench_01/``), or ``wd_val_01`` itself.
        split: ``val`` (70 labelled images) or ``test`` (``wd_bench_01``, unlabelled: every
            pixel ignored).
        transform: Applied to each sample by ``__getitem__``.
        instances: Load ``<name>_instanceIds.png`` as ``instance`` where it exists.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    label_lut = CITYSCAPES_ID_TO_TRAINID
    num_label_values = NUM_CITYSCAPES_LABEL_IDS
    SPLIT_DIRS: ClassVar[dict[str, str]] = {"val": "wd_val_01", "test": "wd_bench_01"}

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        instances: bool = True,
    ) -> None:
        self.load_instances = instances
        root = Path(root)
        if root.name in self.SPLIT_DIRS.values():  # pointed at a split folder itself
            root = root.parent
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        if self.split not in self.SPLIT_DIRS:
            raise DatasetError(
                f"WildDash has no split {self.split!r}; valid: {', '.join(self.SPLIT_DIRS)}"
            )
        folder = _require_dir(self.root / self.SPLIT_DIRS[self.split], "WildDash split folder")
        labelled = self.split == "val"
        files = []
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if image.stem.endswith(WILDDASH_GT_SUFFIXES):
                continue
            instance = folder / f"{image.stem}_instanceIds.png"
            files.append(
                SampleFiles(
                    name=image.stem,
                    image=image,
                    label=folder / f"{image.stem}_labelIds.png" if labelled else None,
                    instance=instance if self.load_instances and instance.is_file() else None,
                )
            )
        return _require_labels(files)

    def _convert_instance(self, raw: np.ndarray) -> np.ndarray:
        instance = raw.astype(np.int32)
        return np.where(instance >= _INSTANCE_BASE, instance, 0).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Berkeley DeepDrive
# --------------------------------------------------------------------------------------------


class BDD100K(_FileDataset):
    """Berkeley DeepDrive segmentation, the 10k-image set (Yu et al., CVPR 2020).

    ``images/10k/<split>/*.jpg`` with ``labels/sem_seg/masks/<split>/<stem>.png`` holding the
    19 Cityscapes train ids (0..18) and 255 for unlabelled pixels, read as they are. Thesis Table
    5.3 evaluates a Cityscapes model on its val split without training on it.

    Args:
        root: The ``bdd100k`` folder holding ``images/`` and ``labels/``.
        split: ``train`` (7000), ``val`` (1000) or ``test`` (2000, unlabelled: every pixel
            ignored).
        transform: Applied to each sample by ``__getitem__``.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        super().__init__(_resolve_root(root, "bdd100k"), split, transform)

    def _list_files(self) -> list[SampleFiles]:
        images = _list_images(
            _require_dir(self.root / "images" / "10k" / self.split, f"BDD split {self.split!r}")
        )
        masks = self.root / "labels" / "sem_seg" / "masks" / self.split
        if self.split == "test" and not masks.is_dir():
            return [SampleFiles(p.stem, p, None) for p in images]
        _require_dir(masks, f"BDD label folder of split {self.split!r}")
        return _require_labels([SampleFiles(p.stem, p, masks / f"{p.stem}.png") for p in images])


# --------------------------------------------------------------------------------------------
# Mapillary Vistas
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VistasLabels:
    """What a Vistas ``config_<version>.json`` says about its labels.

    Attributes:
        classes: names of the evaluated labels, in file order; index = train id.
        palette: their colours.
        lut: ``uint8 (256,)``, label id -> train id (255 for labels not evaluated and for ids
            the config does not list).
        num_label_values: how many label ids the config lists.
    """

    classes: tuple[str, ...]
    palette: tuple[Colour, ...]
    lut: np.ndarray
    num_label_values: int


def vistas_config_path(root: str | Path, version: str = "v1.2") -> Path:
    """``root/config_<version>.json``."""
    return Path(root) / f"config_{version}.json"


def read_vistas_labels(path: str | Path, names: str = "readable") -> VistasLabels:
    """Parse a Mapillary Vistas config file (JSON, never evaluated as code).

    The file holds ``{"labels": [{"name", "readable", "color", "evaluate", ...}, ...]}``; a
    label's position is its id in the label PNGs. Labels with ``"evaluate": false`` (v1.2:
    "Unlabeled") become the ignore label; the others are the classes, in file order.

    Args:
        path: the ``config_<version>.json`` file.
        names: the field that names a class: ``readable`` ("Car", so that union label spaces
            merge it with Cityscapes' ``car`` by name) or ``name`` (``object--vehicle--car``).

    Raises:
        DatasetError: naming the file, when it is missing or not JSON, lacks a ``labels``
            list, or a label lacks a name or a three-number colour, or two classes share a name
            (compared without case, as union label spaces compare them).
    """
    path = Path(path)
    if names not in ("readable", "name"):
        raise DatasetError(f"Vistas class names come from 'readable' or 'name', not {names!r}")
    if not path.is_file():
        raise DatasetError(f"Mapillary Vistas config not found: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a JSON file ({err})") from None
    labels = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(labels, list) or not labels:
        raise DatasetError(f"{path}: expected a non-empty list under the key 'labels'")
    if len(labels) > IGNORE_INDEX:
        raise DatasetError(f"{path}: {len(labels)} labels do not fit 8-bit label files")
    classes: list[str] = []
    palette: list[Colour] = []
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    seen: dict[str, int] = {}
    for label_id, label in enumerate(labels):
        name = label.get(names) if isinstance(label, dict) else None
        colour = label.get("color") if isinstance(label, dict) else None
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{path}: label {label_id} has no string field {names!r}")
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        ):
            raise DatasetError(f"{path}: label {label_id} ({name}) has no colour [r, g, b]")
        if not label.get("evaluate", True):
            continue
        if name.lower() in seen:
            raise DatasetError(
                f"{path}: labels {seen[name.lower()]} and {label_id} share the name {name!r}; "
                "use the other naming field (option names)"
            )
        seen[name.lower()] = label_id
        lut[label_id] = len(classes)
        classes.append(name)
        palette.append((colour[0], colour[1], colour[2]))
    return VistasLabels(tuple(classes), tuple(palette), lut, len(labels))


class MapillaryVistas(_FileDataset):
    """Mapillary Vistas (Neuhold et al., ICCV 2017), classes from its config JSON.

    Args:
        root: The folder holding ``config_<version>.json`` and ``training/``, ``validation/``.
        split: ``train`` / ``val`` / ``test`` or the folder names ``training`` /
            ``validation`` / ``testing`` (test is unlabelled: every pixel ignored).
        transform: Applied to each sample by ``__getitem__``.
        version: The label version: ``v1.2`` or ``v2.0`` (its config file and label folder).
        names: The config field naming the classes (:func:`read_vistas_labels`).
    """

    SPLIT_DIRS: ClassVar[dict[str, str]] = {
        "train": "training",
        "val": "validation",
        "test": "testing",
        "training": "training",
        "validation": "validation",
        "testing": "testing",
    }

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        version: str = "v1.2",
        names: str = "readable",
    ) -> None:
        self.version = version
        labels = read_vistas_labels(vistas_config_path(root, version), names)
        self.classes = labels.classes
        self.palette = labels.palette
        self.label_lut = labels.lut
        self.num_label_values = labels.num_label_values
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        if self.split not in self.SPLIT_DIRS:
            raise DatasetError(
                f"Mapillary Vistas has no split {self.split!r}; valid: {', '.join(self.SPLIT_DIRS)}"
            )
        folder = self.root / self.SPLIT_DIRS[self.split]
        images = _list_images(_require_dir(folder / "images", "Mapillary Vistas images"))
        labels = folder / self.version / "labels"
        if self.SPLIT_DIRS[self.split] == "testing" and not labels.is_dir():
            return [SampleFiles(p.stem, p, None) for p in images]
        _require_dir(labels, f"Mapillary Vistas {self.version} labels")
        return _require_labels([SampleFiles(p.stem, p, labels / f"{p.stem}.png") for p in images])


__all__ = [
    "BDD100K",
    "MapillaryVistas",
    "VistasLabels",
    "WildDash",
    "read_vistas_labels",
    "vistas_config_path",
]
