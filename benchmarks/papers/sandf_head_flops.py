"""S&F section 3.4: semantic-head FLOPs with L = 4 vs a 3x3 conv at the finest level.

The paper claims the semantic head (1x1 ``D -> D_s``, coarse-to-fine context, per-level
classifiers) costs about 1.3x "a 3x3 Conv directly applied on the finest pyramid level". Which
conv is not stated; we print two readings: ``D -> D_s`` (replacing the 1x1 projection, the
natural baseline head) and ``D_s -> D_s``. FLOPs are fused multiply-adds of convolutions, linear
layers and the attention matmuls (``Attention2D.flops``), counted on the meta device (shapes only).

Usage: ``python benchmarks/papers/sandf_head_flops.py [--size 512] [--width 48] [--json PATH]``
(``--json benchmarks/results/sandf_head_flops.json`` for the committed figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.heads.sandf import SandFHead
from leanseg.profiling.flops import count_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import write_result


class _SemanticOnly(nn.Module):
    """The semantic part of a head: ``predict_pyramid`` without the unity head."""

    def __init__(self, head: SandFHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head.predict_pyramid({4: x})[0]


def measure(size: int, width: int, num_classes: int, semantic_channels: int) -> dict:
    channels = 15 * width  # HRNetV2 output width
    finest = size // 4
    rows = {}
    with torch.device("meta"):
        x = torch.empty(1, channels, finest, finest)
        for context in ("c2f", "anl", "none"):
            head = SandFHead(
                feature_info=[FeatureInfo(4, channels, "stage4")],
                num_classes=num_classes,
                context=context,
                semantic_channels=semantic_channels,
            )
            semantic = count_flops(_SemanticOnly(head), x).total
            unity = count_flops(head.unity, x).total
            rows[context] = {"semantic_head_fmas": semantic, "unity_head_fmas": unity}
        conv_d = count_flops(nn.Conv2d(channels, semantic_channels, 3, padding=1), x).total
        x_s = torch.empty(1, semantic_channels, finest, finest)
        conv_s = count_flops(
            nn.Conv2d(semantic_channels, semantic_channels, 3, padding=1), x_s
        ).total
    for row in rows.values():
        row["ratio_vs_conv3x3_D_to_Ds"] = row["semantic_head_fmas"] / conv_d
        row["ratio_vs_conv3x3_Ds_to_Ds"] = row["semantic_head_fmas"] / conv_s
    return {
        "setting": {
            "num_levels": 4,
            "image_size": size,
            "finest_stride": 4,
            "finest_size": finest,
            f"D (HRNetV2-W{width})": channels,
            "D_s": semantic_channels,
            "D_u": 64,
            "num_classes": num_classes,
        },
        "conv3x3_D_to_Ds_fmas": conv_d,
        "conv3x3_Ds_to_Ds_fmas": conv_s,
        "heads": rows,
        "paper_claim": "semantic head ~1.3x a 3x3 conv at the finest level (S&F 3.4)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--semantic-channels", type=int, default=512)
    args = parser.parse_args()
    result = measure(args.size, args.width, args.num_classes, args.semantic_channels)
    if args.json:
        write_result(args.json, result)
    print(f"setting: {result['setting']}")
    for name, row in result["heads"].items():
        print(
            f"{name:5s} semantic {row['semantic_head_fmas'] / 1e9:7.2f} GFMA  "
            f"x{row['ratio_vs_conv3x3_D_to_Ds']:.2f} of 3x3 D->D_s, "
            f"x{row['ratio_vs_conv3x3_Ds_to_Ds']:.2f} of 3x3 D_s->D_s; "
            f"unity {row['unity_head_fmas'] / 1e9:.3f} GFMA"
        )
    print(result["paper_claim"])


if __name__ == "__main__":
    main()
