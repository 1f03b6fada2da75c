"""Datasets, the synthetic street scenes and joint transforms.

``build_dataset(cfg.data, split, train=...)`` is the one place a config becomes a dataset.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from torch.utils.data import Dataset

from leanseg.config import ConfigError, DataConfig, coerce
from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, SegmentationDataset
from leanseg.data.cocostuff import COCOStuff10k
from leanseg.data.colour_labels import ColourTable, colour_table, convert_colour_labels
from leanseg.data.datasets import (
    ADE20K,
    KITTI,
    VOC,
    CamVid,
    Cityscapes,
    Folder,
    folder_palette,
)
from leanseg.data.transforms import build_eval_transform, build_train_transform

# Name (``data.dataset``) -> dataset class. ``synthetic`` (SyntheticStreetScenes) is resolved
# by :func:`dataset_class` and imported only when asked for.
DATASETS: dict[str, type] = {
    "camvid": CamVid,
    "cityscapes": Cityscapes,
    "kitti": KITTI,
    "ade20k": ADE20K,
    "voc": VOC,
    "folder": Folder,
    "cocostuff10k": COCOStuff10k,
}
SYNTHETIC = "synthetic"
DATASET_NAMES: tuple[str, ...] = (*DATASETS, SYNTHETIC)

# Parameters set from other config keys (``data.root``, ``data.classes`` ...), never from options.
_RESERVED = {"self", "root", "split", "transform", "classes", "label_colors", "unknown_colors"}


def dataset_class(name: str) -> type:
    """The dataset class registered under ``name``.

    Raises:
        ConfigError: naming ``data.dataset`` and listing the valid names.
    """
    if name == SYNTHETIC:
        from leanseg.data.synthetic import SyntheticStreetScenes

        return SyntheticStreetScenes
    if name not in DATASETS:
        raise ConfigError(
            f"data.dataset: unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}"
        )
    return DATASETS[name]


def _check_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the dataset's keyword arguments: names and types.

    Returns:
        The options with their values coerced like config values (YAML lists to tuples ...).
    """
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    valid = [
        name
        for name, p in params.items()
        if name not in _RESERVED and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except NameError:  # an annotation that does not resolve at run time: names only
        hints = {}
    checked = {}
    for key, value in options.items():
        if key not in valid:
            hint = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            if key in _RESERVED:
                hint = f"set data.{key} instead"
            raise ConfigError(
                f"data.options.{key}: not an option of dataset {cls.__name__}; {hint}"
            )
        try:
            checked[key] = coerce(value, hints.get(key, Any), f"data.options.{key}")
        except TypeError:  # a type config values do not spell (Path, Sequence): left to the class
            checked[key] = value
    return checked


def build_dataset(data_cfg: DataConfig, split: str, *, train: bool) -> Dataset:
    """Build the dataset named by ``data_cfg.dataset`` with its transform attached.

    Args:
        data_cfg: The ``data`` section of a run config; ``options`` become keyword arguments
            of the dataset class, ``classes`` is passed to the ``folder`` dataset.
        split: Split name, usually ``data_cfg.train_split`` or ``data_cfg.val_split``.
        train: Attach :func:`build_train_transform` (random augmentation and crops) when true,
            else :func:`build_eval_transform` (full images as tensors).

    Raises:
        ConfigError: for an unknown dataset name or option, or a missing ``data.root`` /
            ``data.classes``.
        DatasetError: when the files cannot be listed (missing root, split or label files).
    """
    cls = dataset_class(data_cfg.dataset)
    options = _check_options(cls, dict(data_cfg.options))
    if data_cfg.label_colors is not None and cls is not Folder:
        raise ConfigError(
            f"data.label_colors: colour-mask labels are read by the folder dataset only, not by "
            f"{data_cfg.dataset!r}"
        )
    transform = build_train_transform(data_cfg) if train else build_eval_transform(data_cfg)
    if data_cfg.dataset == SYNTHETIC:
        if data_cfg.root is not None:
            options["root"] = data_cfg.root
        return cls(split=split, transform=transform, **options)
    if data_cfg.root is None:
        raise ConfigError(
            f"data.root: dataset {data_cfg.dataset!r} reads files, so data.root must name its "
            "folder (only 'synthetic' works without one)"
        )
    if cls is Folder:
        options["classes"] = _folder_classes(data_cfg)
        if data_cfg.label_colors is not None:
            options["label_colors"] = colour_table(data_cfg)
            options["unknown_colors"] = data_cfg.unknown_colors
    return cls(data_cfg.root, split, transform, **options)


def _folder_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    if not data_cfg.classes:
        raise ConfigError("data.classes: the folder dataset needs its list of class names")
    return tuple(data_cfg.classes)


def dataset_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    """Class names (index = train id) of the configured dataset, without reading any file."""
    if data_cfg.dataset == "folder":
        return _folder_classes(data_cfg)
    if data_cfg.dataset == SYNTHETIC:
        from leanseg.data.synthetic import CLASSES

        return tuple(CLASSES)
    return tuple(dataset_class(data_cfg.dataset).classes)


def dataset_palette(data_cfg: DataConfig) -> tuple[tuple[int, int, int], ...]:
    """RGB colour per class of the configured dataset, without reading any file."""
    if data_cfg.dataset == "folder":
        palette = data_cfg.options.get("palette")
        if palette is None and data_cfg.label_colors is not None:
            palette = colour_table(data_cfg).display_palette()
        try:
            return folder_palette(_folder_classes(data_cfg), palette)
        except DatasetError as err:
            raise ConfigError(f"data.options.palette: {err}") from None
    if data_cfg.dataset == SYNTHETIC:
        from leanseg.data.synthetic import PALETTE

        return tuple((int(r), int(g), int(b)) for r, g, b in PALETTE)
    return tuple(dataset_class(data_cfg.dataset).palette)


__all__ = [
    "ADE20K",
    "ColourTable",
    "DATASETS",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "KITTI",
    "VOC",
    "CamVid",
    "Cityscapes",
    "DatasetError",
    "Folder",
    "Sample",
    "SegmentationDataset",
    "build_dataset",
    "colour_table",
    "convert_colour_labels",
    "dataset_class",
    "dataset_classes",
    "dataset_palette",
]
