"""Small tests of a value that has the right type, from which the sections build their tables.

Each section module (:mod:`~leanseg.config.data`, :mod:`~leanseg.config.train`,
:mod:`~leanseg.config.eval`, :mod:`~leanseg.config.run`) declares a :data:`RangeTable`: dotted key
-> (test, what the value must be). :mod:`leanseg.config.validation` merges them into
``VALUE_RANGES`` and runs them after the type check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from leanseg.config import limits

# Dotted key -> (test of the value, what the value must be); the error message names the key,
# the requirement and the value given.
RangeTable = dict[str, tuple[Callable[[Any], bool], str]]


def finite(value: Any) -> bool:
    """Whether ``value`` is not a NaN or infinite float (other values pass)."""
    return not isinstance(value, float) or math.isfinite(value)


def positive(value: Any) -> bool:
    """Whether ``value`` is a finite number above 0."""
    return finite(value) and value > 0


def non_negative(value: Any) -> bool:
    """Whether ``value`` is a finite number of 0 or more."""
    return finite(value) and value >= 0


def optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``test`` that also lets ``None`` pass."""
    return lambda value: value is None or test(value)


# A batch size, the same bounds for the training batches and the evaluation batches.
BATCH_SIZE: tuple[Callable[[Any], bool], str] = (
    lambda v: 0 < v <= limits.MAX_BATCH_SIZE,
    f"a positive integer, at most {limits.MAX_BATCH_SIZE}",
)
