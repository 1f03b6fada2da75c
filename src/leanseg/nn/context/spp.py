"""Spatial pyramid pooling of the LDN models (thesis 4.4.2, Figure 4.2) and its ablations.

All three modules map the coarsest feature tensor ``F`` to context-aware features ``C`` and also
return the pooled tensors of their levels (for the auxiliary losses of thesis 4.6.1). Units are
BN-ReLU-conv, the pre-activation order of DenseNet (thesis 2.7.1).

Widths: the thesis gives them relative to ``d``, the width of ``F`` (``d/2``, ``d/8``, ``d/4``),
for DenseNet-121 where ``d = 1024``. The modules take absolute widths with those DenseNet-121
values as defaults (512, 128, 256) and keep them for every backbone; choosing ``d/2`` etc. of
the actual backbone instead gives 7-8 % too many parameters for LDN169 and LDN161, while the
fixed widths reproduce the model sizes of thesis Tables 4.1-4.2 within 5 % (see
``benchmarks/ldn_tables.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


class BNReLUConv(nn.Sequential):
    """BN - ReLU - conv (pre-activation unit); ``groups=in_channels`` gives a depthwise conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        *,
        groups: int = 1,
    ) -> None:
        super().__init__(
            norm_layer(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
        )


def square_grid(rows: int, height: int, width: int) -> tuple[int, int]:
    """Grid with ``rows`` rows and as many columns as keep the cells square (Figure 4.2).

    The column count is ``round(rows * width / height)``, at least 1. A grid can be finer than
    the feature map (8 rows on a 4-pixel-high map); adaptive pooling then repeats pixels, which
    is harmless and keeps the module valid for small inputs.
    """
    return rows, max(1, round(rows * width / height))


class SPP(nn.Module):
    """LDN spatial pyramid pooling (thesis 4.4.2, Figure 4.2).

    Project ``F`` to ``bottleneck_channels`` (d/2), average-pool over grids of ``grids`` rows
    with square cells, project each pool to ``level_channels`` (d/8), upsample bilinearly,
    concatenate with the projection and blend with 1x1 to ``out_channels`` (d/4).

    Args:
        in_channels: width ``d`` of F.
        bottleneck_channels: width of the projection of F (d/2 = 512 for DenseNet-121).
        level_channels: width of each pooled level (d/8 = 128).
        out_channels: width of C (d/4 = 256).
        grids: rows of the pooling grids.
        square_cells: adapt the columns to the aspect ratio; ``False`` uses ``rows x rows``.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        bottleneck_channels: int = 512,
        level_channels: int = 128,
        out_channels: int = 256,
        grids: tuple[int, ...] = (1, 2, 4, 8),
        square_cells: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.grids = grids
        self.square_cells = square_cells
        self.level_channels = level_channels
        self.out_channels = out_channels
        self.project = BNReLUConv(in_channels, bottleneck_channels, 1, norm_layer)
        self.levels = nn.ModuleList(
            BNReLUConv(bottleneck_channels, level_channels, 1, norm_layer) for _ in grids
        )
        self.blend = BNReLUConv(
            bottleneck_channels + len(grids) * level_channels, out_channels, 1, norm_layer
        )

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns C ``(B, out, h, w)`` and the pooled levels ``(B, level, rows, cols)``."""
        size = x.shape[-2:]
        x = self.project(x)
        pooled: list[Tensor] = []
        branches = [x]
        for rows, level in zip(self.grids, self.levels, strict=True):
            grid = square_grid(rows, *size) if self.square_cells else (rows, rows)
            p = level(F.adaptive_avg_pool2d(x, grid))
            pooled.append(p)
            branches.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
        return self.blend(torch.cat(branches, dim=1)), pooled


class PSPSPP(nn.Module):
    """PSPNet-style pyramid pooling ("SPP [36]" of thesis Table 4.9).

    Zhao et al. (CVPR 2017): square bins 1, 2, 3, 6 pooled from F itself, each reduced to
    ``d / len(bins)`` maps, upsampled and concatenated with F. PSPNet fuses with a 3x3
    convolution to 512 maps; to keep the upsampling path of the ablation unchanged the thesis
    must have fused to the same width as :class:`SPP`, which it does not state. We fuse with a
    1x1 BN-ReLU-conv to ``out_channels`` (256).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        out_channels: int = 256,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.bins = bins
        self.out_channels = out_channels
        self.level_channels = in_channels // len(bins)
        self.levels = nn.ModuleList(
            BNReLUConv(in_channels, self.level_channels, 1, norm_layer) for _ in bins
        )
        self.blend = BNReLUConv(
            in_channels + len(bins) * self.level_channels, out_channels, 1, norm_layer
        )

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        size = x.shape[-2:]
        pooled = [
            level(F.adaptive_avg_pool2d(x, b))
            for b, level in zip(self.bins, self.levels, strict=True)
        ]
        up = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled]
        return self.blend(torch.cat([x, *up], dim=1)), pooled


class NoSPP(nn.Module):
    """ "NoSPP" of thesis Table 4.9: the SPP replaced by a single 3x3 convolution.

    The thesis does not say whether the projection of F to d/2 stays. Keeping it (1x1 to 512,
    then the single 3x3 to 256) gives 10.2 M parameters, the Table 4.9 figure; a 3x3 directly
    on F would give 10.8 M. So the projection stays.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        bottleneck_channels: int = 512,
        out_channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.level_channels = 0
        self.project = BNReLUConv(in_channels, bottleneck_channels, 1, norm_layer)
        self.conv = BNReLUConv(bottleneck_channels, out_channels, 3, norm_layer)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.conv(self.project(x)), []
