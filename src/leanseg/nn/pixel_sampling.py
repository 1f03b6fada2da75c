"""A dense loss at sampled pixels: which pixels, and the head's scores and labels there.

A dense head predicts class scores at its own stride (4 for the ladder) and upsamples them
bilinearly to the input size; at training time that full-resolution tensor, its log-softmax, the
loss and their gradients are about an eighth of a CPU training step of the CamVid recipe
(``benchmarks/speed/step_profile.py``). With ``model.loss_points`` the cross-entropy is computed
at a random subset of the pixels instead: the scores at those pixels are interpolated from the
coarse scores exactly as the upsampling would give them (:func:`scores_at_pixels`), so each
step's loss is an unbiased sample of the full loss, at a cost that grows with the number of
points, not with the crop. The papers do not train this way; it is how PointRend (Kirillov et
al., 2020) and Mask2Former train their mask losses at a fraction of the pixels.

The sampled tensors keep a trailing axis of one (``(B, C, K, 1)`` scores, ``(B, K, 1)`` labels),
so every dense loss in :mod:`leanseg.nn.losses` takes them unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_pixels(
    batch: int, image_size: tuple[int, int], count: int, device: torch.device | str = "cpu"
) -> Tensor:
    """``(batch, count)`` flat pixel indices (``row * W + col``), each drawn uniformly at random
    with replacement from the ``H x W`` image, independently per image; from torch's global
    generator, so a seeded run draws the same pixels."""
    height, width = image_size
    if count < 1:
        raise ValueError(f"count must be a positive number of pixels, got {count}")
    return torch.randint(0, height * width, (batch, count), device=device)


def scores_at_pixels(coarse: Tensor, pixels: Tensor, image_size: tuple[int, int]) -> Tensor:
    """The scores ``F.interpolate(coarse, image_size, mode="bilinear", align_corners=False)``
    holds at ``pixels``, computed at those pixels only.

    Pixel ``(row, col)`` of the upsampled map samples ``coarse`` at its centre,
    ``(col + 0.5) / W`` of the way across; ``grid_sample`` with ``align_corners=False`` reads the
    same point, and ``padding_mode="border"`` clamps at the edges as the upsampling does.

    Args:
        coarse: ``(B, C, h, w)`` scores at the head's stride.
        pixels: ``(B, K)`` flat indices into the ``H x W`` image (:func:`random_pixels`).
        image_size: ``(H, W)``, the size the scores would be upsampled to.

    Returns:
        ``(B, C, K, 1)`` scores.
    """
    height, width = image_size
    rows = torch.div(pixels, width, rounding_mode="floor")
    cols = pixels - rows * width
    x = (cols.to(coarse.dtype) + 0.5) * (2.0 / width) - 1.0
    y = (rows.to(coarse.dtype) + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack((x, y), dim=-1).unsqueeze(2)  # (B, K, 1, 2): x across, y down
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=False)


def labels_at_pixels(label: Tensor, pixels: Tensor) -> Tensor:
    """``(B, K, 1)`` labels of ``(B, H, W)`` ``label`` at the ``(B, K)`` flat ``pixels``."""
    return label.flatten(1).gather(1, pixels).unsqueeze(-1)
