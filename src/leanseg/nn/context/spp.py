"""Pyramid pooling contexts: the LDN SPP (thesis 4.4.2, Figure 4.2), PSPNet's module, "NoSPP".

The three :class:`~leanseg.nn.context.base.Context` modules rework the coarsest feature map ``F``
into context-aware features ``C`` of the same stride; the finer strides pass through. The two
pooling modules also return their pooled grids in ``ContextFeatures.pooled`` (the LDN ladder
loss of thesis 4.6.1 puts an auxiliary classifier on each). Units are BN-ReLU-conv, the
pre-activation order of DenseNet (thesis 2.7.1), except in the PSPNet form of :class:`PSPSPP`.
Both pool with :func:`pool_to_grid`, adaptive average pooling written as two matrix products,
so that they export to ONNX with dynamic height and width (issue 16).

Widths: the thesis gives them relative to ``d``, the width of ``F`` (``d/2``, ``d/8``, ``d/4``),
for DenseNet-121 where ``d = 1024``. The modules take absolute widths with those DenseNet-121
values as defaults (512, 128, 256) and keep them for every backbone; choosing ``d/2`` etc. of
the actual backbone instead gives 7-8 % too many parameters for LDN169 and LDN161, while the
fixed widths reproduce the model sizes of thesis Tables 4.1-4.2 within 5 % (see
``benchmarks/papers/ldn_tables.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.context.base import Context, ContextFeatures
from leanseg.nn.layers import NormLayer, bn_relu_conv, conv_bn_relu


def square_grid(rows: int, height: int | Tensor, width: int | Tensor) -> tuple[int, int | Tensor]:
    """Grid with ``rows`` rows and as many columns as keep the cells square (Figure 4.2).

    The column count is ``round(rows * width / height)`` (half to even), at least 1. A grid can be
    finer than the feature map (8 rows on a 4-pixel-high map); the pooling then repeats pixels,
    which is harmless and keeps the module valid for small inputs.

    While an ONNX export traces the model, ``height`` and ``width`` are 0-d tensors and the count
    is computed with tensor ops, so that it follows the input size in the exported graph. The
    float32 quotient rounds as Python's float64 one does: ``rows * width / height`` is at least
    ``1 / (2 * height)`` away from a half unless it is one, more than float32's error below
    ``rows * width = 2**23``.
    """
    if isinstance(height, Tensor):
        return rows, torch.round(rows * width / height).clamp(min=1).long()
    return rows, max(1, round(rows * width / height))


def _bin_sums(bins: int | Tensor, length: int | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """0/1 matrix ``(bins, length)`` that sums each adaptive-pooling bin, and the bin sizes.

    Bin ``i`` covers ``floor(i * length / bins)`` to ``ceil((i + 1) * length / bins)``
    (exclusive), the edges of ``adaptive_avg_pool2d``; integer arithmetic, so the edges are exact.
    """
    i = torch.arange(bins, device=like.device)
    start = (i * length) // bins
    end = ((i + 1) * length + bins - 1) // bins
    j = torch.arange(length, device=like.device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(like.dtype), (end - start).to(like.dtype)


def pool_to_grid(x: Tensor, rows: int | Tensor, cols: int | Tensor) -> Tensor:
    """``F.adaptive_avg_pool2d(x, (rows, cols))`` as two matrix products, which export to ONNX.

    ``adaptive_avg_pool2d`` has no ONNX operator when the input size is dynamic; sums over the
    bins as ``S_h @ x @ S_w^T`` with 0/1 matrices built from ``arange`` over the (traced) size,
    divided by the bin areas, give the same values (within float32 rounding of the sums) and
    gradients, for grids finer than the map too.

    Args:
        x: ``(B, C, H, W)``.
        rows: rows of the grid.
        cols: columns of the grid (a 0-d tensor while tracing, see :func:`square_grid`).

    Returns:
        ``(B, C, rows, cols)``.
    """
    sum_h, count_h = _bin_sums(rows, x.shape[-2], x)
    sum_w, count_w = _bin_sums(cols, x.shape[-1], x)
    sums = sum_h @ x @ sum_w.transpose(0, 1)  # (rows, H) @ (B, C, H, W) @ (W, cols)
    return sums / (count_h[:, None] * count_w[None, :])


class SPP(Context):
    """LDN spatial pyramid pooling (thesis 4.4.2, Figure 4.2).

    Project ``F`` to ``bottleneck_channels`` (d/2), average-pool over grids of ``grids`` rows
    with square cells, project each pool to ``level_channels`` (d/8), upsample bilinearly,
    concatenate with the projection and blend with 1x1 to ``out_channels`` (d/4). The projected
    pools are the ``pooled`` grids of the output, finest grid last.

    Args:
        feature_info: what the backbone returns.
        in_stride: which feature map is F; ``None`` takes the coarsest.
        bottleneck_channels: width of the projection of F (d/2 = 512 for DenseNet-121).
        level_channels: width of each pooled level (d/8 = 128).
        out_channels: width of C (d/4 = 256).
        grids: rows of the pooling grids.
        square_cells: adapt the columns to the aspect ratio; ``False`` uses ``rows x rows``.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        in_stride: int | None = None,
        bottleneck_channels: int = 512,
        level_channels: int = 128,
        out_channels: int = 256,
        grids: tuple[int, ...] = (1, 2, 4, 8),
        square_cells: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(feature_info, in_stride, out_channels)
        self.grids = grids
        self.square_cells = square_cells
        self.pooled_channels = (level_channels,) * len(grids)
        self.project = bn_relu_conv(self.in_channels, bottleneck_channels, 1, norm_layer)
        self.levels = nn.ModuleList(
            bn_relu_conv(bottleneck_channels, level_channels, 1, norm_layer) for _ in grids
        )
        self.blend = bn_relu_conv(
            bottleneck_channels + len(grids) * level_channels, out_channels, 1, norm_layer
        )

    def forward(self, features: dict[int, Tensor]) -> ContextFeatures:
        """C ``(B, out, h, w)`` at ``in_stride``; pooled levels ``(B, level, rows, cols)``."""
        x = features[self.in_stride]
        size = x.shape[-2:]
        x = self.project(x)
        pooled: list[Tensor] = []
        branches = [x]
        for rows, level in zip(self.grids, self.levels, strict=True):
            grid = square_grid(rows, *size) if self.square_cells else (rows, rows)
            p = level(pool_to_grid(x, *grid))
            pooled.append(p)
            branches.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
        return self.output(features, self.blend(torch.cat(branches, dim=1)), pooled)


class PSPSPP(Context):
    """PSPNet's pyramid pooling module (Zhao et al., CVPR 2017) as a context, in two forms.

    Square bins 1, 2, 3, 6 pooled from F itself, each reduced to ``d / len(bins)`` maps,
    upsampled and concatenated with F, then fused to ``out_channels``. The reduced pools are the
    ``pooled`` grids of the output.

    - Defaults: "SPP [36]" of thesis Table 4.9, the LDN ablation. Units are BN-ReLU-conv like the
      rest of LDN. PSPNet fuses with a 3x3 convolution to 512 maps; to keep the upsampling path
      of the ablation unchanged the thesis must have fused to the same width as :class:`SPP`,
      which it does not state. We fuse with a 1x1 unit to ``out_channels`` (256).
    - ``unit="conv_bn_relu", fuse_kernel=3, out_channels=512``: PSPNet's own form, the module
      QGN Table 4 puts between its ResNet-50 encoder and the decoder on ADE20K.

    Args:
        feature_info: what the backbone returns.
        in_stride: which feature map is F; ``None`` takes the coarsest.
        out_channels: width of the fused output.
        bins: grid sizes of the pools (``b x b``).
        unit: order of the reduce and fuse units: ``"bn_relu_conv"`` (pre-activation, thesis)
            or ``"conv_bn_relu"`` (PSPNet).
        fuse_kernel: kernel size of the fusing convolution (1 in the thesis form, 3 in PSPNet).
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        in_stride: int | None = None,
        out_channels: int = 256,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        unit: Literal["bn_relu_conv", "conv_bn_relu"] = "bn_relu_conv",
        fuse_kernel: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(feature_info, in_stride, out_channels)
        if unit not in ("bn_relu_conv", "conv_bn_relu"):
            raise ValueError(f"unit must be 'bn_relu_conv' or 'conv_bn_relu', got {unit!r}")
        make_unit = bn_relu_conv if unit == "bn_relu_conv" else conv_bn_relu
        self.bins = bins
        level_channels = self.in_channels // len(bins)
        self.pooled_channels = (level_channels,) * len(bins)
        self.levels = nn.ModuleList(
            make_unit(self.in_channels, level_channels, 1, norm_layer) for _ in bins
        )
        self.blend = make_unit(
            self.in_channels + len(bins) * level_channels, out_channels, fuse_kernel, norm_layer
        )

    def forward(self, features: dict[int, Tensor]) -> ContextFeatures:
        x = features[self.in_stride]
        size = x.shape[-2:]
        pooled = [
            level(pool_to_grid(x, b, b)) for b, level in zip(self.bins, self.levels, strict=True)
        ]
        up = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled]
        return self.output(features, self.blend(torch.cat([x, *up], dim=1)), pooled)


class ConvContext(Context):
    """ "NoSPP" of thesis Table 4.9: the SPP replaced by a single 3x3 convolution.

    The thesis does not say whether the projection of F to d/2 stays. Keeping it (1x1 to 512,
    then the single 3x3 to 256) gives 10.2 M parameters, the Table 4.9 figure; a 3x3 directly
    on F would give 10.8 M. So the projection stays.

    Args:
        feature_info: what the backbone returns.
        in_stride: which feature map is F; ``None`` takes the coarsest.
        bottleneck_channels: width of the projection of F (d/2).
        out_channels: width of the output (d/4).
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        in_stride: int | None = None,
        bottleneck_channels: int = 512,
        out_channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(feature_info, in_stride, out_channels)
        self.project = bn_relu_conv(self.in_channels, bottleneck_channels, 1, norm_layer)
        self.conv = bn_relu_conv(bottleneck_channels, out_channels, 3, norm_layer)

    def forward(self, features: dict[int, Tensor]) -> ContextFeatures:
        return self.output(features, self.conv(self.project(features[self.in_stride])))
