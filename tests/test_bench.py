"""Tests of parameter, FLOP, activation-memory, peak-memory and latency measurement."""

from __future__ import annotations

import gc
import json
import math
import weakref
from io import StringIO

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from leanseg.profiling import memory
from leanseg.profiling.benchmark import benchmark_model, format_bench
from leanseg.profiling.flops import count_flops, count_parameters
from leanseg.profiling.latency import Latency, measure_latency
from leanseg.profiling.machine import describe_machine
from leanseg.profiling.memory import activation_memory, measure_memory, measure_peak_memory


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))
    expected = (4 * 3 * 9 + 4) + (4 + 4) + 2 * 4
    assert count_parameters(model) == expected
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == expected - (4 * 3 * 9 + 4)


def test_flops_conv2d() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 10, 12)
    assert count_flops(conv, x).total == 2 * 8 * 10 * 12 * (3 * 3 * 3)


def test_flops_linear() -> None:
    linear = nn.Linear(5, 7)
    assert count_flops(linear, torch.randn(4, 5)).total == 4 * 7 * 5
    assert count_flops(linear, torch.randn(2, 3, 5)).total == 2 * 3 * 7 * 5


def test_flops_grouped_conv() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    x = torch.randn(1, 8, 9, 9)
    assert count_flops(conv, x).total == 16 * 9 * 9 * (8 // 4) * 3 * 3
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_flops(depthwise, x).total == 8 * 9 * 9 * 1 * 3 * 3


def test_flops_strided_dilated_conv() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)
    x = torch.randn(1, 4, 11, 13)
    height, width = conv_out(11, 3, 2, 2, 2), conv_out(13, 3, 2, 2, 2)
    assert conv(x).shape[-2:] == (height, width)
    assert count_flops(conv, x).total == 6 * height * width * 4 * 3 * 3


def test_flops_conv1d_conv3d() -> None:
    conv1 = nn.Conv1d(3, 5, 3, stride=2)
    assert count_flops(conv1, torch.randn(2, 3, 20)).total == 2 * 5 * conv_out(20, 3, 2) * 3 * 3
    conv3 = nn.Conv3d(2, 4, 3, padding=1)
    assert count_flops(conv3, torch.randn(1, 2, 4, 5, 6)).total == 4 * 4 * 5 * 6 * 2 * 27


@pytest.mark.parametrize("groups", [1, 2])
def test_flops_conv_transpose(groups: int) -> None:
    deconv = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=groups)
    x = torch.randn(1, 4, 5, 7)
    # every input element is multiplied into (C_out / groups) * k * k outputs
    assert count_flops(deconv, x).total == 4 * 5 * 7 * (6 // groups) * 4 * 4


class Custom(nn.Module):
    """A module that reports its own cost; its inner conv must not be counted."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def flops(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        self.calls.append((tuple(inputs[0].shape), tuple(output.shape)))
        return 123


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.context = Custom()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.context(self.backbone(x))
        return F.interpolate(self.head(x), scale_factor=2.0, mode="bilinear")


def test_custom_flops_names_and_grouping() -> None:
    model = Net()
    x = torch.randn(1, 3, 8, 8)
    flops = count_flops(model, x)
    stem = 4 * 8 * 8 * 3 * 9
    head = 2 * 4 * 4 * 4
    assert flops.by_module == {"backbone.0": stem, "context": 123, "head": head}
    assert flops.total == stem + 123 + head
    assert flops.by_top_level() == {"backbone": stem, "context": 123, "head": head}
    assert model.context.calls == [((1, 4, 4, 4), (1, 4, 4, 4))]
    assert flops.gflops == pytest.approx(flops.total / 1e9)


def test_flops_shared_module_counted_per_call_and_mode_restored() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.linear(self.linear(x))

    model = Twice().train()
    assert count_flops(model, torch.randn(2, 3)).by_module == {"linear": 2 * 2 * 3 * 3}
    assert model.training and model.linear.training
    model.linear.eval()  # a mixed model keeps each module's own flag
    count_flops(model, torch.randn(2, 3))
    assert model.training and not model.linear.training


def test_activation_memory_linear_relu() -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU())
    x = torch.randn(4, 5)
    # Linear saves its input (for the weight gradient) and its weight (a parameter: excluded);
    # ReLU saves its output.
    expected = x.numel() * x.element_size() + 4 * 7 * 4
    assert activation_memory(model, x) == expected
    with torch.no_grad():
        assert activation_memory(model, x) == 0


def test_activation_memory_frees_the_activations() -> None:
    # ReLU saves its own output; returning that very tensor from the pack hook used to make a
    # reference cycle through autograd's C++ graph that kept every activation alive forever.
    outputs = []
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU())
    model[1].register_forward_hook(lambda mod, inp, out: outputs.append(weakref.ref(out)))
    assert activation_memory(model, torch.randn(4, 5)) > 0
    gc.collect()
    assert outputs and outputs[0]() is None


def test_activation_memory_counts_each_storage_once() -> None:
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(5, 6)

        def forward(self, x: Tensor) -> Tensor:
            hidden = self.linear(x)
            # ``mul`` saves both operands: here a tensor and a view of the same storage.
            return hidden * hidden.view(-1).view_as(hidden)

    x = torch.randn(3, 5)
    hidden_bytes = 3 * 6 * 4
    assert activation_memory(Square(), x) == x.numel() * 4 + hidden_bytes


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_activation_memory_restores_mode_and_running_stats(frozen_bn: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    if frozen_bn:  # fine-tuning with frozen BN: the model trains, its BN stays in eval mode
        model.train()
        model[1].eval()
    modes = [module.training for module in model.modules()]
    before = {name: buf.clone() for name, buf in model.named_buffers()}
    assert activation_memory(model, torch.randn(2, 3, 8, 8)) > 0
    assert [module.training for module in model.modules()] == modes
    for name, buf in model.named_buffers():
        assert torch.equal(buf, before[name]), name


def test_activation_memory_sees_checkpointing() -> None:
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    stem = nn.Conv2d(3, 4, 1)
    model = nn.ModuleList([stem, block])
    x = torch.randn(1, 3, 16, 16)

    def plain(mod: nn.Module, inputs: Tensor) -> Tensor:
        return mod[1](mod[0](inputs))

    def checkpointed(mod: nn.Module, inputs: Tensor) -> Tensor:
        return checkpoint(mod[1], mod[0](inputs), use_reentrant=False)

    assert activation_memory(model, x, checkpointed) < activation_memory(model, x, plain)


def test_measure_latency() -> None:
    calls = []
    latency = measure_latency(lambda: calls.append(sum(range(1000))), warmup=2, repeats=5)
    assert len(calls) == 7
    assert latency.repeats == 5 and latency.warmup == 2
    assert 0 < latency.min_ms <= latency.median_ms <= latency.max_ms
    assert latency.iqr_ms >= 0 and latency.std_ms >= 0
    with pytest.raises(ValueError):
        measure_latency(lambda: None, repeats=0)


def test_latency_from_times() -> None:
    latency = Latency.from_times([4.0, 1.0, 3.0, 2.0], warmup=1)
    assert (latency.median_ms, latency.min_ms, latency.max_ms) == (2.5, 1.0, 4.0)
    assert latency.iqr_ms == pytest.approx(1.5) and latency.mean_ms == 2.5
    assert latency.repeats == 4 and latency.warmup == 1
    with pytest.raises(ValueError):
        Latency.from_times([])


def test_describe_machine_is_json_and_matches_benchmark_model() -> None:
    machine = describe_machine()
    json.dumps(machine, allow_nan=False)
    assert machine["device"] == "cpu" and machine["device_name"]
    assert machine["cpu_count"] >= machine["cpus_available"] >= 1
    assert machine["num_threads"] == torch.get_num_threads()
    result = benchmark_model(TinySegmentor(), (9, 11), warmup=0, repeats=1).to_dict()
    shared = ("device", "device_name", "torch_version", "cpu_count", "cpus_available")
    assert {key: result[key] for key in shared} == {key: machine[key] for key in shared}


def test_measure_memory_cpu() -> None:
    num_bytes = 64 * 1024**2
    result = measure_memory(lambda: torch.ones(num_bytes // 4))
    assert result.method in {"vmhwm_clear_refs", "ru_maxrss"}
    assert result.peak_bytes >= result.baseline_bytes > 0
    if result.method == "vmhwm_clear_refs":
        assert result.increase_bytes >= num_bytes // 2
    assert measure_peak_memory(lambda: None) > 0


def test_measure_memory_falls_back_to_getrusage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_CLEAR_REFS", "/nonexistent/clear_refs")
    result = measure_memory(lambda: None)
    assert result.method == "ru_maxrss"
    assert result.peak_bytes > 0


class TinySegmentor(nn.Module):
    def __init__(self, num_classes: int = 3, with_losses: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Conv2d(4, num_classes, 1)
        self.loss_calls = 0
        if with_losses:
            self.losses = self._losses

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.body(images))

    def _losses(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        self.loss_calls += 1
        assert targets["label"].shape == (images.shape[0], *images.shape[-2:])
        assert targets["label"].dtype == torch.long
        return {"ce": F.cross_entropy(self(images), targets["label"])}


@pytest.mark.parametrize("train", [False, True])
def test_benchmark_model_fields(train: bool) -> None:
    model = TinySegmentor()
    model.eval()
    buffers = {name: buf.clone() for name, buf in model.named_buffers()}
    result = benchmark_model(model, (17, 23), batch=2, train=train, warmup=1, repeats=2)

    assert result.train is train
    assert result.input_shape == [2, 3, 17, 23]
    assert result.parameters == count_parameters(model)
    expected_flops = 2 * 17 * 23 * (4 * 3 * 9 + 3 * 4)
    assert result.flops.total == expected_flops
    assert result.activation_memory_bytes > 0
    assert result.peak_memory.peak_bytes > 0 and result.peak_memory.method
    assert 0 < result.latency.min_ms <= result.latency.median_ms <= result.latency.max_ms
    assert result.num_threads == torch.get_num_threads()
    assert result.cpu_count >= result.cpus_available >= 1
    assert result.torch_version == torch.__version__ and result.device_name

    # Left as found: eval mode, running statistics and (absent) gradients.
    assert not model.training
    for name, buf in model.named_buffers():
        assert torch.equal(buf, buffers[name]), name
    assert all(p.grad is None for p in model.parameters())

    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["flops"] == expected_flops
    assert data["gflops"] == pytest.approx(expected_flops / 1e9)
    assert data["gflops_per_image"] == pytest.approx(expected_flops / 2e9)
    assert data["activation_memory_mib"] == pytest.approx(result.activation_memory_bytes / 2**20)
    assert data["peak_memory_method"] == result.peak_memory.method
    assert set(data["flops_by_top_level"]) == {"body", "classifier"}
    assert math.isfinite(data["latency_median_ms"])

    console = Console(file=StringIO(), width=120)
    console.print(format_bench(result))
    assert "GFLOPs" in console.file.getvalue()


def test_benchmark_model_uses_losses_method() -> None:
    model = TinySegmentor(with_losses=True)
    result = benchmark_model(model, (9, 11), train=True, warmup=1, repeats=2)
    # one call for activation memory, then warm-up + repeats + one peak-memory step
    assert model.loss_calls == 1 + 1 + 2 + 1
    assert result.activation_memory_bytes > 0
