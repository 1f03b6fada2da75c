"""Datasets, the synthetic street scenes and joint transforms.

``build_dataset(cfg.data, split, train=...)`` is the one place a config becomes a dataset. With
``data.datasets`` (several datasets in one run, thesis ch. 5) it is a :class:`MixedDataset` of
every entry's split, labels remapped into the union label space (:func:`union_label_space`).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from torch.utils.data import Dataset

from leanseg.config import ConfigError, DataConfig, DatasetEntry, coerce
from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, SegmentationDataset
from leanseg.data.classes import bit_palette
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
from leanseg.data.driving import (
    BDD100K,
    MapillaryVistas,
    VistasLabels,
    WildDash,
    read_vistas_labels,
    vistas_config_path,
)
from leanseg.data.label_info import DatasetClasses
from leanseg.data.multi import MixedDataset, MixedSampler, UnionLabels
from leanseg.data.scannet import ScanNet
from leanseg.data.transforms import build_eval_transform, build_train_transform
from leanseg.data.union import DatasetLabels, UnionLabelSpace, build_union

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
    "wilddash": WildDash,
    "scannet": ScanNet,
    "bdd100k": BDD100K,
    "vistas": MapillaryVistas,
}
SYNTHETIC = "synthetic"
VISTAS = "vistas"
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


# ``data.train_split: train+val`` reads several splits as one.
SPLIT_JOIN = "+"


def build_dataset(data_cfg: DataConfig, split: str, *, train: bool) -> Dataset:
    """Build the dataset named by ``data_cfg.dataset`` with its transform attached.

    Args:
        data_cfg: The ``data`` section of a run config; ``options`` become keyword arguments
            of the dataset class, ``classes`` is passed to the ``folder`` dataset.
        split: Split name, usually ``data_cfg.train_split`` or ``data_cfg.val_split``. Splits
            joined by ``+`` (``train+val``) are read as one dataset: the papers' protocol for a
            final model, trained on train and val together once the recipe is fixed on val.
        train: Attach :func:`build_train_transform` (random augmentation and crops) when true,
            else :func:`build_eval_transform` (full images as tensors).

    Raises:
        ConfigError: for an unknown dataset name or option, or a missing ``data.root`` /
            ``data.classes``.
        DatasetError: when the files cannot be listed (missing root, split or label files).
    """
    if data_cfg.datasets is not None:
        return _build_mixed(data_cfg, split, train=train)
    cls = dataset_class(data_cfg.dataset)
    options = _check_options(cls, dict(data_cfg.options))
    if data_cfg.label_colors is not None and cls is not Folder:
        raise ConfigError(
            f"data.label_colors: colour-mask labels are read by the folder dataset only, not by "
            f"{data_cfg.dataset!r}"
        )
    transform = build_train_transform(data_cfg) if train else build_eval_transform(data_cfg)
    if data_cfg.dataset == SYNTHETIC:
        if SPLIT_JOIN in split:
            raise ConfigError(
                f"split {split!r}: the synthetic scenes have no files to join; name one split"
            )
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
    first, *others = split.split(SPLIT_JOIN)
    dataset = cls(data_cfg.root, first, transform, **options)
    for other in others:
        # The files of every split, in order; the class table and reader are the first's.
        dataset.files = [*dataset.files, *cls(data_cfg.root, other, None, **options).files]
        dataset.split = split
    return dataset


def entry_config(data_cfg: DataConfig, entry: DatasetEntry) -> DataConfig:
    """The single-dataset ``data`` section of one entry of ``data.datasets``.

    The entry's own keys (dataset, root, splits, options, classes, colours) replace those of
    ``data_cfg``; transforms, batch size and loader settings are ``data_cfg``'s, shared.
    """
    return dataclasses.replace(
        data_cfg,
        dataset=entry.dataset,
        root=entry.root,
        train_split=entry.train_split or data_cfg.train_split,
        val_split=entry.val_split or data_cfg.val_split,
        options=dict(entry.options),
        classes=entry.classes,
        label_colors=entry.label_colors,
        unknown_colors=entry.unknown_colors,
        datasets=None,
        union=None,
    )


def entry_split(data_cfg: DataConfig, entry: DatasetEntry, split: str) -> str:
    """The entry's name for ``split``: ``data.train_split`` / ``data.val_split`` are roles that
    each entry may name differently; any other split name is used as it is."""
    if split == data_cfg.train_split:
        return entry.train_split or split
    if split == data_cfg.val_split:
        return entry.val_split or split
    return split


def _entries(data_cfg: DataConfig) -> list[tuple[int, DatasetEntry, DataConfig]]:
    return [(i, e, entry_config(data_cfg, e)) for i, e in enumerate(data_cfg.datasets or [])]


def _in_entry(index: int, entry: DatasetEntry, err: ConfigError) -> ConfigError:
    """A single-dataset config error, re-worded to name the entry of ``data.datasets``."""
    text = str(err).replace("data.", f"data.datasets[{index}].", 1)
    return ConfigError(f"{text} (dataset {entry.key!r})")


def union_label_space(data_cfg: DataConfig) -> UnionLabelSpace:
    """The union label space of ``data.datasets`` (:mod:`leanseg.data.union`).

    Raises:
        ConfigError: naming the key, when ``data.datasets`` is not set or the union is invalid.
    """
    if data_cfg.datasets is None:
        raise ConfigError("data.datasets: a union label space needs several datasets")
    classes = {}
    for index, entry, single in _entries(data_cfg):
        try:
            classes[entry.key] = dataset_classes(single)
        except ConfigError as err:
            raise _in_entry(index, entry, err) from None
    return build_union(data_cfg.union, classes)


def _build_mixed(data_cfg: DataConfig, split: str, *, train: bool) -> MixedDataset:
    space = union_label_space(data_cfg)
    parts = []
    for index, entry, single in _entries(data_cfg):
        try:
            dataset = build_dataset(single, entry_split(data_cfg, entry, split), train=train)
        except ConfigError as err:
            raise _in_entry(index, entry, err) from None
        parts.append(UnionLabels(dataset, space.datasets[entry.key], partial=train))
    entries = data_cfg.datasets or []
    return MixedDataset(parts, [e.key for e in entries], [e.weight for e in entries])


def _folder_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    if not data_cfg.classes:
        raise ConfigError("data.classes: the folder dataset needs its list of class names")
    return tuple(data_cfg.classes)


def dataset_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    """Class names (index = train id) of the configured dataset, without reading any file;
    with ``data.datasets``, the union label space's classes."""
    if data_cfg.datasets is not None:
        return union_label_space(data_cfg).classes
    if data_cfg.dataset == "folder":
        return _folder_classes(data_cfg)
    if data_cfg.dataset == SYNTHETIC:
        from leanseg.data.synthetic import CLASSES

        return tuple(CLASSES)
    if data_cfg.dataset == VISTAS:
        return _vistas_labels(data_cfg).classes
    return tuple(dataset_class(data_cfg.dataset).classes)


def resolve_classes(data_cfg: DataConfig) -> DatasetClasses:
    """The configured dataset's classes, palette and ignore value, and with
    ``data.union.partial_labels`` the union's label-set mask: all a model is built from."""
    mask = None
    if data_cfg.union is not None and data_cfg.union.partial_labels:
        mask = union_label_space(data_cfg).label_set_mask()
    return DatasetClasses(
        classes=dataset_classes(data_cfg),
        palette=dataset_palette(data_cfg),
        ignore_index=data_cfg.ignore_index,
        label_set_mask=mask,
    )


def dataset_palette(data_cfg: DataConfig) -> tuple[tuple[int, int, int], ...]:
    """RGB colour per class of the configured dataset, without reading any file; with
    ``data.datasets``, each union class takes the colour of the first dataset class in it."""
    if data_cfg.datasets is not None:
        return _union_palette(data_cfg)
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
    if data_cfg.dataset == VISTAS:
        return _vistas_labels(data_cfg).palette
    return tuple(dataset_class(data_cfg.dataset).palette)


def _vistas_labels(data_cfg: DataConfig) -> VistasLabels:
    """The classes of a Vistas config: the one dataset whose class list is a file
    (``config_<version>.json`` under ``data.root``), read here."""
    if data_cfg.root is None:
        raise ConfigError("data.root: the Vistas classes are read from its config_<version>.json")
    options = _check_options(MapillaryVistas, dict(data_cfg.options))
    path = vistas_config_path(data_cfg.root, options.get("version", "v1.2"))
    return read_vistas_labels(path, options.get("names", "readable"))


def _union_palette(data_cfg: DataConfig) -> tuple[tuple[int, int, int], ...]:
    space = union_label_space(data_cfg)
    colours: list[tuple[int, int, int] | None] = [None] * len(space.classes)
    for _, entry, single in _entries(data_cfg):
        palette = dataset_palette(single)
        lut = space.datasets[entry.key].to_dataset
        for u in range(len(space.classes)):
            if colours[u] is None and lut[u] != IGNORE_INDEX:
                colours[u] = palette[lut[u]]
    spare = iter(bit_palette(len(space.classes)))
    return tuple(colour if colour is not None else next(spare) for colour in colours)


__all__ = [
    "ADE20K",
    "BDD100K",
    "ColourTable",
    "DATASETS",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "KITTI",
    "MapillaryVistas",
    "ScanNet",
    "VOC",
    "CamVid",
    "Cityscapes",
    "DatasetError",
    "DatasetClasses",
    "DatasetLabels",
    "Folder",
    "MixedDataset",
    "MixedSampler",
    "Sample",
    "SegmentationDataset",
    "UnionLabelSpace",
    "UnionLabels",
    "WildDash",
    "build_dataset",
    "colour_table",
    "convert_colour_labels",
    "dataset_class",
    "dataset_classes",
    "dataset_palette",
    "entry_config",
    "entry_split",
    "resolve_classes",
    "union_label_space",
]
