"""Dense upsampling convolution (DUC), a baseline of NRD Table 3.

Wang et al., "Understanding Convolution for Semantic Segmentation" (WACV 2018), section 3.1: a
convolution on the stride-``r`` features predicts ``r_up^2 * C`` channels per location, which a
depth-to-space rearrangement (``pixel_shuffle``) turns into class scores at ``r / r_up``.

Choices where the papers are silent: the DUC convolution is a single 3x3 convolution with bias (no
normalisation, since its outputs are the scores). ``out_stride`` is where depth-to-space lands; the
default 4 matches the resolution of NRD's tiled outputs G (then bilinear x4, like NRD), and
``out_stride=1`` gives the original full-resolution DUC (the ``duc_r50_cityscapes`` config, whose
cost is closer to NRD Table 3).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.structures.labels import IGNORE_INDEX


class DUCHead(DenseHead):
    """kxk convolution to ``C * r_up^2`` channels, depth-to-space, bilinear to the image.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: stride of the features to upsample; ``None`` takes the coarsest.
        out_stride: stride of the scores after depth-to-space (``r_up = in_stride / out_stride``).
        kernel_size: size of the DUC convolution.
        dropout: dropout probability before the DUC convolution.
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
        out_stride: int = 4,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        self.in_stride = info.stride
        if self.in_stride % out_stride:
            raise ValueError(f"out_stride {out_stride} must divide in_stride {self.in_stride}")
        self.upscale = self.in_stride // out_stride
        self.ignore_index = ignore_index
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(
            info.channels,
            num_classes * self.upscale**2,
            kernel_size,
            padding=kernel_size // 2,
        )

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        x = self.conv(self.dropout(features[self.in_stride]))  # (B, C r^2, h, w)
        return F.pixel_shuffle(x, self.upscale)  # (B, C, h r, w r)
