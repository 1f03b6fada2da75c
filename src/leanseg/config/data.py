"""The ``data`` section: :class:`DataConfig` and the parts it is made of, with their checks.

Here are the dataclasses of the section (:class:`DataConfig`, one :class:`DatasetEntry` per
dataset of a multi-dataset run, their :class:`UnionConfig` label space, the :class:`CropStage` of
progressive resizing), the ImageNet statistics a hand-built ``DataConfig`` normalises with, the
colour-label parser (:func:`parse_label_colors`), and the checks that
:mod:`leanseg.config.validation` runs on the section: :data:`DATA_RANGES` per key,
:data:`DATA_VALUE_CHECKS` for structured values, :func:`check_data_section` across fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from leanseg.config import limits
from leanseg.config.errors import ConfigError
from leanseg.config.ranges import BATCH_SIZE, RangeTable, finite, optional, positive
from leanseg.structures.labels import IGNORE_INDEX

# torchvision's ImageNet statistics of 0..1 RGB, the normalisation of ResNet/DenseNet/HRNet weights
# and of a ``DataConfig`` built by hand with ``mean``/``std`` left ``None``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The key of ``data.label_colors`` that names the ignore label instead of a class.
IGNORE_KEY = "ignore"
# The union's word for "no union class", as in ``data.label_colors``.
UNION_IGNORE = IGNORE_KEY


@dataclass
class DatasetEntry:
    """One dataset of a multi-dataset run (``data.datasets``, thesis ch. 5).

    The keys mean what the same keys of ``data`` mean for a single dataset; the transforms,
    batch size and loader settings stay in ``data`` and are shared by all datasets.
    """

    dataset: str = ""
    # Names the dataset in ``data.union.map`` and in reports; defaults to ``dataset``.
    name: str | None = None
    root: str | None = None
    # This dataset's split names; ``null`` takes ``data.train_split`` / ``data.val_split``.
    train_split: str | None = None
    val_split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    label_colors: dict[str, Any] | None = None
    unknown_colors: Literal["error", "ignore"] = "error"
    # Share of the training draws, relative to the other entries' weights. The thesis draws
    # the small driving sets 2:1 against the large indoor one (5.2): weights 2 and 1.
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The entry's name: ``name``, or ``dataset`` when no name is given."""
        return self.name or self.dataset


@dataclass
class UnionConfig:
    """The union label space a multi-dataset model predicts (``data.union``, thesis 5.3.1).

    Each dataset class becomes the union class of the same name (compared without case) unless
    ``map`` says otherwise. ``map: {entry name: {dataset class: target}}`` where a target is a
    union class name, a list of union class names (the dataset class covers several union
    classes, e.g. CamVid ``Bicyclist`` -> ``[rider, bicycle]``: a prediction of any of them
    counts as that class in its evaluation) or ``ignore``. A union class may stand for at most
    one class of each dataset.

    Pixels of a class that covers several union classes are ignored in training, unless
    ``partial_labels`` is set: then they are trained with the partial-label loss, the negative
    log of the probability summed over the classes they may be
    (:func:`leanseg.nn.losses.partial_cross_entropy`).
    """

    # ``null``: every dataset class by name, in order of the entries, merged by name, then any
    # ``map`` target not among them.
    classes: list[str] | None = None
    map: dict[str, dict[str, Any]] = field(default_factory=dict)
    partial_labels: bool = False


@dataclass
class CropStage:
    """One stage of progressive resizing: crops of ``crop_size`` until iteration ``until``."""

    crop_size: tuple[int, int] = (256, 256)
    # The first iteration (0-based) that no longer uses this stage's crops.
    until: int = 0
    # Multiplies the random rescale factor (``data.scale_range``) of this stage's samples:
    # below 1 the images are seen smaller, so a small crop covers as much of the scene as a
    # larger one at full scale (fast.ai-style progressive resizing); 1 keeps the scale.
    scale: float = 1.0


@dataclass
class DataConfig:
    """Where the images are and how training samples are augmented."""

    dataset: str = "synthetic"
    # Dataset root folder; ``null`` only for the built-in synthetic scenes.
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    # Extra keyword arguments of the dataset class (e.g. synthetic ``num_samples``, ``size``).
    options: dict[str, Any] = field(default_factory=dict)
    # Class names for the generic ``folder`` dataset; the named datasets know their classes.
    classes: list[str] | None = None
    # Colour-mask labels of the ``folder`` dataset: class name (or ``ignore``) -> its RGB colour
    # ``[r, g, b]`` or a list of such colours, matched exactly (no nearest colour: a blended
    # edge pixel is an unknown colour, not a guess). ``null``: label files hold class ids.
    label_colors: dict[str, Any] | None = None
    # A label colour missing from ``label_colors``: ``error`` (naming the file, the colour and
    # its pixel count) or ``ignore`` (such pixels get the ignore label).
    unknown_colors: Literal["error", "ignore"] = "error"
    ignore_index: int = IGNORE_INDEX
    # Training crop (height, width). Crops larger than the rescaled image are padded with the
    # mean colour and the ignore label (thesis 4.6.1).
    crop_size: tuple[int, int] = (512, 512)
    # Progressive resizing: smaller crops first (cheaper steps while the model learns the easy
    # part), ``crop_size`` after the last stage. Stages in order of ``until``; the sample order
    # and every augmentation draw stay the same, only the window size changes.
    crop_schedule: list[CropStage] = field(default_factory=list)
    # Hold the decoded training images and labels in memory (uint8, read-only), so that every
    # epoch after the first skips file reading and PNG/JPEG decoding. Same batches as from disk.
    cache: bool = False
    # Prepare the next training batch in a background thread while the current step runs.
    prefetch: bool = False
    # Random rescaling range before cropping (thesis 4.6.1 uses 0.5-2).
    scale_range: tuple[float, float] = (0.5, 2.0)
    # Redraw a training crop's position (up to 10 draws, then the last is kept) while one class
    # covers more than this share of its labelled pixels, so that fewer crops are all road or
    # all sky (MMSegmentation's ``cat_max_ratio``, 0.75 in its Cityscapes recipes). ``null``:
    # every first draw is kept.
    cat_max_ratio: float | None = None
    hflip: bool = True
    # Strength of brightness / contrast / saturation jitter in [0, 1), 0 disables it. Off by
    # default: none of the papers' recipes uses colour jitter; a recipe may turn it on.
    color_jitter: float = 0.0
    # Per-channel input normalisation of 0..1 values; ``null`` takes the statistics the backbone's
    # pretrained weights were trained with (ImageNet's for ResNet/DenseNet/HRNet, (x-127)/128 for
    # EfficientNet-Lite), filled in at load time so a saved config states what was used. One
    # value per input channel (``model.backbone.in_channels``, 3 unless set); ``null`` works for
    # 1 and 3 channels, others give their own (``leanseg.models.fill_input_normalization``).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    batch_size: int = 8
    num_workers: int = 2
    # Several datasets in one run (thesis ch. 5): each entry names a dataset with its own root,
    # splits, classes and weight; ``dataset``, ``root``, ``options``, ``classes`` and
    # ``label_colors`` above must then stay unset. ``null``: the one dataset above.
    datasets: list[DatasetEntry] | None = None
    # Union label space of ``datasets``; ``null`` merges their classes by name.
    union: UnionConfig | None = None
    # With ``datasets``: every batch mixes the datasets (the thesis found this essential for
    # BatchNorm, 5.2); ``false`` draws each whole batch from one dataset (the ablation), with
    # the same long-run shares.
    mix_batches: bool = True


# ---------------------------------------------------------------------- label colours


def parse_label_colors(
    value: dict[str, Any], key: str = "data.label_colors"
) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """The colours of each entry of ``data.label_colors``, checked.

    Args:
        value: class name (or ``ignore``) -> ``[r, g, b]`` or a list of ``[r, g, b]``.
        key: the dotted key that error messages name.

    Returns:
        Entry name -> its colours as tuples, in the order given.

    Raises:
        ConfigError: naming the entry (``data.label_colors.road``) for a name that is not a
            string, a colour that is not three integers in 0..255 (an empty list included), or
            a colour given to two entries.
    """
    parsed: dict[str, tuple[tuple[int, int, int], ...]] = {}
    owner: dict[tuple[int, int, int], str] = {}
    for name, colours in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: entries are named by class name (or {IGNORE_KEY})")
        nested = isinstance(colours, list | tuple) and colours
        nested = nested and any(isinstance(c, list | tuple) for c in colours)
        items = list(colours) if nested else [colours]  # one colour or a list of colours
        checked = []
        for colour in items:
            if not _is_colour(colour):
                raise ConfigError(
                    f"{where}: {colour!r} is not a colour; expected [r, g, b] with integers "
                    "in 0..255, or a list of such colours"
                )
            rgb = (int(colour[0]), int(colour[1]), int(colour[2]))
            if rgb in owner:
                raise ConfigError(
                    f"{where}: colour {list(rgb)} is already given to {key}.{owner[rgb]}; "
                    "a colour names one class"
                )
            owner[rgb] = name
            checked.append(rgb)
        parsed[name] = tuple(checked)
    return parsed


def _is_colour(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    )


# ---------------------------------------------------------------------- several datasets

# Keys of ``data`` that describe the one dataset of a single-dataset run, and their defaults.
_SINGLE_DATASET_KEYS = {
    "root": None,
    "options": {},
    "classes": None,
    "label_colors": None,
}


def _check_datasets(data: DataConfig, key: str) -> None:
    """``data.datasets`` and ``data.union``: entries, weights, names and the map's shape.

    Whether the map's dataset classes exist is checked where the classes are known
    (:func:`leanseg.data.union.build_union`).
    """
    if data.datasets is None:
        if data.union is not None:
            raise ConfigError(f"{key}.union: a union label space needs {key}.datasets")
        if not data.mix_batches:
            raise ConfigError(f"{key}.mix_batches: batches mix the datasets of {key}.datasets")
        return
    if not data.datasets:
        raise ConfigError(f"{key}.datasets: list at least one dataset, or null for one")
    for name, default in _SINGLE_DATASET_KEYS.items():
        if getattr(data, name) != default:
            raise ConfigError(
                f"{key}.{name}: set per dataset in {key}.datasets, not here, when "
                f"{key}.datasets is given"
            )
    names = _check_entries(data.datasets, key)
    union = data.union or UnionConfig()
    _check_union_classes(union, key)
    _check_union_map(union, names, key)


def _check_entries(entries: list[DatasetEntry], key: str) -> set[str]:
    """Each entry of ``data.datasets`` on its own; returns the entries' names (all distinct)."""
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{key}.datasets[{index}]"
        if not entry.dataset:
            raise ConfigError(f"{where}.dataset: name the dataset (e.g. camvid, folder)")
        if not entry.key:
            raise ConfigError(f"{where}.name: must be a non-empty name")
        if entry.key in names:
            raise ConfigError(
                f"{where}.name: {entry.key!r} names two entries; give each a distinct name"
            )
        names.add(entry.key)
        if not (finite(entry.weight) and entry.weight > 0):
            raise ConfigError(f"{where}.weight: must be a positive number, got {entry.weight!r}")
        if entry.label_colors is not None:
            parse_label_colors(entry.label_colors, f"{where}.label_colors")
        for split in ("train_split", "val_split"):
            if getattr(entry, split) == "":
                raise ConfigError(f"{where}.{split}: a non-empty split name or null")
    return names


def _check_union_classes(union: UnionConfig, key: str) -> None:
    """``data.union.classes``: names, none of them ``ignore``, none repeated (without case)."""
    if union.classes is None:
        return
    seen: dict[str, str] = {}
    for index, name in enumerate(union.classes):
        if not name or name.lower() == UNION_IGNORE:
            raise ConfigError(f"{key}.union.classes[{index}]: {name!r} cannot name a class")
        if name.lower() in seen:
            raise ConfigError(
                f"{key}.union.classes[{index}]: {name!r} repeats {seen[name.lower()]!r} "
                "(names are compared without case)"
            )
        seen[name.lower()] = name


def _check_union_map(union: UnionConfig, names: set[str], key: str) -> None:
    """``data.union.map``: tables of entries that exist, each target a name, a list or ignore."""
    for entry_name, table in union.map.items():
        where = f"{key}.union.map.{entry_name}"
        if entry_name not in names:
            raise ConfigError(f"{where}: no dataset named {entry_name!r}; names: {sorted(names)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a mapping dataset class -> union class")
        for their, target in table.items():
            targets = target if isinstance(target, list) else [target]
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(
                    f"{where}.{their}: expected a union class name, a list of names or "
                    f"{UNION_IGNORE}, got {target!r}"
                )
            if len(targets) > 1 and UNION_IGNORE in (t.lower() for t in targets):
                raise ConfigError(f"{where}.{their}: {UNION_IGNORE} cannot be one of a list")


# ---------------------------------------------------------------------- checks of the section


def check_data_section(data: DataConfig, key: str) -> None:
    """``data.datasets`` and ``data.union`` (:func:`_check_datasets`), then the pixels of one
    training batch (``data.batch_size`` crops of the largest crop size), before any is made.

    Runs before the range checks of the section's fields.

    Raises:
        ConfigError: naming the dotted key at fault.
    """
    _check_datasets(data, key)
    crops = [data.crop_size, *(stage.crop_size for stage in data.crop_schedule)]
    if any(limits.size_problem(*crop) for crop in crops):
        return  # the key's own range check names it
    largest = max(crops, key=lambda crop: crop[0] * crop[1])
    pixels = data.batch_size * largest[0] * largest[1]
    if pixels > limits.MAX_BATCH_PIXELS and data.batch_size <= limits.MAX_BATCH_SIZE:
        raise ConfigError(
            f"{key}.batch_size {data.batch_size} x crops of {list(largest)}: one batch would hold "
            f"{limits.megapixels(pixels)}, more than {limits.megapixels(limits.MAX_BATCH_PIXELS)}"
        )


DATA_RANGES: RangeTable = {
    "data.train_split": (bool, "a non-empty split name"),
    "data.val_split": (bool, "a non-empty split name"),
    "data.ignore_index": (lambda v: 0 <= v <= 255, "in 0..255 (labels are 8-bit)"),
    "data.crop_size": (
        lambda v: all(s > 0 for s in v) and limits.size_problem(*v) is None,
        f"two positive integers (height, width), each at most {limits.MAX_SIDE} and "
        f"{limits.megapixels(limits.MAX_CROP_PIXELS)} in all",
    ),
    "data.crop_schedule": (
        lambda v: (
            all(all(s > 0 for s in st.crop_size) and st.until > 0 for st in v)
            and all(limits.size_problem(*st.crop_size) is None for st in v)
            and all(a.until < b.until for a, b in zip(v, v[1:], strict=False))
            and all(finite(st.scale) and 0 < st.scale <= 1 for st in v)
        ),
        "a list of {crop_size: [h, w], until: N, scale: s} with positive sizes (each at most "
        f"{limits.MAX_SIDE}, {limits.megapixels(limits.MAX_CROP_PIXELS)} in all), "
        "increasing N > 0 and 0 < s <= 1 (optional, default 1)",
    ),
    "data.cat_max_ratio": (
        lambda v: v is None or (finite(v) and 0 < v <= 1),
        "null or a share in (0, 1] (1 keeps every first draw)",
    ),
    "data.scale_range": (
        lambda v: all(map(positive, v)) and v[0] <= v[1] <= limits.MAX_SCALE,
        f"[low, high] with 0 < low <= high <= {limits.MAX_SCALE:g} (images are rescaled "
        "before cropping)",
    ),
    "data.color_jitter": (lambda v: finite(v) and 0 <= v < 1, "in [0, 1)"),
    "data.std": (
        optional(lambda v: all(map(positive, v))),
        "positive numbers (one per input channel) or null",
    ),
    "data.batch_size": BATCH_SIZE,
    "data.num_workers": (
        lambda v: 0 <= v <= limits.MAX_WORKERS,
        f"0 or more, at most {limits.MAX_WORKERS}",
    ),
}

# Checks of structured values that name the entry at fault: dotted key -> check(value, key),
# which raises ConfigError. Run after the type check, like the ranges.
DATA_VALUE_CHECKS: dict[str, Callable[[Any, str], object]] = {
    "data.label_colors": lambda value, key: value is None or parse_label_colors(value, key),
}
