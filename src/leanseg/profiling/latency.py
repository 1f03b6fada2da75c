"""How long a call takes: repeated wall-clock timing and its summary.

:func:`measure_latency` times a callable; :class:`Latency` summarises the times, also of calls
timed elsewhere (round-robin over several models in the benchmarks).

Convention: **latency** is the median wall time over repeats after warm-up, with CUDA
synchronised before and after every timed call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from leanseg.profiling.state import synchronize

__all__ = ["Latency", "measure_latency"]


@dataclass
class Latency:
    """Wall-clock times of repeated calls, in milliseconds.

    Attributes:
        median_ms: median over repeats (the figure to report).
        min_ms: fastest repeat.
        max_ms: slowest repeat.
        iqr_ms: interquartile range (75th - 25th percentile, linear interpolation).
        mean_ms: mean over repeats.
        std_ms: population standard deviation over repeats.
        repeats: number of timed calls.
        warmup: number of untimed calls before them.
    """

    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    warmup: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float], warmup: int = 0) -> Latency:
        """Summarise timed calls measured elsewhere (e.g. round-robin over several models).

        Args:
            times_ms: the wall time of every timed call, in milliseconds; at least one.
            warmup: how many untimed calls came before them.
        """
        if not times_ms:
            raise ValueError("no times to summarise")
        values = np.asarray(times_ms, dtype=np.float64)
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        return cls(
            median_ms=float(q50),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            iqr_ms=float(q75 - q25),
            mean_ms=float(values.mean()),
            std_ms=float(values.std()),
            repeats=len(values),
            warmup=warmup,
        )


def measure_latency(
    fn: Callable[[], Any],
    warmup: int = 3,
    repeats: int = 10,
    device: torch.device | str | None = None,
) -> Latency:
    """Time ``fn()`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats`` timed.

    On CUDA the device is synchronised before and after every timed call, so queued kernels are
    included. With ``device=None`` CUDA is synchronised if it has been initialised.

    Args:
        fn: the work to time.
        warmup: untimed calls first (allocator, cuDNN autotuning, caches).
        repeats: timed calls, at least 1.
        device: the device ``fn`` runs on.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return Latency.from_times(times, warmup=warmup)
