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
mapping with a ``name`` and the keyword arguments of that builder. This package does not know the
builders (it sits below them); :func:`leanseg.models.load_run_config` reads a config with
:func:`load_config` and then checks those keyword arguments against the builders' signatures and
fills ``data.mean`` / ``data.std`` from the backbone, so a typo in ``model.head.dropuot`` fails at
load time too.

The modules, one per section and one per step of loading:

- :mod:`~leanseg.config.model`, :mod:`~leanseg.config.data`, :mod:`~leanseg.config.train`,
  :mod:`~leanseg.config.eval`: each section's dataclasses and the value ranges of its keys
  (``data`` also its label colours, several datasets and their union label space);
- :mod:`~leanseg.config.run`: :class:`Config`, the whole run (the four sections and ``work_dir``);
- :mod:`~leanseg.config.validation`: a nested mapping checked and turned into the dataclasses;
- :mod:`~leanseg.config.loading`: :func:`load_config` (files, ``base:``, ``--set`` overrides) and
  :func:`save_config`;
- :mod:`~leanseg.config.shipped`: the configs that come with leanseg, found by name;
- :mod:`~leanseg.config.errors`: :class:`ConfigError`; :mod:`~leanseg.config.ranges`: the small
  tests the range tables are made of;
- :mod:`~leanseg.config.paths`, :mod:`~leanseg.config.limits`, :mod:`~leanseg.config.safe_yaml`,
  :mod:`~leanseg.config.weight_sources`: input paths, size limits, the YAML reader, and where
  pretrained weights come from.

The names the rest of leanseg uses are imported here, so ``from leanseg.config import Config``
does not depend on which module holds it.
"""

from leanseg.config import limits, safe_yaml
from leanseg.config.data import (
    IGNORE_KEY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNION_IGNORE,
    CropStage,
    DataConfig,
    DatasetEntry,
    UnionConfig,
    parse_label_colors,
)
from leanseg.config.errors import ConfigError
from leanseg.config.eval import CRFConfig, EvalConfig
from leanseg.config.loading import (
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
    saved_config,
)
from leanseg.config.model import ModelConfig
from leanseg.config.run import Config
from leanseg.config.shipped import (
    CONFIG_SUFFIX,
    resolve_config_path,
    shipped_config_dir,
    shipped_config_names,
)
from leanseg.config.train import DEVICE_PATTERN, TrainConfig
from leanseg.config.validation import (
    SECTION_CHECKS,
    VALUE_CHECKS,
    VALUE_RANGES,
    check_plain_values,
    coerce,
)

__all__ = [
    "CONFIG_SUFFIX",
    "CRFConfig",
    "Config",
    "ConfigError",
    "CropStage",
    "DEVICE_PATTERN",
    "DataConfig",
    "DatasetEntry",
    "EvalConfig",
    "IGNORE_KEY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "SECTION_CHECKS",
    "TrainConfig",
    "UNION_IGNORE",
    "UnionConfig",
    "VALUE_CHECKS",
    "VALUE_RANGES",
    "apply_overrides",
    "check_plain_values",
    "coerce",
    "config_from_dict",
    "limits",
    "load_config",
    "parse_label_colors",
    "resolve_config_path",
    "safe_yaml",
    "save_config",
    "saved_config",
    "shipped_config_dir",
    "shipped_config_names",
]
