"""Atrous spatial pyramid pooling (ASPP) as a context module.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabV3, 2017) and
its DeepLabV3+ form (ECCV 2018): parallel branches over the coarsest feature map (image pooling, a
1x1 convolution and 3x3 convolutions at several dilation rates), concatenated and fused. NRD
section 2.1 uses this encoder ("we simply make our encoder the same as DeeplabV3+") on a ResNet
*without* dilation, i.e. ASPP runs at output stride 32.

The module is a :class:`~leanseg.nn.context.base.Context`: the ASPP output replaces the coarsest
stride, the finer strides (e.g. the stride-4 low-level features of DeepLabV3+ and NRD) pass through
unchanged, and ``feature_info`` declares the result.

Choices where the papers are silent or differ, stated once:

- Dilation rates default to ``(1, 3, 6, 9)``. DeepLab uses (6, 12, 18) at output stride 16 and
  (12, 24, 36) at 8, halving the rates each time the stride doubles; NRD does not say which rates it
  kept at stride 32, so the same rule gives (3, 6, 9). Rates change no FLOP count.
- ``separable=True`` (default) uses depthwise-separable 3x3 branches (depthwise 3x3 - BN - ReLU,
  pointwise 1x1 - BN - ReLU), as the DeepLabV3+ paper and the MMSegmentation implementation that
  NRD builds on ("inherit the default settings in [MMS20]"); ``False`` gives plain 3x3 branches.
- The branches are fused with a 3x3 conv - BN - ReLU (the MMSegmentation form; the DeepLabV3 paper
  fuses with 1x1). This 3x3 fusion and the 512 channels reproduce the encoder cost implied by NRD
  Table 1 (see ``benchmarks/papers/nrd_table1.py``).
- The image-pooling branch is a 1x1 convolution with bias and ReLU, without batch norm, so that a
  training step with batch size 1 (1x1 spatial statistics) is possible.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.context.base import Context, ContextFeatures
from leanseg.nn.layers import NormLayer, conv_bn_relu, separableconv_bn_relu


class ImagePooling(nn.Module):
    """Global average pool, 1x1 conv with bias, ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))  # (B, C, 1, 1)
        return pooled.expand(-1, -1, *x.shape[-2:])


class ASPP(Context):
    """ASPP over the coarsest feature map; the other strides pass through.

    Args:
        feature_info: what the backbone returns.
        out_channels: width of every branch and of the output (512 in NRD / MMSegmentation).
        dilations: rates of the branches; rate 1 is a 1x1 convolution, every other rate a 3x3
            (separable) convolution with that dilation. Default ``(1, 3, 6, 9)``: see module
            docstring.
        separable: depthwise-separable 3x3 branches (DeepLabV3+) instead of plain ones.
        image_pooling: add the global image-pooling branch.
        in_stride: which feature map to process; ``None`` takes the coarsest.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        out_channels: int = 512,
        dilations: tuple[int, ...] = (1, 3, 6, 9),
        separable: bool = True,
        image_pooling: bool = True,
        in_stride: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(feature_info, in_stride, out_channels)
        in_channels = self.in_channels
        self.image_pooling = ImagePooling(in_channels, out_channels) if image_pooling else None
        branches = []
        for dilation in dilations:
            if dilation == 1:
                branches.append(conv_bn_relu(in_channels, out_channels, 1, norm_layer))
            elif separable:
                branches.append(
                    separableconv_bn_relu(in_channels, out_channels, norm_layer, dilation=dilation)
                )
            else:
                branches.append(
                    conv_bn_relu(in_channels, out_channels, 3, norm_layer, dilation=dilation)
                )
        self.branches = nn.ModuleList(branches)
        num_branches = len(branches) + (1 if image_pooling else 0)
        self.bottleneck = conv_bn_relu(num_branches * out_channels, out_channels, 3, norm_layer)

    def forward(self, features: dict[int, Tensor]) -> ContextFeatures:
        x = features[self.in_stride]
        outputs = [branch(x) for branch in self.branches]
        if self.image_pooling is not None:
            outputs.insert(0, self.image_pooling(x))
        fused = self.bottleneck(torch.cat(outputs, dim=1))  # (B, out_channels, h, w)
        return self.output(features, fused)
