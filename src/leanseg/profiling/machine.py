"""Where a figure was measured, recorded beside it: device, CPU or GPU name, threads, load.

:func:`describe_machine` is stored with every ``leanseg bench`` result and every benchmark record,
since timings on a shared machine depend on what else runs.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import torch

__all__ = ["describe_machine"]


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def _cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a figure is measured, recorded beside it: ``leanseg bench`` and the benchmarks.

    Args:
        device: the device the figure is measured on.

    Returns:
        ``device``; ``device_name`` (CPU model or GPU name); ``platform``; ``python_version``;
        ``torch_version``; ``num_threads`` (``torch.get_num_threads()`` now); ``cpu_count`` (of
        the machine); ``cpus_available`` (CPUs this process may run on, its affinity mask);
        ``load_average`` (1, 5 and 15 minutes, ``None`` where the system has none), since
        timings on a shared machine depend on what else runs.
    """
    device = torch.device(device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 1,
        "cpus_available": _cpus_available(),
        "load_average": None if load is None else [round(value, 2) for value in load],
    }
