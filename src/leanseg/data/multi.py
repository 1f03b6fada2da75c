"""Several datasets in one training run: union labels on load and mixed batches (thesis ch. 5).

- :class:`UnionLabels` remaps a dataset's label maps into the union label space when a sample is
  read, before the transforms (:mod:`leanseg.data.union`).
- :class:`MixedDataset` puts the datasets end to end, like ``ConcatDataset``.
- :class:`MixedSampler` draws the datasets in proportion to their weights, so a small dataset is
  oversampled against a large one (the thesis draws the driving sets 2:1 against ScanNet, 5.2).

The thesis found mixing the domains inside *every* batch essential for BatchNorm's population
statistics (5.2); it does not say how the draws were arranged. Ours: position ``p`` of the
training stream (counted over all ranks, as in :mod:`leanseg.training.sampling`) draws dataset
``k`` when ``u_p = frac(beta + p * phi)`` (``phi`` the golden ratio, ``beta`` from the seed)
falls in ``k``'s slice of ``[0, 1)``, the slices sized by the weights. This Weyl sequence is a
low-discrepancy one: every window of ``n`` consecutive positions holds each dataset within a
few draws of ``n * share``, so every batch mixes the datasets and the proportions are exact in
the long run (i.i.d. draws would leave a batch of 8 at shares 2:1 single-domain 4 % of the
time). Within a dataset, its ``j``-th draw takes the next image of a permutation drawn per pass
over it from ``(seed, dataset, pass)``, so every image is seen once per pass. All of it is a
function of the seed and the position, computed with exact 64-bit integer arithmetic: a
resumed run sees the same stream.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from leanseg.data.base import Sample
from leanseg.data.union import DatasetLabels

# 2**64 / golden ratio, odd: the Weyl sequence's step in 64-bit fixed point.
_PHI = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
# Mixers of the seed into the sequence's offset and the per-dataset permutations.
_SEED_MUL, _SEED_ADD = 0xD1B54A32D192ED03, 0x632BE59BD9B4E019
_PASS_STRIDE, _DATASET_STRIDE, _SAMPLE_STRIDE = 1_000_003, 7_777_777, 7_919
_CHUNK = 1 << 20


class UnionLabels(Dataset):
    """A dataset whose label maps are read in union classes (``labels.to_union``, on load).

    ``load_raw`` remaps the raw sample (``data check`` reads it); ``__getitem__`` remaps, then
    applies the wrapped dataset's ``transform``. With ``partial`` (training sets), classes that
    cover several union classes read as their label-set values (``labels.to_union_partial``).
    """

    def __init__(self, dataset: Any, labels: DatasetLabels, *, partial: bool = False) -> None:
        self.dataset = dataset
        self.labels = labels
        self.partial = partial

    def __len__(self) -> int:
        return len(self.dataset)

    def load_raw(self, index: int) -> Sample:
        sample = self.dataset.load_raw(index)
        sample["label"] = self.labels.remap(sample["label"], partial=self.partial)
        return sample

    def __getitem__(self, index: int) -> Sample:
        sample = self.load_raw(index)
        transform = getattr(self.dataset, "transform", None)
        return transform(sample) if transform is not None else sample


# Sample keys every dataset gives: a batch mixes datasets, and one dataset's instance maps or
# disparity would not collate with another's samples that lack them.
SHARED_KEYS = ("image", "label", "name")


class MixedDataset(Dataset):
    """Datasets end to end: index ``offsets[k] + i`` is sample ``i`` of dataset ``k``.

    Samples keep the :data:`SHARED_KEYS` only (``load_raw`` keeps everything, for checks).

    Args:
        parts: the datasets (each usually a :class:`UnionLabels`).
        names: their entry names (``data.datasets[k].name``).
        weights: their shares of the training draws, relative to each other.
    """

    def __init__(
        self, parts: Sequence[Any], names: Sequence[str], weights: Sequence[float]
    ) -> None:
        if not (len(parts) == len(names) == len(weights)) or not parts:
            raise ValueError("give as many names and weights as datasets, at least one")
        self.parts = list(parts)
        self.names = tuple(names)
        self.weights = tuple(float(w) for w in weights)
        self.sizes = tuple(len(part) for part in self.parts)
        self.offsets = tuple(int(x) for x in np.cumsum((0, *self.sizes)))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset k, index within it)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        part = bisect.bisect_right(self.offsets, index) - 1
        return part, index - self.offsets[part]

    def load_raw(self, index: int) -> Sample:
        part, local = self.locate(index)
        return self.parts[part].load_raw(local)

    def __getitem__(self, index: int) -> Sample:
        part, local = self.locate(index)
        sample = self.parts[part][local]
        return {key: sample[key] for key in SHARED_KEYS if key in sample}


class MixedSampler(Sampler[tuple[int, int]]):
    """Endless ``(global index, sample seed)`` stream drawing datasets by weight, per rank.

    A drop-in for :class:`leanseg.training.sampling.ResumableSampler` over a
    :class:`MixedDataset` (see the module docstring for the draw).

    Args:
        sizes: samples per dataset.
        weights: shares of the draws, relative to each other (positive).
        seed: run seed.
        start: global position to start from (``iteration * batch_size * world_size``).
        rank: this process's rank; ranks take interleaved positions.
        world_size: number of processes.
        block: consecutive positions that draw the same dataset; ``batch_size * world_size``
            gives single-dataset batches on every rank (the ablation of thesis 5.2's mixed
            batches), 1 mixes every batch.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        block: int = 1,
    ) -> None:
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("give one weight per dataset, at least one dataset")
        if any(size <= 0 for size in sizes):
            raise ValueError(f"cannot sample from an empty dataset (sizes {list(sizes)})")
        if any(not w > 0 for w in weights):
            raise ValueError(f"weights must be positive, got {list(weights)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.offsets = tuple(int(x) for x in np.cumsum((0, *self.sizes)))
        total = float(sum(weights))
        self.shares = tuple(float(w) / total for w in weights)
        cumulative = np.cumsum(self.shares)[:-1]
        # Slice ends in 64-bit fixed point; the last slice ends at 2**64.
        self.thresholds = [min(int(c * 2.0**64), _MASK) for c in cumulative]
        self.seed = seed
        self.offset = (seed * _SEED_MUL + _SEED_ADD) & _MASK
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.block = block

    def dataset_at(self, position: int) -> int:
        """The dataset drawn at a global position (the Weyl sequence steps once per block)."""
        step = position // self.block
        return bisect.bisect_right(self.thresholds, (self.offset + step * _PHI) & _MASK)

    def counts_before(self, position: int) -> np.ndarray:
        """Draws of each dataset at positions ``0 .. position - 1`` (vectorised, in chunks)."""
        counts = np.zeros(len(self.sizes), dtype=np.int64)
        thresholds = np.array(self.thresholds, dtype=np.uint64)
        whole, rest = divmod(position, self.block)
        for low in range(0, whole, _CHUNK):
            steps = np.arange(low, min(whole, low + _CHUNK), dtype=np.uint64)
            u = steps * np.uint64(_PHI) + np.uint64(self.offset)  # wraps modulo 2**64
            drawn = np.searchsorted(thresholds, u, side="right")
            counts += np.bincount(drawn, minlength=len(self.sizes)) * self.block
        if rest:
            counts[self.dataset_at(whole * self.block)] += rest
        return counts

    def _permutation(self, dataset: int, epoch: int) -> torch.Tensor:
        seed = self.seed * _PASS_STRIDE + dataset * _DATASET_STRIDE + epoch
        return torch.randperm(self.sizes[dataset], generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        counts = self.counts_before(self.start)
        orders: dict[int, tuple[int, torch.Tensor]] = {}
        position = self.start
        while True:
            k = self.dataset_at(position)
            draw = int(counts[k])
            counts[k] += 1
            if (position - self.start) % self.world_size == self.rank:
                epoch = draw // self.sizes[k]
                if k not in orders or orders[k][0] != epoch:
                    orders[k] = (epoch, self._permutation(k, epoch))
                index = self.offsets[k] + int(orders[k][1][draw % self.sizes[k]])
                yield index, self.seed * _SAMPLE_STRIDE + position
            position += 1
