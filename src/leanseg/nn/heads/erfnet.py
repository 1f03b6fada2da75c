"""ERFNet's decoder: the "original decoder" baseline of SSN Tables 1-2.

Romera et al. (T-ITS 2018): ``UpsamplerBlock(128 -> 64)``, two Non-Bottleneck-1D modules,
``UpsamplerBlock(64 -> 16)``, two Non-Bottleneck-1D modules, and a 2x2 stride-2 transposed
convolution to the classes ("three deconvolutions and four Non-Bottleneck-1D modules", SSN §6.1
ablation). On ERFNet's stride-8 encoder it outputs at the image resolution; on a backbone with a
larger output stride the three x2 steps end at ``stride / 8`` and the scores are upsampled
bilinearly from there, so the head works on any backbone. Parameter names follow the ERFNet
reference code (``layers.N``, ``output_conv``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import NonBottleneck1D, NormLayer
from leanseg.structures.labels import IGNORE_INDEX


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed convolution (output padding 1), BN, ReLU: exact x2."""

    def __init__(
        self, in_channels: int, out_channels: int, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.bn = norm_layer(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class ERFNetDecoderHead(DenseHead):
    """ERFNet decoder on the coarsest features.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        channels: widths after the two upsampler blocks (ERFNet: 64, 16).
        blocks_per_stage: Non-Bottleneck-1D modules after each upsampler block (ERFNet: 2).
        norm_layer: normalisation layer factory.
    """

    onnx_unexportable = None
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        channels: Sequence[int] = (64, 16),
        blocks_per_stage: int = 2,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        top = feature_at(feature_info)
        self.in_stride = top.stride
        self.ignore_index = ignore_index
        layers: list[nn.Module] = []
        width = top.channels
        for out_channels in channels:
            layers.append(UpsamplerBlock(width, out_channels, norm_layer))
            layers += [
                NonBottleneck1D(out_channels, 0.0, 1, norm_layer) for _ in range(blocks_per_stage)
            ]
            width = out_channels
        self.layers = nn.Sequential(*layers)
        self.output_conv = nn.ConvTranspose2d(width, num_classes, 2, stride=2)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        return self.output_conv(self.layers(features[self.in_stride]))
