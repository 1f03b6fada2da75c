"""Where and how a training process runs: threads, device, process group, seeds.

The first thing a run does (:func:`set_up_device`, then :func:`seed_everything`), before any data
or model is built, so the same seed builds the same weights on every rank.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from leanseg.config import TrainConfig
from leanseg.config.limits import clamp_threads
from leanseg.runtime import distributed


def select_device(name: str) -> torch.device:
    """``auto`` picks the local CUDA device when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank())
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_up_device(train_cfg: TrainConfig) -> torch.device:
    """Apply a fixed ``train.num_threads``, at most one per core (``auto`` is left to the trainer's
    :class:`~leanseg.runtime.cpu_share.ThreadGovernor`), pick ``train.device``, flush
    subnormals on the CPU (``train.flush_denormal``) and join the process group (if the
    environment describes one, :func:`leanseg.runtime.distributed.init_from_environment`).

    Flushing is a process-wide floating-point mode (``torch.set_flush_denormal``); it stays on
    after training. ``train.flush_denormal: false`` leaves the mode as it is.
    """
    if isinstance(train_cfg.num_threads, int):
        # More threads than cores are clamped to the cores, with a warning.
        torch.set_num_threads(clamp_threads(train_cfg.num_threads, "train.num_threads"))
    device = select_device(train_cfg.device)
    if device.type == "cpu" and train_cfg.flush_denormal:
        torch.set_flush_denormal(True)  # False only where the CPU cannot (not SSE3 / ARM)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.init_from_environment(device)
    return device
