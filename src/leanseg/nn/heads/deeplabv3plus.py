"""The DeepLabV3+ decoder, the main baseline of NRD Table 1.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation"
(ECCV 2018), section 3.1 and Figure 2: the encoder output (here the :class:`~leanseg.nn.context.
aspp.ASPP` context at stride 32, as in NRD Table 1 where "we also remove the dilation in the
DeeplabV3+ encoder") is upsampled bilinearly to the stride of the low-level features (4), which
are first reduced to 48 channels by a 1x1 conv; the concatenation is refined by two 3x3 convs and
classified, and the scores are upsampled bilinearly to the image.

Choices where the papers are silent or differ: ``channels=512`` and ``separable=True``
(depthwise-separable 3x3 refinements) follow the MMSegmentation implementation NRD compares
against ([MMS20]); the DeepLabV3+ paper uses 256 channels. With these, the decoder costs
76.1 GFLOPs at 1024x2048 with 19 classes (NRD Table 1: 76.4). Dropout 0.1 before the classifier is
MMSegmentation's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import NormLayer, conv_bn_relu, separableconv_bn_relu
from leanseg.structures.labels import IGNORE_INDEX


class DeepLabV3PlusHead(DenseHead):
    """Low-level projection, fusion at stride 4, two 3x3 refinements, classifier, bilinear.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: stride of the encoder output; ``None`` takes the coarsest.
        low_level_stride: stride of the low-level features (4).
        low_level_channels: width of the 1x1 low-level projection (48 in DeepLabV3+).
        channels: width of the two 3x3 refinement convolutions.
        separable: depthwise-separable refinements instead of plain 3x3 convolutions.
        dropout: dropout probability before the classifier.
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
        in_stride: int | None = None,
        low_level_stride: int = 4,
        low_level_channels: int = 48,
        channels: int = 512,
        separable: bool = True,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        top = feature_at(feature_info, in_stride)
        low = feature_at(feature_info, low_level_stride, option="low_level_stride")
        self.in_stride = top.stride
        self.low_level_stride = low.stride
        self.ignore_index = ignore_index
        self.project = conv_bn_relu(low.channels, low_level_channels, 1, norm_layer)
        in_channels = top.channels + low_level_channels
        if separable:
            self.refine = nn.Sequential(
                separableconv_bn_relu(in_channels, channels, norm_layer),
                separableconv_bn_relu(channels, channels, norm_layer),
            )
        else:
            self.refine = nn.Sequential(
                conv_bn_relu(in_channels, channels, 3, norm_layer),
                conv_bn_relu(channels, channels, 3, norm_layer),
            )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        low = self.project(features[self.low_level_stride])  # (B, 48, H/4, W/4)
        top = F.interpolate(
            features[self.in_stride], size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        x = self.refine(torch.cat([top, low], dim=1))  # (B, channels, H/4, W/4)
        return self.classifier(self.dropout(x))  # (B, C, H/4, W/4)
