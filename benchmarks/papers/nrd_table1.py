"""NRD Table 1 (and Table 3) costs: GFLOPs, CPU latency and decoder memory at 1024x2048.

Builds ResNet-50 without dilation (output stride 32, MMSegmentation V1c deep stem) + ASPP (512
channels) with each decoder, for Cityscapes (19 classes), and reports:

- GFLOPs (fused multiply-adds, ``leanseg.profiling.flops.count_flops``) of the decoder (head)
  and of the whole model at 1x3x1024x2048, beside the values of NRD Table 1 / Table 3;
- the NRD / DeepLabV3+ decoder FLOP ratio (issue 5 asks for <= 30 %);
- CPU latency of the decoders alone on the same cached encoder features (median after warm-up
  rounds, decoders timed in alternating rounds within one process; issue 5 asks for NRD <= 50 %
  of DeepLabV3+);
- decoder memory of NRD as leanseg evaluates it (weights at the cell resolution) against the
  reference-implementation approach (θ expanded to stride 4): analytically, as activation memory of
  a training forward (tensors saved for backward, encoder features excluded), and as the increase
  of peak resident memory during an inference forward.

Counting convention: 1 FLOP = 1 fused multiply-add of a convolution, linear layer, NRD's dynamic
MLP (batched matmuls) or CARAFE's reassembly; bias additions, normalisation, activations, pooling,
softmax and interpolation are not counted (``leanseg.profiling.flops`` module docstring).

Usage::

    nice -n 10 .venv/bin/python benchmarks/papers/nrd_table1.py \
        --json benchmarks/results/nrd_table1.json
    .venv/bin/python benchmarks/papers/nrd_table1.py --size 256 512 --repeats 3   # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.heads.nrd import NRDHead, expanded_forward
from leanseg.profiling.flops import count_flops
from leanseg.profiling.memory import activation_memory, measure_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import machine, round_robin, summary, write_result

NUM_CLASSES = 19
MIB = 1024**2

# name -> (head options, paper decoder GFLOPs, paper total GFLOPs, source)
DECODERS: dict[str, tuple[dict[str, Any], float | None, float | None, str]] = {
    "deeplabv3plus": ({"name": "deeplabv3plus"}, 76.4, 290.6, "Table 1"),
    "nrd": ({"name": "nrd"}, 20.4, 234.6, "Table 1"),
    "bilinear": ({"name": "bilinear"}, 1.3, 215.5, "Table 1"),
    "nrd_noguide": ({"name": "nrd", "use_guidance": False}, 2.6, 216.8, "Table 1"),
    "duc": ({"name": "duc", "out_stride": 1, "kernel_size": 3}, None, 336.1, "Table 3"),
    "carafe": ({"name": "carafe"}, None, 203.0, "Table 3"),
}
LATENCY_DECODERS = ["deeplabv3plus", "nrd", "nrd_noguide", "bilinear"]


def build(head: dict[str, Any]) -> nn.Module:
    cfg = ModelConfig(
        backbone={"name": "resnet50", "deep_stem": True},
        context={"name": "aspp", "out_channels": 512},
        head=head,
    )
    torch.manual_seed(0)
    return build_segmentor(cfg, num_classes=NUM_CLASSES).eval()


class CachedHead(nn.Module):
    """Runs a head on fixed encoder features; the features are buffers (excluded from memory)."""

    def __init__(
        self, head: nn.Module, features: dict[int, Tensor], size: tuple[int, int], mode: str
    ) -> None:
        super().__init__()
        self.head = head
        self.size = size
        self.mode = mode
        self.strides = sorted(features)
        for stride, value in features.items():
            self.register_buffer(f"feature_{stride}", value)

    def forward(self, _: Tensor) -> Tensor:
        features = {s: getattr(self, f"feature_{s}") for s in self.strides}
        if self.mode == "expanded":
            return expanded_forward(self.head, features)
        if self.mode == "grid":
            return self.head.grid_scores(features)
        return self.head(features, self.size)


def decoder_memory(model: nn.Module, features: dict[int, Tensor], size: tuple[int, int]) -> dict:
    head: NRDHead = model.head
    grid_pixels = (size[0] // 4) * (size[1] // 4)
    cells = (size[0] // 32) * (size[1] // 32)
    num_params = head.num_dynamic_parameters
    result: dict[str, Any] = {
        "size": list(size),
        "P": num_params,
        "analytic_theta_cells_mib": num_params * cells * 4 / MIB,
        "analytic_theta_expanded_mib": num_params * grid_pixels * 4 / MIB,
    }
    dummy = torch.zeros(1)
    for mode in ("grid", "expanded"):
        wrapper = CachedHead(head, features, size, mode)
        with torch.enable_grad():
            saved = activation_memory(wrapper, dummy)

        def run(wrapper: nn.Module = wrapper) -> None:
            with torch.no_grad():
                wrapper(dummy)

        run()
        peak = measure_memory(run)
        result[mode] = {
            "training_activation_mib": saved / MIB,
            "inference_peak_increase_mib": peak.increase_bytes / MIB,
            "peak_method": peak.method,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 2048))
    parser.add_argument("--memory-size", type=int, nargs=2, action="append")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], help="decoders to leave out")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared, oversubscribed CPU, multi-threaded small "
        "batched matmuls spend most of their time in OpenMP barriers)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    memory_sizes = [tuple(s) for s in (args.memory_size or [(512, 1024), size])]
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))

    report: dict[str, Any] = {
        "input": [1, 3, *size],
        "num_classes": NUM_CLASSES,
        "encoder": "resnet50 (deep stem, no dilation, OS 32) + ASPP 512 (separable, 3x3 fusion)",
        "convention": "GFLOPs = 1e9 fused multiply-adds of conv/linear, NRD dynamic-MLP matmuls "
        "and CARAFE reassembly; BN, activations, pooling, softmax, interpolation not counted",
        "machine": machine(),  # its load_average is the load at the start
        "decoders": {},
    }
    heads: dict[str, nn.Module] = {}
    encoder_features: dict[int, Tensor] | None = None
    for name, (head_cfg, paper_dec, paper_total, source) in DECODERS.items():
        if name in args.skip:
            continue
        model = build(head_cfg)
        flops = count_flops(model, images)
        groups = flops.by_top_level()
        entry = {
            "gflops_decoder": groups.get("head", 0) / 1e9,
            "gflops_encoder": (groups.get("backbone", 0) + groups.get("context", 0)) / 1e9,
            "gflops_total": flops.gflops,
            "paper_gflops_decoder": paper_dec,
            "paper_gflops_total": paper_total,
            "paper_source": source,
            "decoder_params_m": sum(p.numel() for p in model.head.parameters()) / 1e6,
            "model_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "decoder_gflops_by_module": {
                k[len("head.") :]: v / 1e9
                for k, v in flops.by_module.items()
                if k.startswith("head")
            },
        }
        report["decoders"][name] = entry
        heads[name] = model.head
        if encoder_features is None:
            with torch.no_grad():
                encoder_features = model.features(images)
        print(
            f"{name:14s} decoder {entry['gflops_decoder']:7.2f} (paper {paper_dec}) "
            f"total {entry['gflops_total']:7.2f} (paper {paper_total})",
            file=sys.stderr,
        )
    assert encoder_features is not None
    decoders = report["decoders"]
    if "nrd" in decoders and "deeplabv3plus" in decoders:
        report["nrd_over_deeplabv3plus_flops"] = (
            decoders["nrd"]["gflops_decoder"] / decoders["deeplabv3plus"]["gflops_decoder"]
        )

    # Latency of the decoders on the same cached features, alternating rounds in one process.
    calls = {
        name: partial(heads[name].eval(), encoder_features, size)
        for name in LATENCY_DECODERS
        if name in heads
    }
    with torch.no_grad():
        samples = round_robin(calls, args.warmup, args.repeats)
    latency_ms = {name: summary(values)["median_ms"] for name, values in samples.items()}
    report["latency_ms_median"] = latency_ms
    report["latency_ms_samples"] = samples
    report["latency_setup"] = (
        f"decoder only on cached encoder features, eval + no_grad, {args.warmup} warm-up "
        f"round(s), then {args.repeats} alternating rounds of one call of each decoder; median"
    )
    if "nrd" in latency_ms and "deeplabv3plus" in latency_ms:
        report["nrd_over_deeplabv3plus_latency"] = latency_ms["nrd"] / latency_ms["deeplabv3plus"]

    # Decoder memory: batched cell-resolution evaluation vs. θ expanded to stride 4.
    if "nrd" in heads:
        report["nrd_memory"] = []
        for mem_size in memory_sizes:
            model = build(DECODERS["nrd"][0])
            mem_images = torch.randn(1, 3, *mem_size, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                features = model.features(mem_images)
            report["nrd_memory"].append(decoder_memory(model, features, mem_size))

    if args.json:
        write_result(args.json, report)  # keeps the machine described at the start
    print(json.dumps({k: v for k, v in report.items() if k != "decoders"}, indent=2))


if __name__ == "__main__":
    main()
