"""``benchmarks/speed/step_profile.py``: operator calls sorted into the groups it reports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def step_profile(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "speed"))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("step_profile")


def test_op_group_tells_depthwise_from_dense_convolutions(step_profile):
    group = step_profile.op_group
    # Backward: (grad_output, input, weight, ...); forward: (input, weight, bias, ...).
    backward_depthwise = [[2, 8, 6, 6], [2, 8, 6, 6], [8, 1, 5, 5]]
    backward_dense = [[2, 8, 6, 6], [2, 8, 6, 6], [8, 8, 1, 1]]
    assert group("aten::convolution_backward", backward_depthwise) == "depthwise conv backward"
    assert group("aten::convolution_backward", backward_dense) == "conv backward"
    assert group("aten::mkldnn_convolution", [[2, 8, 6, 6], [8, 1, 5, 5]]) == (
        "depthwise conv forward"
    )
    assert group("aten::mkldnn_convolution", [[2, 8, 6, 6], [16, 8, 1, 1]]) == "conv forward"
    # A single-channel image's first convolution is not depthwise: one output channel.
    assert group("aten::mkldnn_convolution", [[2, 1, 6, 6], [1, 1, 3, 3]]) == "conv forward"
    assert group("aten::_log_softmax", [[2, 3, 8, 8]]) == "full-resolution tail"
    assert group("aten::add", [[2], [2]]) == "other"


def test_a_profiled_step_has_its_depthwise_backward_and_tail_counted(step_profile):
    torch.manual_seed(0)
    dense = torch.nn.Conv2d(3, 8, 3, padding=1)
    depthwise = torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)
    images, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 8, (2, 32, 32))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        logits = depthwise(dense(images))
        upsampled = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
        F.cross_entropy(upsampled, labels).backward()
    groups = step_profile.group_times(prof, steps=1)
    for name in ("depthwise conv forward", "conv forward", "full-resolution tail"):
        assert groups[name]["ms_per_iteration"] > 0, name
    assert groups["depthwise conv backward"]["ms_per_iteration"] >= 0
    assert groups["conv backward"]["ms_per_iteration"] >= 0
    assert sum(entry["share"] for entry in groups.values()) == pytest.approx(1.0, abs=0.01)


def test_the_other_group_is_listed_by_operator_largest_first(step_profile):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    images = torch.randn(2, 3, 64, 64)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            features = torch.relu(conv(images))
        (features * 2).sum().backward()
    largest = step_profile.top_operators(prof, steps=1, count=3)
    names = [entry["operator"] for entry in largest]
    assert len(largest) == 3 and "aten::mkldnn_convolution" not in names  # not "other"
    times = [entry["ms_per_iteration"] for entry in largest]
    assert times == sorted(times, reverse=True)
    everything = step_profile.top_operators(prof, steps=1, count=1000)
    assert "aten::relu" in {entry["operator"] for entry in everything}
