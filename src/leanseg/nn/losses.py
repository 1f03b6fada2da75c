"""Loss functions shared by heads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from leanseg.structures.labels import IGNORE_INDEX


def cross_entropy(
    scores: Tensor,
    label: Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: Tensor | None = None,
    hard_pixel_fraction: float | None = None,
) -> Tensor:
    """Mean per-pixel cross-entropy over non-ignored pixels.

    Unlike ``F.cross_entropy(reduction="mean")``, a batch whose pixels are all ignored (possible
    with small random crops) gives 0 with a gradient path instead of NaN.

    With ``class_weights`` each pixel's loss is multiplied by its class's weight and the sum is
    divided by the summed weights of the labelled pixels (a weighted mean, as
    ``F.cross_entropy`` reduces), so the loss keeps its scale whatever the weights' scale.

    Args:
        scores: ``(B, C, H, W)`` unnormalised class scores.
        label: ``(B, H, W)`` class ids, ``ignore_index`` where unlabelled.
        ignore_index: label value to ignore.
        class_weights: optional ``(C,)`` per-class weights.
        hard_pixel_fraction: when given, the loss is :func:`hardest_pixels_mean` of the
            (weighted) per-pixel losses: only that fraction of the labelled pixels trains.
    """
    if hard_pixel_fraction is not None:
        per_pixel = F.cross_entropy(
            scores.float(), label, weight=class_weights, ignore_index=ignore_index, reduction="none"
        )
        return hardest_pixels_mean(per_pixel, label != ignore_index, hard_pixel_fraction)
    per_pixel = F.cross_entropy(
        scores.float(), label, weight=class_weights, ignore_index=ignore_index, reduction="sum"
    )
    valid = label != ignore_index
    if class_weights is None:
        return per_pixel / valid.sum().clamp(min=1)
    pixel_weights = class_weights[label.masked_fill(~valid, 0)] * valid
    return per_pixel / pixel_weights.sum().clamp(min=1e-12)


def hardest_pixels_mean(per_pixel: Tensor, valid: Tensor, fraction: float) -> Tensor:
    """Mean of the largest ``ceil(fraction * N)`` of the ``N`` labelled pixels' losses.

    Online hard example mining for dense prediction (bootstrapped cross-entropy): each step
    trains on the pixels the model gets most wrong, so the many easy road and sky pixels stop
    outweighing thin and small objects and boundaries. The papers do not use it; it is the usual
    option of segmentation toolkits (e.g. the top 20 % of pixels in Panoptic-DeepLab's loss).
    A batch with no labelled pixel gives 0 with a gradient path.

    Args:
        per_pixel: per-pixel losses, any shape.
        valid: bool, the same shape: the labelled pixels.
        fraction: in (0, 1]; 1 is the plain mean over the labelled pixels.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"hard_pixel_fraction must be in (0, 1], got {fraction}")
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return per_pixel.sum() * 0.0
    count = math.ceil(fraction * losses.numel())
    return losses.topk(count, sorted=False).values.mean()


def partial_cross_entropy(
    scores: Tensor, label: Tensor, label_set_mask: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Mean per-pixel cross-entropy where a label may name a set of classes (partial labels).

    A pixel labelled ``v`` costs ``-log sum_{c allowed by v} p_c`` with ``p = softmax(scores)``:
    for ``v < C`` that is the ordinary cross-entropy, for a label set (``v >= C``, several union
    classes a dataset does not tell apart, ``data.union.partial_labels``) the probability that
    the pixel is any one of them. The thesis (ch. 5) does not train such pixels; this is the
    usual way to learn from a coarser taxonomy without choosing one of its classes. The mean is
    over all labelled pixels, 0 with a gradient path when there is none (as :func:`cross_entropy`).

    Args:
        scores: ``(B, C, H, W)`` unnormalised class scores.
        label: ``(B, H, W)`` values ``0..C+S-1``, ``ignore_index`` where unlabelled.
        label_set_mask: ``(C + S, C)`` bool, row ``v`` the classes value ``v`` allows
            (:meth:`leanseg.data.union.UnionLabelSpace.label_set_mask`).
        ignore_index: label value to ignore.
    """
    num_classes = scores.shape[1]
    scores = scores.float()
    valid = label != ignore_index
    compound = valid & (label >= num_classes)
    plain = torch.where(compound, torch.full_like(label, ignore_index), label)
    total = F.cross_entropy(scores, plain, ignore_index=ignore_index, reduction="sum")
    if compound.any():
        # Only the set pixels: (N, C) log-probabilities against their (N, C) allowed classes.
        log_probs = F.log_softmax(scores.permute(0, 2, 3, 1)[compound], dim=1)
        allowed = label_set_mask.to(scores.device)[label[compound]]
        total = total - log_probs.masked_fill(~allowed, float("-inf")).logsumexp(dim=1).sum()
    return total / valid.sum().clamp(min=1)


def checked_class_weights(weights: Sequence[float], num_classes: int) -> Tensor:
    """``weights`` as a float tensor, after checking there is one positive finite number per class.

    Raises:
        ValueError: naming the problem, for a wrong count or a value that is not positive.
    """
    values = [float(w) for w in weights]
    if len(values) != num_classes:
        raise ValueError(f"class_weights has {len(values)} values for {num_classes} classes")
    bad = [w for w in values if not (w > 0 and math.isfinite(w))]
    if bad:
        raise ValueError(f"class_weights must be positive and finite, got {bad[0]}")
    return torch.tensor(values, dtype=torch.float32)


def class_balanced_weights(
    label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX, max_weight: float = 1e3
) -> Tensor:
    """Per-class loss weights ``w_c = min(max_weight, 1 / p(c))`` of thesis §3.4.

    ``p(c)`` is the fraction of the batch's labelled pixels that belong to class ``c`` (the thesis
    computes it "in the batch"). A class with no pixel in the batch gets weight 0; it weighs no
    pixel anyway.

    Args:
        label: ``(B, H, W)`` class ids, ``ignore_index`` where unlabelled.
        num_classes: number of classes C.
        ignore_index: label value that is not counted.
        max_weight: the cap (thesis: 10^3), reached by classes rarer than ``1 / max_weight``.

    Returns:
        ``(C,)`` float weights.
    """
    labelled = label[label != ignore_index]
    counts = torch.bincount(labelled.flatten(), minlength=num_classes)[:num_classes].float()
    frequency = counts / counts.sum().clamp(min=1)
    weights = (1.0 / frequency.clamp(min=1e-12)).clamp(max=max_weight)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def class_balanced_cross_entropy(
    scores: Tensor, label: Tensor, ignore_index: int = IGNORE_INDEX, max_weight: float = 1e3
) -> Tensor:
    """Cross-entropy with every pixel weighted by its class's :func:`class_balanced_weights`.

    Thesis §3.4: the per-pixel losses are weighted by ``w_c = min(10^3, p(c)^-1)`` with ``p(c)``
    the frequency of class ``c`` in the batch. The thesis sums the weighted losses over the
    pixels; here the sum is divided by the number of labelled pixels, as :func:`cross_entropy`
    does, so the loss scale does not grow with the crop size (the weighting is unchanged). The
    weights are computed from the labels and carry no gradient. A batch with no labelled pixel
    gives 0.

    Args:
        scores: ``(B, C, H, W)`` unnormalised class scores.
        label: ``(B, H, W)`` class ids, ``ignore_index`` where unlabelled.
        ignore_index: label value to ignore.
        max_weight: the weight cap (thesis: 10^3).
    """
    weights = class_balanced_weights(label, scores.shape[1], ignore_index, max_weight)
    weighted = F.cross_entropy(
        scores.float(), label, weight=weights, ignore_index=ignore_index, reduction="sum"
    )
    num_valid = (label != ignore_index).sum().clamp(min=1)
    return weighted / num_valid
