"""Typed run configuration: YAML files validated into dataclasses.

A config file has four sections (``model``, ``data``, ``train``, ``eval``) and an optional
``base:`` key naming one other YAML file (relative to the config) whose values it overrides.
Only one level of ``base:`` is allowed, so a run is never spread over a chain of files.

Unknown keys and values of the wrong type are errors that name the file and the dotted key and,
for unknown keys, list the valid ones. Values of the right type are then checked against the
ranges in :data:`VALUE_RANGES` (a batch size of 0, a reversed ``scale_range``, an unknown device
...), so a run fails at load time, before anything is written. ``--set a.b=c`` overrides are
parsed as YAML scalars and go through the same validation. Float fields also accept numbers that
YAML 1.1 reads as strings, such as ``1e-3`` (PyYAML wants ``1.0e-3``).

Input paths (``data.root``, ``data.datasets[*].root``, a ``pretrained`` weight file) are made
absolute when read: relative to the folder of the YAML file that writes them, and relative to
the current folder when given with ``--set``. ``work_dir`` stays relative to the current folder.
A saved config also keeps them relative to its own folder, so a moved run folder still finds its
data (:mod:`leanseg.config.paths` states the rules).

Components (backbone, context, head, dataset options) are open-ended: ``model.backbone`` is a
mapping with a ``name`` and the keyword arguments of that builder. This module does not know the
builders (it sits below them); :func:`leanseg.models.load_run_config` reads a config with
:func:`load_config` and then checks those keyword arguments against the builders' signatures and
fills ``data.mean`` / ``data.std`` from the backbone, so a typo in ``model.head.dropuot`` fails at
load time too.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from leanseg.config import limits, safe_yaml
from leanseg.config.paths import (
    PathExpansionError,
    expand_path,
    resolve_file_paths,
    resolve_override_paths,
    store_paths,
)

# torchvision's ImageNet statistics of 0..1 RGB, the normalisation of ResNet/DenseNet/HRNet weights
# and of a ``DataConfig`` built by hand with ``mean``/``std`` left ``None``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a :class:`Config`."""


@dataclass
class ModelConfig:
    """Which parts make the model: backbone -> context (optional) -> head."""

    # ``{name: resnet18, pretrained: path/to/weights.pth, ...}``; the other keys are the
    # keyword arguments of the backbone builder named by ``name``.
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18"})
    # ``null`` for no context module, else ``{name: ..., **kwargs}``.
    context: dict[str, Any] | None = None
    # ``{name: bilinear, **kwargs}``; the head owns the output representation and the loss.
    head: dict[str, Any] = field(default_factory=lambda: {"name": "bilinear"})
    # Weigh each pixel's loss by min(10^3, 1 / p(c)), p(c) its class's share of the batch's
    # labelled pixels (thesis 3.4): for heads whose loss is the dense cross-entropy.
    class_balancing: bool = False


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
    ignore_index: int = 255
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


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping of a training run."""

    # The defaults are the CamVid recipe's (configs/lite0/ladder_camvid.yaml, 72.1 % val mIoU on a
    # CPU): Adam at 6e-4 with a pretrained backbone at 1/4 of that, cosine decay after a 50-step
    # warm-up. A config that names no optimizer gets what is known to train.
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 6e-4
    # Used by SGD only.
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Multiplier of the learning rate of backbone parameters (the thesis divides it by 4).
    backbone_lr_mult: float = 0.25
    schedule: Literal["poly", "cosine", "constant"] = "cosine"
    poly_power: float = 0.9
    # Final learning rate of the cosine schedule (thesis eq. 4.1 uses 1e-7).
    min_lr: float = 0.0
    warmup_iters: int = 50
    # Learning-rate factor at the first warm-up iteration, rising linearly to 1.
    warmup_ratio: float = 0.1
    max_iters: int = 1000
    eval_interval: int = 500
    checkpoint_interval: int = 500
    log_interval: int = 10
    # Mixed precision; only used on CUDA devices.
    amp: bool = False
    # Max gradient norm; ``null`` disables clipping.
    grad_clip: float | None = None
    seed: int = 0
    # Recompute BatchNorm statistics as exact averages over this many training batches after
    # training (thesis 4.6.1); 0 disables it.
    bn_recompute_batches: int = 0
    sync_bn: bool = False
    device: str = "auto"
    # CPU threads of torch's intra-op pool. ``auto``: the cores other processes leave free,
    # looked at again every 15 s (runtime/cpu_share.py; two threads beside one busy process were
    # 3.6x slower per step, benchmarks/thread_contention.py). A number fixes it; ``null`` keeps
    # torch's default (one per core).
    num_threads: int | Literal["auto"] | None = "auto"
    # Keep weights and activations channels-last (NHWC): about 14 % faster training steps of the
    # Lite0 ladder on this project's CPUs, same results up to float rounding.
    channels_last: bool = False
    # On the CPU, flush subnormal floats (below 1.2e-38) to zero (``torch.set_flush_denormal``).
    # Weights that weight decay drives towards zero become subnormal as training goes on, and x86
    # CPUs compute on subnormals many times slower: the CamVid recipe's steps slowed from 1.3 to
    # 2.3 s between iterations 900 and 1700 without it (2,559 subnormal weights at 1600; zeroing
    # them: forward + backward 0.84x, benchmarks/subnormal_step.py). With flushing on, the
    # optimizer's updates no longer create them: none in the recipe's checkpoints, steps stayed
    # at 1.3-1.6 s (docs/notes/issue-11.md).
    flush_denormal: bool = True
    # Keep the backbone's BatchNorm statistics (and affine parameters) as the pretrained weights
    # have them: the layers normalise with their running statistics in training too. Frozen BN
    # skips the batch statistics and their backward pass: on the Lite0 ladder recipe the
    # iteration went from 0.958 to 0.822 s (benchmarks/results/fast_training.json).
    freeze_backbone_bn: bool = False
    # Freeze the backbone up to and including the feature it returns at this stride (4, 8, ...):
    # no gradients, no optimizer state, no stored activations there. ``null`` trains all of it.
    freeze_backbone_until: int | None = None
    # Compile the training step (forward and loss) with ``torch.compile``; the first step of
    # each crop size pays the compilation (minutes on a CPU; benchmarks/fast_training.py).
    compile: bool = False


@dataclass
class CRFConfig:
    """Fully connected CRF post-processing (thesis §3.4; :mod:`leanseg.inference.dense_crf`).

    The thesis fixes w2 = 3, θγ = 3, 10 mean-field iterations, and grid-searches
    w1 in {5, 10}, θα in {50..90}, θβ in {3..9}; the defaults are the middle of that grid.
    """

    iterations: int = 10
    # w1, θα (pixels), θβ (0-255 colour units): the appearance (bilateral) kernel.
    appearance_weight: float = 5.0
    appearance_xy: float = 70.0
    appearance_rgb: float = 6.0
    # w2, θγ (pixels): the smoothness kernel.
    smoothness_weight: float = 3.0
    smoothness_xy: float = 3.0


@dataclass
class EvalConfig:
    """How validation and ``leanseg eval`` measure a model."""

    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    # Half-width in pixels of the band around label boundaries for boundary mIoU (trimap).
    boundary_width: int = 8
    batch_size: int = 1
    # Evaluate on at most this many validation images; ``null`` means all of them.
    max_images: int | None = None
    # Refine the probabilities with the fully connected CRF (``{}`` for its defaults); ``null``
    # for none. CPU seconds per megapixel: docs/notes/issue-14.md.
    crf: CRFConfig | None = None


@dataclass
class Config:
    """A whole run: model, data, training and evaluation settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Where ``leanseg train`` writes the run; relative paths are relative to the folder the
    # command runs in (an output, unlike the input paths, which a file states relative to itself).
    work_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------- value ranges


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def _non_negative(value: Any) -> bool:
    return _finite(value) and value >= 0


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


# ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``: the device strings torch accepts that a
# run can use. Whether CUDA is present is checked where the device is used, not at load time.
# N is 0..127: torch keeps a device index in 8 signed bits (``cuda:200`` becomes ``cuda:-56``).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:(1[01]\d|12[0-7]|\d\d?))?")

# Ranges of values that have the right type, checked at load time: dotted key -> (test, what
# the value must be). The message names the key, the requirement and the value given.
VALUE_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
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
        ),
        "a list of {crop_size: [h, w], until: N} with positive sizes (each at most "
        f"{limits.MAX_SIDE}, {limits.megapixels(limits.MAX_CROP_PIXELS)} in all) and "
        "increasing N > 0",
    ),
    "data.scale_range": (
        lambda v: all(map(_positive, v)) and v[0] <= v[1] <= limits.MAX_SCALE,
        f"[low, high] with 0 < low <= high <= {limits.MAX_SCALE:g} (images are rescaled "
        "before cropping)",
    ),
    "data.color_jitter": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "data.std": (
        _optional(lambda v: all(map(_positive, v))),
        "positive numbers (one per input channel) or null",
    ),
    "data.batch_size": (
        lambda v: 0 < v <= limits.MAX_BATCH_SIZE,
        f"a positive integer, at most {limits.MAX_BATCH_SIZE}",
    ),
    "data.num_workers": (
        lambda v: 0 <= v <= limits.MAX_WORKERS,
        f"0 or more, at most {limits.MAX_WORKERS}",
    ),
    "train.lr": (_positive, "a positive number"),
    "train.momentum": (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "train.weight_decay": (_non_negative, "0 or more"),
    "train.backbone_lr_mult": (_non_negative, "0 or more"),
    "train.poly_power": (_non_negative, "0 or more"),
    "train.min_lr": (_non_negative, "0 or more"),
    "train.warmup_iters": (_non_negative, "0 or more"),
    "train.warmup_ratio": (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "train.max_iters": (_positive, "a positive integer"),
    "train.eval_interval": (_positive, "a positive integer"),
    "train.checkpoint_interval": (_positive, "a positive integer"),
    "train.log_interval": (_positive, "a positive integer"),
    "train.grad_clip": (_optional(_positive), "a positive number or null"),
    "train.bn_recompute_batches": (_non_negative, "0 or more"),
    # torch, NumPy and Python's random all take a seed in this range (NumPy refuses others).
    "train.seed": (lambda v: 0 <= v < 2**32, "in 0..4294967295 (2^32 - 1)"),
    "train.freeze_backbone_until": (_optional(_positive), "a stride (4, 8, 16, ...) or null"),
    "train.device": (
        lambda v: DEVICE_PATTERN.fullmatch(v) is not None,
        "auto, cpu, cuda, cuda:N or mps",
    ),
    "train.num_threads": (
        lambda v: v is None or v == "auto" or _positive(v),
        "auto, a positive integer or null (more than the cores are clamped to them)",
    ),
    "eval.scales": (
        lambda v: bool(v) and all(map(_positive, v)) and limits.scales_problem(v) is None,
        f"a non-empty list of at most {limits.MAX_SCALE_COUNT} positive numbers, each at most "
        f"{limits.MAX_SCALE:g}",
    ),
    "eval.boundary_width": (
        lambda v: 0 <= v <= limits.MAX_BOUNDARY_WIDTH,
        f"in 0..{limits.MAX_BOUNDARY_WIDTH} (pixels)",
    ),
    "eval.batch_size": (
        lambda v: 0 < v <= limits.MAX_BATCH_SIZE,
        f"a positive integer, at most {limits.MAX_BATCH_SIZE}",
    ),
    "eval.max_images": (_optional(_positive), "a positive integer or null"),
    "eval.crf.iterations": (
        lambda v: 0 <= v <= limits.MAX_CRF_ITERATIONS,
        f"in 0..{limits.MAX_CRF_ITERATIONS}",
    ),
    "eval.crf.appearance_weight": (_non_negative, "0 or more"),
    "eval.crf.appearance_xy": (_positive, "a positive number"),
    "eval.crf.appearance_rgb": (_positive, "a positive number"),
    "eval.crf.smoothness_weight": (_non_negative, "0 or more"),
    "eval.crf.smoothness_xy": (_positive, "a positive number"),
    "work_dir": (bool, "a non-empty path"),
}


# The key of ``data.label_colors`` that names the ignore label instead of a class.
IGNORE_KEY = "ignore"


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


# Checks of structured values that name the entry at fault: dotted key -> check(value, key),
# which raises ConfigError. Run after the type check, like VALUE_RANGES.
VALUE_CHECKS: dict[str, Callable[[Any, str], object]] = {
    "data.label_colors": lambda value, key: value is None or parse_label_colors(value, key),
}


# The union's word for "no union class", as in ``data.label_colors``.
UNION_IGNORE = IGNORE_KEY
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
    names: set[str] = set()
    for index, entry in enumerate(data.datasets):
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
        if not (_finite(entry.weight) and entry.weight > 0):
            raise ConfigError(f"{where}.weight: must be a positive number, got {entry.weight!r}")
        if entry.label_colors is not None:
            parse_label_colors(entry.label_colors, f"{where}.label_colors")
        for split in ("train_split", "val_split"):
            if getattr(entry, split) == "":
                raise ConfigError(f"{where}.{split}: a non-empty split name or null")
    union = data.union or UnionConfig()
    if union.classes is not None:
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


# Checks of whole sections (cross-field rules), run before their fields' range checks.
def _check_data(data: DataConfig, key: str) -> None:
    """``data.datasets`` and ``data.union`` (:func:`_check_datasets`), then the pixels of one
    training batch (``data.batch_size`` crops of the largest crop size), before any is made."""
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


SECTION_CHECKS: dict[str, Callable[[Any, str], object]] = {"data": _check_data}


def _check_ranges(obj: Any, key: str) -> None:
    """Raise ConfigError for the first field of a validated section that is out of range."""
    if key in SECTION_CHECKS:
        SECTION_CHECKS[key](obj, key)
    for f in dataclasses.fields(obj):
        dotted = f"{key}.{f.name}" if key else f.name
        if dotted in VALUE_CHECKS:
            VALUE_CHECKS[dotted](getattr(obj, f.name), dotted)
        if dotted not in VALUE_RANGES:
            continue
        test, requirement = VALUE_RANGES[dotted]
        value = getattr(obj, f.name)
        if not test(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise ConfigError(f"{dotted}: must be {requirement}, got {shown!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (with at most one ``base:``) and apply overrides.

    Args:
        path: YAML file, or the name of a shipped config (``ldn/rn18_32to4_camvid``, see
            :func:`resolve_config_path`); ``None`` starts from the defaults.
        overrides: ``["train.lr=0.1", ...]`` strings as given to ``--set``, or a mapping of
            dotted keys to values.

    Input paths are returned absolute: a relative one in the file (or its ``base:``) is taken
    from that file's folder, one in ``overrides`` from the current folder
    (:mod:`leanseg.config.paths`).

    Returns:
        The :class:`Config`, its types and value ranges checked. The options of the model's
        components are not checked and ``data.mean`` / ``data.std`` may be ``None``: a run reads
        its config with :func:`leanseg.models.load_run_config`, which does both.

    Raises:
        ConfigError: on a missing file, bad YAML, unknown key or wrong type; the message names
            the file and the dotted key.
    """
    # Start from the defaults so that overrides such as ``model.head.dropout=0.1`` extend the
    # default head instead of replacing it.
    raw: dict[str, Any] = Config().to_dict()
    source = "<defaults>"
    if path is not None:
        path = resolve_config_path(path)
        source = str(path)
        raw = _deep_merge(raw, _read_with_base(path))
    return config_from_dict(apply_overrides(raw, overrides), source=source)


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | dict[str, Any] | None
) -> dict[str, Any]:
    """Set dotted keys of a nested config mapping, as ``--set`` does; nothing is validated.

    Relative input paths among the values (``data.root=data/camvid``) are made absolute against
    the current folder, where a user typing the command means them.

    Args:
        raw: the mapping, changed in place (sections a key names are created).
        overrides: ``["train.lr=0.1", ...]`` strings (values parsed as YAML scalars), or a
            mapping of dotted keys to values.

    Returns:
        ``raw``.

    Raises:
        ConfigError: on an override that is not ``key=value``, or one that sets a key below a
            value that is not a section.
    """
    for key, value in _parse_overrides(overrides).items():
        try:
            _set_dotted(raw, key, resolve_override_paths(key, value))
        except PathExpansionError as err:
            raise ConfigError(f"override {key}: {err}") from None
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested mapping into a :class:`Config`, as :func:`load_config` does."""
    try:
        check_plain_values(raw, "")
        if isinstance(raw, dict) and isinstance(raw.get("work_dir"), str):
            raw = {**raw, "work_dir": _expanded(raw["work_dir"], "work_dir")}
        return coerce(raw, Config, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _expanded(value: str, key: str) -> str:
    try:
        return expand_path(value)
    except PathExpansionError as err:
        raise ConfigError(f"{key}: {err}") from None


def check_plain_values(value: Any, key: str) -> None:
    """Refuse what no config value may be, anywhere in a nested mapping (component options
    included): a key that is not a string, a number that is NaN or infinite, a string with a
    null byte (no path can hold one).

    Raises:
        ConfigError: naming the dotted key and the value.
    """
    where = key or "<root>"
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(
                    f"{where}: key {name!r} is a {type(name).__name__}; keys are names "
                    "(write it in quotes if a name was meant)"
                )
            check_plain_values(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain_values(item, f"{key}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    elif isinstance(value, str) and "\x00" in value:
        raise ConfigError(f"{where}: contains a null byte: {value!r}")


def saved_config(cfg: Config, folder: str | Path) -> dict[str, Any]:
    """The mapping a config file in ``folder`` stores: ``cfg.to_dict()`` with its input paths
    absolute, and again relative to ``folder`` under ``relative_paths`` (tried when the
    absolute ones are missing, e.g. a run folder moved together with its data)."""
    return store_paths(cfg.to_dict(), Path(folder))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, so a run can be reproduced from its folder alone."""
    path = Path(path)
    path.write_text(yaml.safe_dump(saved_config(cfg, path.parent), sort_keys=False))


# ---------------------------------------------------------------------- shipped configs

CONFIG_SUFFIX = ".yaml"


def shipped_config_dir() -> Path | None:
    """The folder of the configs that come with leanseg, or ``None`` when there is none.

    An installed wheel carries them as package data in ``leanseg/configs/`` (the build copies
    the repository's ``configs/`` there, see ``setup.py``); a source checkout (editable
    install) reads ``configs/`` at the repository root, so both see the same files.
    """
    packaged = Path(__file__).parents[1] / "configs"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "configs"
    return checkout if checkout.is_dir() else None


def shipped_config_names() -> list[str]:
    """Names of the shipped configs, e.g. ``ldn/rn18_32to4_camvid``, sorted."""
    root = shipped_config_dir()
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """The YAML file a user means by ``name``: a path that exists, else a shipped config.

    A path that exists always wins, so a local ``ldn/x.yaml`` is never shadowed. Otherwise a
    name without ``.yaml`` is looked up among :func:`shipped_config_names`
    (``ldn/rn18_32to4_camvid`` -> ``<shipped>/ldn/rn18_32to4_camvid.yaml``).

    Raises:
        ConfigError: ``config file not found``, listing the shipped configs whose names are
            closest to ``name``.
    """
    path = Path(name)
    if path.exists():
        return path
    text = path.as_posix()
    root = shipped_config_dir()
    names = shipped_config_names()
    if root is not None and text in names:  # also keeps ``..`` and absolute paths out
        return root / f"{text}{CONFIG_SUFFIX}"
    wanted = text.removesuffix(CONFIG_SUFFIX)
    # A bare file name (``rn18_32to4_camvid``) matches the last part of a shipped name.
    close = [n for n in names if n.rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
    close += difflib.get_close_matches(wanted, names, n=5, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; shipped configs with close names: {', '.join(dict.fromkeys(close))}"
    elif names:
        hint = f"; none of the {len(names)} shipped configs is close (e.g. {names[0]})"
    raise ConfigError(f"config file not found: {path}{hint}")


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of one config file (:mod:`leanseg.config.safe_yaml`'s rules), or a ConfigError
    naming the file: missing, a folder, unreadable, too large, not UTF-8, not YAML, empty, or
    not a mapping."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a config file")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        safe_yaml.check_file_size(path)
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (a YAML config must be UTF-8)") from None
    except safe_yaml.YAMLFileTooLarge as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    try:
        data = safe_yaml.load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    if data is None or data == {}:
        # Training the defaults into runs/default is never what an empty file meant.
        raise ConfigError(f"{path}: the config file is empty (no keys set)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line: where it is and what is wrong."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def _read_with_base(path: Path) -> dict[str, Any]:
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    _resolve_paths(data, path)
    if base_name is None:
        return data
    base_path = path.parent / str(base_name)
    try:
        base_path = base_path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: reading it names the file
        base_path = Path(os.path.abspath(base_path))
    base = _read_yaml(base_path)
    if "base" in base:
        raise ConfigError(
            f"{base_path}: a base config may not have a base of its own (used by {path})"
        )
    return _deep_merge(_resolve_paths(base, base_path), data)


def _resolve_paths(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The input paths of the file ``path`` made absolute (relative to its folder)."""
    try:
        return resolve_file_paths(data, path)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        # Component mappings (those with a ``name``) are replaced whole when the name changes:
        # the options of one backbone mean nothing to another.
        same_component = not (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and "name" in value
            and value.get("name") != merged[key].get("name")
        )
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and same_component:
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            parsed[key.strip()] = safe_yaml.load(text) if text.strip() else None
        except (safe_yaml.YAMLLimitError, safe_yaml.DuplicateKeyError) as err:
            raise ConfigError(f"override {key.strip()}: {_yaml_problem(err)}") from None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {key}: {prefix} is not a section")
        node = child
    node[parts[-1]] = value


# A decimal number in any of Python's spellings, with or without a dot before the exponent.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, converting YAML lists to tuples etc.

    Also checks the options of model components and datasets against their builders'
    annotations (:mod:`leanseg.models`, :mod:`leanseg.data`); ``key`` is the dotted key that
    error messages name.
    """
    where = key or "<root>"
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _coerce_dataclass(value, annotation, key)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                coerce(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item_type = args[0] if args else Any
        items = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)  # ``1e-3``: a number that YAML 1.1 reads as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config field {where} has an unsupported annotation {annotation!r}")


def _coerce_dataclass(value: Any, cls: type, key: str) -> Any:
    where = key or "<root>"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys"
            f"{' of ' + key if key else ''}: {', '.join(fields)}"
        )
    kwargs = {
        name: coerce(raw, hints[name], f"{key}.{name}" if key else name)
        for name, raw in value.items()
    }
    obj = cls(**kwargs)
    _check_ranges(obj, key)
    return obj
