"""Decoded training samples held in memory (``data.cache``).

Reading and decoding a CamVid PNG pair costs about as much as the augmentation of it, every
epoch. :func:`cache_in_memory` wraps a training set so that each sample's raw arrays (``uint8``
image and label, as ``load_raw`` returns them, before any random transform) are decoded once and
then served from memory; the dataset's transform still runs on every draw, so the batches are
exactly those read from disk (``tests/test_fast_training.py`` checks it).

The cached arrays are made read-only: the transforms build new arrays, and a transform that
wrote into its input would fail loudly instead of corrupting later epochs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from leanseg.data.base import Sample
from leanseg.data.multi import MixedDataset

# Refuse to cache more than this share of the memory the machine has available.
MAX_MEMORY_SHARE = 0.5


class CacheTooLarge(ValueError):
    """The dataset would not fit in the memory share the cache may use."""


class InMemorySamples(Dataset):
    """A dataset whose raw samples are decoded once and kept, read-only, in memory.

    Args:
        dataset: a dataset with ``load_raw(index)`` and a ``transform`` (its own, or that of the
            dataset it wraps, as :class:`~leanseg.data.multi.UnionLabels` has).
        available_bytes: memory that may be assumed free; ``None`` reads ``MemAvailable``.
    """

    def __init__(self, dataset: Any, *, available_bytes: int | None = None) -> None:
        self.dataset = dataset
        self.transform = _transform_of(dataset)
        self._raw: dict[int, Sample] = {}
        self._available = available_bytes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # Class tables and other attributes are the wrapped dataset's.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def cached(self) -> int:
        """How many samples are held."""
        return len(self._raw)

    def load_raw(self, index: int) -> Sample:
        """The raw sample (its arrays read-only, shared between calls)."""
        sample = self._raw.get(index)
        if sample is None:
            sample = self.dataset.load_raw(index)
            for value in sample.values():
                if isinstance(value, np.ndarray):
                    value.setflags(write=False)
            if not self._raw:
                self._check_fits(sample)
            self._raw[index] = sample
        return dict(sample)

    def __getitem__(self, index: int) -> Sample:
        sample = self.load_raw(index)
        return self.transform(sample) if self.transform is not None else sample

    def _check_fits(self, sample: Sample) -> None:
        per_sample = sum(v.nbytes for v in sample.values() if isinstance(v, np.ndarray))
        needed = per_sample * len(self)
        available = self._available if self._available is not None else _available_memory()
        if available is not None and needed > MAX_MEMORY_SHARE * available:
            raise CacheTooLarge(
                f"data.cache: the {len(self)} decoded training samples need about "
                f"{needed / 2**30:.1f} GiB (from the first one), more than half of the "
                f"{available / 2**30:.1f} GiB available; set data.cache: false"
            )


def cache_in_memory(dataset: Any) -> Any:
    """``dataset`` with its raw samples cached; datasets without ``load_raw`` are returned as
    they are (the synthetic scenes cache their rendering themselves)."""
    if isinstance(dataset, MixedDataset):
        parts = [cache_in_memory(part) for part in dataset.parts]
        return MixedDataset(parts, dataset.names, dataset.weights)
    if isinstance(dataset, InMemorySamples) or not hasattr(dataset, "load_raw"):
        return dataset
    if getattr(dataset, "cache", False) is True:  # the synthetic scenes' own cache
        return dataset
    return InMemorySamples(dataset)


def _transform_of(dataset: Any) -> Any:
    if hasattr(dataset, "transform"):
        return dataset.transform
    inner = getattr(dataset, "dataset", None)
    return getattr(inner, "transform", None)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
