"""Reproducible, resumable training sample order.

Training is counted in iterations, not epochs. The sample at global position ``p`` (the p-th
sample drawn since the start of training, over all ranks) is fixed by the seed alone: epoch
``p // len(dataset)`` is a permutation drawn from ``(seed, epoch)``, and the augmentation of that
sample is drawn from its own seed ``(seed, p)``. So a run resumed at iteration ``i`` sees exactly
the batches the uninterrupted run would have seen, whatever the number of data-loader workers,
and the same seed gives the same loss curve on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

# Large odd constants keep the per-epoch and per-sample seed streams apart.
_EPOCH_STRIDE = 1_000_003
_SAMPLE_STRIDE = 7_919


class ResumableSampler(Sampler[tuple[int, int]]):
    """Endless ``(index, sample_seed)`` stream for one rank, starting at a given position.

    Args:
        dataset_size: number of samples in the dataset.
        seed: run seed.
        start: global position to start from (``iteration * batch_size * world_size``).
        rank: this process's rank; ranks take interleaved positions.
        world_size: number of processes.
    """

    def __init__(
        self,
        dataset_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset_size = dataset_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        epoch = position // self.dataset_size
        order = self._permutation(epoch)
        while True:
            if position // self.dataset_size != epoch:
                epoch = position // self.dataset_size
                order = self._permutation(epoch)
            index = int(order[position % self.dataset_size])
            yield index, self.seed * _SAMPLE_STRIDE + position
            position += self.world_size


class SeededSamples(Dataset):
    """Wraps a dataset so that ``dataset[(index, seed)]`` draws its augmentation from ``seed``.

    The global torch RNG is forked, so seeding a sample never disturbs the RNG of the process
    that loads it (the trainer's own RNG when ``num_workers == 0``).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
