"""Ladder-style upsampling head: transition-up blocks blending lateral skips.

Thesis 2.8.3 and Figure 4.3: the coarsest representation is upsampled step by step; at each
step a lateral (skip) feature from the backbone is projected to the upsampling width, summed with
the upsampled representation and blended with a 3x3 convolution. Predictions are made at the
finest step and upsampled bilinearly to the input. With a ResNet-18 backbone and skips at strides
16, 8 and 4 this is the ``ResNet18 32→4`` (SwiftNet-style) arrangement of thesis Table 4.1,
without the SPP context and auxiliary losses (those come with the full ladder models).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import NormLayer, conv_bn_relu
from leanseg.nn.losses import checked_class_weights
from leanseg.structures.labels import IGNORE_INDEX


class TransitionUp(nn.Module):
    """Upsample the coarser input to the skip's size, add the projected skip, blend with 3x3."""

    def __init__(self, skip_channels: int, channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.project = conv_bn_relu(skip_channels, channels, 1, norm_layer)
        self.blend = conv_bn_relu(channels, channels, 3, norm_layer)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        upsampled = F.interpolate(
            coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.blend(upsampled + self.project(skip))


class LadderHead(DenseHead):
    """Ladder-style upsampling path from the coarsest feature down to ``out_stride``.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        channels: width of the upsampling path (thesis uses 128 for ResNet-18 ladders).
        out_stride: stride of the finest transition-up step, where the classifier runs.
        class_weights: optional per-class weights of the cross-entropy (one positive number per
            class), e.g. median-frequency weights from ``leanseg data weights``; ``None`` weighs
            every pixel alike.
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
        channels: int = 128,
        out_stride: int = 4,
        class_weights: list[float] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.class_weights: Tensor | None
        self.register_buffer(
            "class_weights",
            None if class_weights is None else checked_class_weights(class_weights, num_classes),
            persistent=False,
        )
        top = feature_at(feature_info)
        self.top_stride = top.stride
        skips = sorted(
            (info for info in feature_info if out_stride <= info.stride < top.stride),
            key=lambda info: info.stride,
            reverse=True,
        )
        if not skips and out_stride != top.stride:
            raise ValueError(f"no features between stride {out_stride} and {top.stride}")
        self.skip_strides = [info.stride for info in skips]
        self.ignore_index = ignore_index
        self.top = conv_bn_relu(top.channels, channels, 1, norm_layer)
        self.steps = nn.ModuleList(
            TransitionUp(info.channels, channels, norm_layer) for info in skips
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        x = self.top(features[self.top_stride])
        for stride, step in zip(self.skip_strides, self.steps, strict=True):
            x = step(x, features[stride])
        return self.classifier(x)  # (B, C, H / out_stride, W / out_stride)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        label = targets["label"]
        return {"loss_ce": self.scores_loss(features, label, image_size, self.class_weights)}
