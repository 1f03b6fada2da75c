"""Turning a nested mapping into the config dataclasses: types first, then value ranges.

:func:`coerce` checks a value against a type annotation (converting YAML lists to tuples, numbers
that YAML 1.1 reads as strings such as ``1e-3`` to floats) and fills the dataclasses, refusing
unknown keys with the list of valid ones. After each section is built, its checks run:
:data:`SECTION_CHECKS` across the section's fields, then :data:`VALUE_CHECKS` and
:data:`VALUE_RANGES` per key, gathered from the section modules. :func:`check_plain_values`
refuses what no value may be anywhere (NaN, a null byte, a key that is not a string).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from leanseg.config.data import DATA_RANGES, DATA_VALUE_CHECKS, check_data_section
from leanseg.config.errors import ConfigError
from leanseg.config.eval import EVAL_RANGES
from leanseg.config.model import MODEL_RANGES
from leanseg.config.ranges import RangeTable
from leanseg.config.run import RUN_RANGES
from leanseg.config.train import TRAIN_RANGES

# Ranges of values that have the right type, checked at load time: dotted key -> (test, what
# the value must be). The message names the key, the requirement and the value given.
VALUE_RANGES: RangeTable = {
    **DATA_RANGES,
    **MODEL_RANGES,
    **TRAIN_RANGES,
    **EVAL_RANGES,
    **RUN_RANGES,
}

# Checks of structured values that name the entry at fault: dotted key -> check(value, key),
# which raises ConfigError. Run after the type check, like VALUE_RANGES.
VALUE_CHECKS: dict[str, Callable[[Any, str], object]] = {**DATA_VALUE_CHECKS}

# Checks of whole sections (cross-field rules), run before their fields' range checks.
SECTION_CHECKS: dict[str, Callable[[Any, str], object]] = {"data": check_data_section}

# A decimal number in any of Python's spellings, with or without a dot before the exponent.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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
        return _coerce_union(value, annotation, key)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        return _coerce_sequence(value, annotation, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, annotation, key)


def _coerce_union(value: Any, annotation: Any, key: str) -> Any:
    """The value as the first option of ``A | B | None`` that takes it."""
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
    where = key or "<root>"
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")


def _coerce_sequence(value: Any, annotation: Any, key: str) -> Any:
    """A YAML list as ``list[T]``, ``tuple[T, ...]`` or a fixed-length ``tuple[A, B]``."""
    where = key or "<root>"
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    item_type = args[0] if args else Any
    items = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _coerce_scalar(value: Any, annotation: Any, key: str) -> Any:
    """A ``bool``, ``int``, ``float`` or ``str``; ``True`` is not taken for a number."""
    where = key or "<root>"
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
    """A mapping as the dataclass ``cls`` (``None`` as its defaults), its checks run."""
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
