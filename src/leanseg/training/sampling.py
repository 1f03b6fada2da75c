"""Reproducible, resumable training sample order.

Training is counted in iterations, not epochs. The sample at global position ``p`` (the p-th
sample drawn since the start of training, over all ranks) is fixed by the seed alone: epoch
``p // len(dataset)`` is a permutation drawn from ``(seed, epoch)``, and the augmentation of that
sample is drawn from its own seed ``(seed, p)``. So a run resumed at iteration ``i`` sees exactly
the batches the uninterrupted run would have seen, whatever the number of data-loader workers,
and the same seed gives the same loss curve on CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from leanseg.config import CropStage
from leanseg.data.transforms import crop_size_override, sample_generator, scale_factor_override

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

    def __getitem__(self, key: tuple[Any, ...]) -> Any:
        """``key``: ``(index, seed)``, or ``(index, seed, crop_size, scale)`` from
        :class:`CropSchedule` (``None``: the dataset's own crop size, scale factor 1)."""
        index, seed, crop_size, scale = (*key, None, None) if len(key) == 2 else key
        generator = torch.Generator().manual_seed(seed)
        with (
            sample_generator(generator),
            crop_size_override(crop_size),
            scale_factor_override(scale),
        ):
            if threading.current_thread() is not threading.main_thread():
                # A prefetching thread: leanseg's transforms draw from ``generator``; the global
                # generator belongs to the training step running beside it.
                return self.dataset[index]
            with torch.random.fork_rng(devices=[]):
                # Transforms of one's own that draw from the global generator stay seeded.
                torch.manual_seed(seed)
                return self.dataset[index]


class CropSchedule(Sampler[tuple[int, int, tuple[int, int] | None, float | None]]):
    """Adds the crop size and scale factor of progressive resizing (``data.crop_schedule``) to
    a sampler's keys.

    The k-th key drawn belongs to iteration ``start_iteration + k // batch_size``; its crop size
    and scale factor are those of the first stage whose ``until`` lies beyond that iteration, or
    ``None`` (the dataset's own ``crop_size`` and scale) after the last stage. Sample order and
    seeds are the wrapped sampler's, so a resumed run sees the same crops as the uninterrupted one.
    """

    def __init__(
        self,
        sampler: Sampler[tuple[int, int]],
        stages: list[CropStage],
        *,
        start_iteration: int,
        batch_size: int,
    ) -> None:
        self.sampler = sampler
        self.stages = sorted(stages, key=lambda stage: stage.until)
        self.start_iteration = start_iteration
        self.batch_size = batch_size

    def stage_at(self, iteration: int) -> CropStage | None:
        """The stage of ``iteration``; ``None`` after the last stage."""
        for stage in self.stages:
            if iteration < stage.until:
                return stage
        return None

    def __iter__(self) -> Iterator[tuple[int, int, tuple[int, int] | None, float | None]]:
        for drawn, (index, seed) in enumerate(self.sampler):
            stage = self.stage_at(self.start_iteration + drawn // self.batch_size)
            if stage is None:
                yield index, seed, None, None
            else:
                yield index, seed, tuple(stage.crop_size), stage.scale  # type: ignore[misc]
