"""How a training process is set up (``leanseg.runtime.process``): threads, subnormal flushing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from leanseg.config import TrainConfig
from leanseg.runtime.process import set_up_device

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


@pytest.fixture
def restore_float_mode() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _flushes() -> bool:
    return torch.tensor([SUBNORMAL], dtype=torch.float32).item() == 0.0


def test_cpu_training_flushes_subnormals(restore_float_mode: None) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals (no SSE3)")
    assert not _flushes()  # subnormals exist before
    device = set_up_device(TrainConfig(device="cpu", num_threads=1))
    assert device.type == "cpu" and torch.get_num_threads() == 1
    assert _flushes()


def test_flushing_can_be_left_off(restore_float_mode: None) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals (no SSE3)")
    set_up_device(TrainConfig(device="cpu", flush_denormal=False))
    assert not _flushes()
