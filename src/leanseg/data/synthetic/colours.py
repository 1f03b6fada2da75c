"""Random colours for the synthetic scenes, as float32 RGB in 0..255.

Colour is deliberately a poor cue: greys are shared by facades, pavements, road and overcast
sky, and many objects take any colour at all.
"""

from __future__ import annotations

import numpy as np


def as_rgb(values: object) -> np.ndarray:
    """``values`` as float32 clipped to 0..255."""
    return np.clip(np.asarray(values, dtype=np.float32), 0, 255)


def grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 6.0) -> np.ndarray:
    """A grey of brightness ``U(lo, hi)`` with a small random tint per channel."""
    return as_rgb(rng.uniform(lo, hi) + rng.normal(0, tint, 3))


def near(rng: np.random.Generator, rgb: tuple[float, float, float], sd: float) -> np.ndarray:
    """``rgb`` with normal noise of ``sd`` per channel."""
    return as_rgb(np.asarray(rgb) + rng.normal(0, sd, 3))


def any_colour(rng: np.random.Generator) -> np.ndarray:
    return as_rgb(rng.uniform(15, 240, 3))


def foliage_colour(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.7:
        return near(rng, (70, 105, 45), 18)
    if k < 0.85:
        return near(rng, (40, 60, 35), 10)  # dark evergreen
    return near(rng, (150, 120, 50), 25)  # autumn
