"""Bilinear head: per-location classifier on the coarsest features, upsampled bilinearly.

This is the no-upsampling-path baseline of the ladder thesis ("DN121 32↓" of thesis Table 4.1,
here on any backbone): a 1x1 projection to class scores at stride ``in_stride``, bilinearly
upsampled to the input size. It is also the "bilinear decoder" baseline of NRD Table 1.
"""

from __future__ import annotations

from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import conv_bn_relu
from leanseg.structures.labels import IGNORE_INDEX


class BilinearHead(DenseHead):
    """Optional 3x3 conv-BN-ReLU, dropout, 1x1 classifier, bilinear upsampling.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: which feature map to classify; ``None`` takes the coarsest.
        mid_channels: width of an optional 3x3 conv-BN-ReLU before the classifier; ``None``
            classifies the features directly (the plain 32↓ baseline).
        dropout: dropout probability before the classifier.
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
        mid_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        self.in_stride = info.stride
        self.ignore_index = ignore_index
        in_channels = info.channels
        if mid_channels:
            self.block: nn.Module = conv_bn_relu(in_channels, mid_channels, 3)
            in_channels = mid_channels
        else:
            self.block = nn.Identity()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        return self.classifier(self.dropout(self.block(features[self.in_stride])))  # (B, C, h, w)
