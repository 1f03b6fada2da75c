"""Input pyramid and shared single-scale feature extractor (thesis §3.2.1-3.2.2).

The image is subsampled into N levels, level l of size ``W / alpha^l x H / alpha^l``
(§3.2.1: alpha = 1.3, N = 8). One feature extractor - any leanseg backbone, reading the features
it declares at ``feature_strides`` - is applied to every level with shared weights. Within a
level, the chosen features are upsampled by nearest neighbour to the finest of them and
concatenated (§3.2.2: ``relu5_3`` x2 beside ``pool3``, 512 + 256 channels at stride 8). The
features of levels 1..N-1 are then upsampled by nearest neighbour to the grid of level 0, "to
preserve the sparsity of the features" (§3.2.2).

Choices where the thesis is silent:

- Level sizes are ``round(H / alpha^l)`` x ``round(W / alpha^l)`` (at least 1), made by bilinear
  interpolation with antialiasing.
- Every level is padded (bottom and right, zeros) to a multiple of the backbone's output stride
  before extraction, and its features are cropped back to the cells that cover the level,
  ``ceil(H_l / out_stride)`` x ``ceil(W_l / out_stride)``: every backbone then sees a size it
  accepts and the coarse levels stay aligned with level 0. The grid of level 0 is
  ``ceil(H / out_stride)`` x ``ceil(W / out_stride)``.
- Within a level the factors are integers (nearest neighbour is exact). A level's features go
  to level 0's grid by nearest neighbour at the level's true scale ``H / H_l`` (each cell of
  level 0 takes the level's cell that holds its centre), so the coarse levels stay aligned
  with level 0 whatever the rounding of their sizes.
- The levels are extracted one after another (sizes differ); with batch normalisation in
  training mode each level is normalised with its own batch statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, feature_at


def pyramid_sizes(
    height: int, width: int, *, alpha: float = 1.3, num_levels: int = 8
) -> list[tuple[int, int]]:
    """Sizes ``(H_l, W_l)`` of the levels ``l = 0..N-1``: ``round(H / alpha^l)``, at least 1."""
    return [
        (max(1, round(height / alpha**level)), max(1, round(width / alpha**level)))
        for level in range(num_levels)
    ]


class PyramidExtractor(nn.Module):
    """Shared feature extractor over an alpha-subsampled image pyramid (thesis §3.2.1-3.2.2).

    Args:
        backbone: the extractor; its declared ``feature_info`` must contain ``feature_strides``.
        feature_strides: strides of the backbone features concatenated per level (thesis:
            ``(8, 16)``, pool3 and relu5_3 of VGG-16; ``(16,)`` for Single5).
        out_stride: stride of the common grid; defaults to the finest of ``feature_strides`` and
            may be finer than all of them (Single5 keeps stride 8 with only relu5_3). Every
            feature stride must be a multiple of it.
        alpha: subsampling factor between consecutive levels (thesis: 1.3).
        num_levels: N, the number of levels (thesis: 8).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        feature_strides: Sequence[int] = (8, 16),
        out_stride: int | None = None,
        alpha: float = 1.3,
        num_levels: int = 8,
    ) -> None:
        super().__init__()
        if not feature_strides:
            raise ValueError("feature_strides must name at least one stride")
        if alpha <= 1:
            raise ValueError(f"alpha must be > 1, got {alpha}")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        infos = [
            feature_at(backbone.feature_info, stride, option="feature_strides")
            for stride in sorted(set(feature_strides))
        ]
        out_stride = out_stride or infos[0].stride
        if any(info.stride % out_stride for info in infos):
            raise ValueError(
                f"out_stride {out_stride} must divide every feature stride {list(feature_strides)}"
            )
        self.backbone = backbone
        self.feature_strides = tuple(info.stride for info in infos)
        self.out_stride = out_stride
        self.out_channels = sum(info.channels for info in infos)
        self.alpha = alpha
        self.num_levels = num_levels

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The common feature grid of an image of ``image_size``: level 0's cells."""
        return (
            math.ceil(image_size[0] / self.out_stride),
            math.ceil(image_size[1] / self.out_stride),
        )

    def level_images(self, images: Tensor, levels: Sequence[int]) -> list[Tensor]:
        """The pyramid levels ``levels`` of ``images`` (``(B, 3, H, W)``), level 0 unchanged."""
        sizes = pyramid_sizes(*images.shape[-2:], alpha=self.alpha, num_levels=self.num_levels)
        return [
            images
            if level == 0
            else F.interpolate(
                images, size=sizes[level], mode="bilinear", align_corners=False, antialias=True
            )
            for level in levels
        ]

    def extract(self, image: Tensor) -> Tensor:
        """Features of one level on its own grid: ``(B, C, ceil(H_l / s), ceil(W_l / s))``."""
        height, width = image.shape[-2:]
        multiple = self.backbone.output_stride
        padded = F.pad(image, (0, (-width) % multiple, 0, (-height) % multiple))
        features = self.backbone(padded)
        grid = (padded.shape[-2] // self.out_stride, padded.shape[-1] // self.out_stride)
        parts = [
            F.interpolate(features[stride], size=grid, mode="nearest-exact")
            if features[stride].shape[-2:] != grid
            else features[stride]
            for stride in self.feature_strides
        ]
        out_h, out_w = self.grid_size((height, width))
        return torch.cat(parts, dim=1)[..., :out_h, :out_w]

    def forward(self, images: Tensor, levels: Sequence[int] | None = None) -> Tensor:
        """Features of ``levels`` (default: all N) on level 0's grid.

        Args:
            images: ``(B, 3, H, W)``.
            levels: pyramid levels to extract, in the order they are stacked.

        Returns:
            ``(B, L, C, h, w)`` with ``(h, w) = grid_size((H, W))`` and L = ``len(levels)``.
        """
        levels = list(range(self.num_levels)) if levels is None else list(levels)
        if any(not 0 <= level < self.num_levels for level in levels):
            raise ValueError(f"levels {levels} outside 0..{self.num_levels - 1}")
        image_size = tuple(images.shape[-2:])
        grid = self.grid_size(image_size)
        stack = []
        for level_image in self.level_images(images, levels):  # a loop over levels, not pixels
            features = self.extract(level_image)
            if level_image.shape[-2:] != image_size:
                rows = _nearest_cells(grid[0], level_image.shape[-2] / image_size[0], features, -2)
                cols = _nearest_cells(grid[1], level_image.shape[-1] / image_size[1], features, -1)
                features = features.index_select(-2, rows).index_select(-1, cols)
            stack.append(features)
        return torch.stack(stack, dim=1)  # (B, L, C, h, w)


def _nearest_cells(cells: int, scale: float, features: Tensor, dim: int) -> Tensor:
    """For each of level 0's ``cells`` along ``dim``, the index of the level's cell at its centre.

    Cell ``i`` of level 0 is centred on pixel ``(i + 0.5) * s``, which is pixel
    ``(i + 0.5) * s * scale`` of a level subsampled by ``1 / scale``, in that level's cell
    ``floor((i + 0.5) * scale)`` (the stride ``s`` cancels): nearest-neighbour upsampling by the
    level's true scale, clamped to the last cell the level's ``features`` have along ``dim``.
    """
    centres = (torch.arange(cells, device=features.device, dtype=torch.float64) + 0.5) * scale
    return centres.floor().long().clamp(max=features.shape[dim] - 1)
