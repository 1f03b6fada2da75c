"""The scale-selection multiplexer (thesis §3.2.3, eq. 3.1-3.2).

For every pixel i and reference metric scale ``W_R[m]`` the multiplexer computes the factor by
which the image should be subsampled for the receptive field of the features (``w_rf`` pixels)
to span ``W_R[m]`` metres at the pixel's depth (eq. 3.1)::

    s_mi = W_R[m] / W_i = d_i * W_R[m] / (b * w_rf)

(``W_i = Z_i * w_rf / f`` and ``Z_i = f * b / d_i``, so the focal length cancels and only the
stereo baseline ``b`` in metres and the disparity ``d_i`` in pixels are needed), and picks the
pyramid level whose factor is closest (eq. 3.2)::

    l_mi = argmin_l |alpha^l - s_mi|,  l in 0..N-1

so ``s < 1`` gives level 0 (as the thesis states) and factors beyond ``alpha^(N-1)`` give level
N-1. The M selected feature vectors of each pixel are gathered from the level stack with one
``torch.gather``, so the gradient reaches each level only at the pixels that selected it.

Choices where the thesis is silent:

- The routing is computed on the feature grid (stride ``s``, thesis: 8). The disparity of a
  grid cell is the mean of the valid disparities of the ``s x s`` pixels it covers
  (:func:`disparity_on_grid`); a cell without any valid pixel is invalid. The authors' code
  resized the disparity image to the grid with an image-resizing filter.
- Invalid disparity (``d <= 0``, NaN or infinite: Cityscapes marks missing disparity with 0) falls
  back to ``fallback_levels``, by default level 0 for every reference scale: that is what
  eq. 3.1-3.2 give for ``d = 0`` (an infinitely distant point) and what the authors' code did
  with Cityscapes' zeros. Passing the FixedScales levels ``(0, 3, 7)`` is the other sensible
  choice.
- Ties of eq. 3.2 go to the finer level (``argmin`` returns the first minimum).
- The disparity must be in pixels of the image the model sees: resize disparity maps together
  with their images and multiply their values by the same factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def disparity_on_grid(disparity: Tensor, stride: int, grid: tuple[int, int]) -> Tensor:
    """Mean valid disparity of each ``stride x stride`` cell; NaN where a cell has none.

    Args:
        disparity: ``(B, H, W)`` or ``(B, 1, H, W)`` in pixels; ``<= 0`` or non-finite is invalid.
        stride: cell size in pixels.
        grid: ``(h, w)`` cells, at least covering the image (``ceil(H / stride)``); the image is
            padded with invalid pixels to ``grid * stride``.

    Returns:
        ``(B, h, w)`` float disparities.
    """
    if disparity.dim() == 4:
        disparity = disparity[:, 0]
    disparity = disparity.float()
    pad_h = grid[0] * stride - disparity.shape[-2]
    pad_w = grid[1] * stride - disparity.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"grid {grid} x stride {stride} smaller than disparity {disparity.shape}")
    valid = torch.isfinite(disparity) & (disparity > 0)
    values = torch.where(valid, disparity, torch.zeros_like(disparity))
    stacked = torch.stack([values, valid.float()], dim=1)  # (B, 2, H, W)
    stacked = F.pad(stacked, (0, pad_w, 0, pad_h))
    sums = F.avg_pool2d(stacked, stride, stride, divisor_override=1)  # (B, 2, h, w)
    total, count = sums[:, 0], sums[:, 1]
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


class ScaleMultiplexer(nn.Module):
    """Per-pixel choice of M pyramid levels from disparity, and their gathering (§3.2.3).

    Has no parameters. :meth:`route` implements eq. 3.1-3.2, :meth:`forward` the multiplexing.

    Args:
        num_levels: N, levels of the pyramid.
        alpha: subsampling factor between levels (thesis: 1.3).
        reference_scales: the reference metric scales ``W_R`` in metres (thesis: 1, 4, 7); their
            number is M.
        receptive_field: ``w_rf``, the receptive field of the features in pixels (thesis: 185,
            VGG-16 ``conv5_3``). Set it to the receptive field of the extractor used.
        fallback_levels: the M levels of pixels without valid disparity; ``None``: level 0 for
            every reference scale (module docstring).
    """

    def __init__(
        self,
        *,
        num_levels: int = 8,
        alpha: float = 1.3,
        reference_scales: Sequence[float] = (1.0, 4.0, 7.0),
        receptive_field: float = 185.0,
        fallback_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not reference_scales or any(scale <= 0 for scale in reference_scales):
            raise ValueError(f"reference_scales must be positive metres, got {reference_scales}")
        if receptive_field <= 0:
            raise ValueError(f"receptive_field must be > 0, got {receptive_field}")
        fallback = [0] * len(reference_scales) if fallback_levels is None else fallback_levels
        if len(fallback) != len(reference_scales):
            raise ValueError(
                f"fallback_levels {list(fallback)} must give one level per reference scale "
                f"{list(reference_scales)}"
            )
        if any(not 0 <= level < num_levels for level in fallback):
            raise ValueError(f"fallback_levels {list(fallback)} outside 0..{num_levels - 1}")
        self.num_levels = num_levels
        self.alpha = alpha
        self.reference_scales = tuple(float(scale) for scale in reference_scales)
        self.receptive_field = float(receptive_field)
        self.fallback_levels = tuple(fallback)

    @property
    def num_scales(self) -> int:
        """M, the number of reference scales (levels gathered per pixel)."""
        return len(self.reference_scales)

    def scale_factors(self, disparity: Tensor, stereo_baseline: Tensor | float) -> Tensor:
        """``s_mi`` of eq. 3.1: ``(B, M, h, w)`` from disparity ``(B, h, w)``.

        Args:
            disparity: per-pixel disparity in pixels (invalid values give meaningless factors).
            stereo_baseline: ``b`` in metres, a number or one per image ``(B,)``.
        """
        baseline = torch.as_tensor(stereo_baseline, dtype=torch.float32, device=disparity.device)
        baseline = baseline.reshape(-1, 1, 1, 1)  # (B or 1, 1, 1, 1)
        scales = torch.tensor(self.reference_scales, device=disparity.device).view(1, -1, 1, 1)
        return disparity.float()[:, None] * scales / (baseline * self.receptive_field)

    def route(self, disparity: Tensor, stereo_baseline: Tensor | float) -> Tensor:
        """Selected levels ``l_mi`` of eq. 3.2: ``(B, M, h, w)`` int64 in ``0..N-1``.

        Args:
            disparity: ``(B, h, w)`` in pixels on the feature grid (:func:`disparity_on_grid`);
                ``<= 0`` or non-finite is invalid and gets ``fallback_levels``.
            stereo_baseline: ``b`` in metres, a number or ``(B,)``.
        """
        s = self.scale_factors(disparity, stereo_baseline)  # (B, M, h, w)
        exponents = torch.arange(self.num_levels, device=s.device, dtype=torch.float32)
        factors = self.alpha**exponents  # (N,): alpha^l
        # eq. 3.2 over all N levels; s < 1 gives level 0 since alpha^0 = 1 is then the closest.
        levels = (factors - s[..., None]).abs().argmin(dim=-1)  # (B, M, h, w)
        valid = (torch.isfinite(disparity) & (disparity > 0))[:, None]  # (B, 1, h, w)
        fallback = torch.tensor(self.fallback_levels, device=s.device).view(1, -1, 1, 1)
        return torch.where(valid, levels, fallback)

    def forward(self, stack: Tensor, levels: Tensor) -> Tensor:
        """Gather the selected levels' features: the scale-invariant representation.

        Args:
            stack: ``(B, N, C, h, w)`` features of all levels on one grid
                (:class:`~leanseg.nn.scale_selection.pyramid.PyramidExtractor`).
            levels: ``(B, M, h, w)`` from :meth:`route`.

        Returns:
            ``(B, M * C, h, w)``: the features of reference scale m in channels
            ``m * C .. (m + 1) * C - 1``.
        """
        batch, _, channels, height, width = stack.shape
        index = levels[:, :, None].expand(-1, -1, channels, -1, -1)  # (B, M, C, h, w)
        selected = torch.gather(stack, 1, index)  # (B, M, C, h, w)
        return selected.reshape(batch, -1, height, width)
