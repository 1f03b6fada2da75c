"""Reading and writing config files: :func:`load_config` and the steps it is made of.

A file is read with :mod:`leanseg.config.safe_yaml`'s rules, merged over its one ``base:`` file,
its input paths made absolute (:mod:`leanseg.config.paths`), laid over the defaults, changed by
``--set`` overrides (:func:`apply_overrides`) and validated (:func:`config_from_dict`).
:func:`save_config` writes a run's config so that it can be read back from its folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from leanseg.config import safe_yaml
from leanseg.config.errors import ConfigError
from leanseg.config.paths import (
    PathExpansionError,
    expand_path,
    resolve_file_paths,
    resolve_override_paths,
    store_paths,
)
from leanseg.config.run import Config
from leanseg.config.shipped import resolve_config_path
from leanseg.config.validation import check_plain_values, coerce


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


def saved_config(cfg: Config, folder: str | Path) -> dict[str, Any]:
    """The mapping a config file in ``folder`` stores: ``cfg.to_dict()`` with its input paths
    absolute, and again relative to ``folder`` under ``relative_paths`` (tried when the
    absolute ones are missing, e.g. a run folder moved together with its data)."""
    return store_paths(cfg.to_dict(), Path(folder))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, so a run can be reproduced from its folder alone."""
    path = Path(path)
    path.write_text(yaml.safe_dump(saved_config(cfg, path.parent), sort_keys=False))


# ---------------------------------------------------------------------- reading files


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
    """The file ``path`` merged over its ``base:`` file (which may not have one of its own)."""
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
    """``top`` laid over ``base``, section by section."""
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


# ---------------------------------------------------------------------- --set overrides


def _parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Dotted key -> value of ``--set`` strings, each value parsed as a YAML scalar."""
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
    """Set ``raw[a][b][c] = value`` for the key ``a.b.c``, creating missing sections."""
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
