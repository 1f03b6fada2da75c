"""Loss functions shared by heads."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(scores: Tensor, label: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean per-pixel cross-entropy over non-ignored pixels.

    Unlike ``F.cross_entropy(reduction="mean")``, a batch whose pixels are all ignored (possible
    with small random crops) gives 0 with a gradient path instead of NaN.

    Args:
        scores: ``(B, C, H, W)`` unnormalised class scores.
        label: ``(B, H, W)`` class ids, ``ignore_index`` where unlabelled.
    """
    per_pixel = F.cross_entropy(scores.float(), label, ignore_index=ignore_index, reduction="sum")
    num_valid = (label != ignore_index).sum().clamp(min=1)
    return per_pixel / num_valid
