"""Splits of the synthetic scenes, and the seed of every scene of every split."""

from __future__ import annotations

from leanseg.data.base import DatasetError

SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_SCENES = 1_000_000  # per split and seed


def check_split(split: str) -> int:
    """The index of ``split`` in :data:`SPLITS`; raises :class:`DatasetError` if it is not one."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} of the synthetic scenes; valid: {SPLITS}")
    return SPLITS.index(split)


def check_counts(num_samples: int, seed: int) -> None:
    """Raise :class:`DatasetError` unless ``0 < num_samples <= MAX_SCENES`` and ``seed >= 0``."""
    if not 0 < num_samples <= MAX_SCENES:
        raise DatasetError(f"num_samples must be in 1..{MAX_SCENES}, got {num_samples}")
    if seed < 0:
        raise DatasetError(f"seed must be non-negative, got {seed}")


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """Seed of scene ``index`` of ``split``: ``seed * 10^7 + split * 10^6 + index``.

    ``split`` is 0, 1, 2 for train, val, test, and ``index < 10^6``, so no two (split, seed,
    index) triples share a scene: held-out scenes are never training scenes.
    """
    if not 0 <= index < MAX_SCENES:
        raise DatasetError(f"scene index must be in 0..{MAX_SCENES - 1}, got {index}")
    return seed * 10 * MAX_SCENES + check_split(split) * MAX_SCENES + index
