"""Semantic segmentation metrics from confusion matrices: mIoU, accuracies and boundary mIoU.

:class:`SegmentationMetric` accumulates an ``int64`` confusion matrix (rows = ground truth,
columns = prediction) over any number of batches and, optionally, a second one restricted to a
band around the ground-truth label boundaries (the "trimap" evaluation of DeepLabV3+ used by NRD,
Table 1 and 4, and by Specialize-and-Fuse, Table 2b, with an eight-pixel band).

Conventions, stated once:

- Pixels whose target equals ``ignore_index`` are left out of every count.
- IoU of class ``c`` is ``TP / (TP + FP + FN)``. A class absent from both the ground truth and the
  predictions has a zero union and gets IoU NaN; mIoU is the mean over the remaining classes
  (``nanmean``), i.e. over the classes present in the ground truth *or* the predictions, as in
  the Cityscapes and MMSegmentation evaluators. A class predicted but never in the ground truth
  therefore counts with IoU 0.
- Class accuracy (recall) of class ``c`` is ``TP / (TP + FN)``, NaN for classes absent from the
  ground truth; mean class accuracy is its ``nanmean``.
- Boundary band (trimap): a *boundary pixel* is a valid pixel whose 8-neighbourhood (the 3x3
  square around it) holds another valid label. Both sides of an edge are therefore boundary
  pixels. The band is every pixel within Chebyshev distance ``boundary_width`` of a boundary
  pixel, i.e. the boundary dilated by a ``(2w+1) x (2w+1)`` square; a straight edge between two
  regions yields a band ``2 * (w + 1)`` pixels wide. Ignore pixels create no boundary by
  themselves: a class next to an ignore region has no boundary there, and ignore pixels inside
  the band are still not evaluated. The band is computed from the ground truth only, so that it is
  the same for every model being compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.table import Table
from torch import Tensor

__all__ = [
    "SegmentationMetric",
    "SegmentationScores",
    "boundary_band",
    "format_scores",
    "scores_to_text",
]


def boundary_band(target: Tensor, width: int, ignore_index: int = 255) -> Tensor:
    """Boolean mask of the valid pixels within ``width`` pixels of a ground-truth label boundary.

    See the module docstring for the definition (8-neighbourhood boundary pixels, Chebyshev
    dilation, ignore pixels create no boundaries and are never in the band). Computed with
    max-pooling: the largest and smallest valid label of each 3x3 neighbourhood differ exactly at
    boundary pixels, and a ``(2w+1) x (2w+1)`` max-pool of the boundary mask dilates it.

    Args:
        target: integer labels ``(B, H, W)`` or ``(H, W)``.
        width: band half-width ``w >= 0`` in pixels; ``0`` keeps the boundary pixels only.
        ignore_index: label of pixels that are not evaluated.

    Returns:
        Boolean tensor of the shape of ``target``.
    """
    if width < 0:
        raise ValueError(f"boundary width must be >= 0, got {width}")
    squeeze = target.dim() == 2
    labels = target.unsqueeze(0) if squeeze else target
    if labels.dim() != 3:
        raise ValueError(f"expected labels (B, H, W) or (H, W), got shape {tuple(target.shape)}")
    valid = labels != ignore_index
    # float32 represents every label below 2**24 exactly; max-pool needs a floating type on CPU.
    values = labels.to(torch.float32).unsqueeze(1)  # (B, 1, H, W)
    neg_inf = torch.tensor(float("-inf"), device=labels.device)
    valid_4d = valid.unsqueeze(1)
    # Invalid pixels hold -inf so that they never win either pooling; padding is -inf as well.
    highest = F.max_pool2d(torch.where(valid_4d, values, neg_inf), 3, stride=1, padding=1)
    lowest = -F.max_pool2d(torch.where(valid_4d, -values, neg_inf), 3, stride=1, padding=1)
    boundary = valid_4d & (highest > lowest)  # (B, 1, H, W)
    if width > 0:
        kernel = 2 * width + 1
        boundary = F.max_pool2d(boundary.to(torch.float32), kernel, stride=1, padding=width) > 0
    band = boundary.squeeze(1) & valid
    return band.squeeze(0) if squeeze else band


@dataclass
class SegmentationScores:
    """Scores computed from accumulated confusion matrices (fractions in ``[0, 1]``).

    Attributes:
        miou: mean IoU over classes present in the ground truth or the predictions (nanmean).
        iou: IoU per class; NaN for classes absent from both ground truth and predictions.
        pixel_accuracy: fraction of valid pixels predicted correctly.
        mean_class_accuracy: nanmean of per-class recall over classes present in the ground truth.
        class_accuracy: recall ``TP / (TP + FN)`` per class; NaN for classes absent from the
            ground truth.
        boundary_miou: mIoU inside the boundary band (trimap); None if boundary evaluation is off.
        boundary_iou: per-class IoU inside the band; None if boundary evaluation is off.
        confusion: the confusion matrix as nested lists, rows = ground truth, columns = prediction.
        num_pixels: number of valid (non-ignored) pixels evaluated.
        boundary_num_pixels: number of valid pixels inside the band; None if off.
        active_sites: for heads that report a data-dependent cost (QGN; the ``CostReporting``
            capability of ``leanseg.nn.heads.base``), the mean active sites per image and level,
            keyed by the head's level names (``{"Q5": ..., "Q0": ...}``); None for other heads.
        instance_ap: for heads that predict instances (SSN's instance head) on data with
            instance labels, what :meth:`leanseg.instance_metrics.InstanceAP.compute` returns
            (``AP``, ``AP50``, ``per_class``, ``per_class_AP50``, fractions in ``[0, 1]``); None
            otherwise.
    """

    miou: float
    iou: list[float]
    pixel_accuracy: float
    mean_class_accuracy: float
    class_accuracy: list[float]
    boundary_miou: float | None
    boundary_iou: list[float] | None
    confusion: list[list[int]]
    num_pixels: int
    boundary_num_pixels: int | None = None
    active_sites: dict[str, float] | None = None
    instance_ap: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: plain Python numbers and lists, NaN written as None."""
        return _nan_to_none(asdict(self))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(item) for item in value]
    return value


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() > 0 else math.nan


def _iou_from_confusion(confusion: Tensor) -> tuple[list[float], float]:
    matrix = confusion.to(torch.float64)
    tp = matrix.diagonal()
    union = matrix.sum(dim=0) + matrix.sum(dim=1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    return iou.tolist(), _nanmean(iou)


class SegmentationMetric:
    """Accumulates confusion matrices over batches and computes mIoU, accuracies, boundary mIoU.

    Args:
        num_classes: number of classes ``C``; labels are ``0 .. C-1``.
        ignore_index: target label of pixels left out of every count.
        boundary_width: half-width in pixels of the boundary band (trimap) for boundary mIoU;
            None turns boundary evaluation off. The default 8 follows Specialize-and-Fuse
            (Table 2b, "within an eight-pixel range").

    Example:
        >>> metric = SegmentationMetric(num_classes=19)
        >>> for images, labels in loader:  # doctest: +SKIP
        ...     metric.update(model(images).argmax(1), labels)
        >>> metric.reduce_across_processes()  # doctest: +SKIP
        >>> print(metric.compute().miou)  # doctest: +SKIP
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, boundary_width: int | None = 8
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if boundary_width is not None and boundary_width < 0:
            raise ValueError(f"boundary_width must be >= 0 or None, got {boundary_width}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.boundary_confusion: Tensor | None = (
            torch.zeros_like(self.confusion) if boundary_width is not None else None
        )

    def reset(self) -> None:
        """Zero the accumulated matrices."""
        self.confusion.zero_()
        if self.boundary_confusion is not None:
            self.boundary_confusion.zero_()

    def _to_device(self, device: torch.device) -> None:
        if self.confusion.device != device:
            self.confusion = self.confusion.to(device)
            if self.boundary_confusion is not None:
                self.boundary_confusion = self.boundary_confusion.to(device)

    def _bincount(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        index = target[mask] * self.num_classes + pred[mask]
        counts = torch.bincount(index, minlength=self.num_classes**2)
        return counts.view(self.num_classes, self.num_classes)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of predicted and ground-truth label maps.

        Args:
            pred: predicted labels ``(B, H, W)`` or ``(H, W)``, integer, in ``0 .. C-1``
                (take ``scores.argmax(1)`` of a model's output first).
            target: ground-truth labels of the same shape, in ``0 .. C-1`` or ``ignore_index``.

        Raises:
            ValueError: on mismatched shapes or labels outside the valid range.
            TypeError: if either tensor is not of an integer type.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        if pred.dim() not in (2, 3):
            raise ValueError(
                f"expected label maps (B, H, W) or (H, W), got shape {tuple(pred.shape)}; "
                "for class scores (B, C, H, W) pass scores.argmax(1)"
            )
        for name, tensor in (("pred", pred), ("target", target)):
            if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer labels, got dtype {tensor.dtype}")
        pred = pred.to(torch.int64)
        target = target.to(torch.int64)
        self._to_device(target.device)
        valid = target != self.ignore_index
        if valid.any():
            bad_target = valid & ((target < 0) | (target >= self.num_classes))
            if bad_target.any():
                raise ValueError(
                    f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}, "
                    f"found {target[bad_target].unique().tolist()[:10]}"
                )
            bad_pred = valid & ((pred < 0) | (pred >= self.num_classes))
            if bad_pred.any():
                raise ValueError(
                    f"predicted labels must be in [0, {self.num_classes}), "
                    f"found {pred[bad_pred].unique().tolist()[:10]}"
                )
        self.confusion += self._bincount(pred, target, valid)
        if self.boundary_confusion is not None and self.boundary_width is not None:
            band = boundary_band(target, self.boundary_width, self.ignore_index)
            self.boundary_confusion += self._bincount(pred, target, band)

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Add another metric's counts into this one (e.g. from another worker); returns self."""
        if (other.num_classes, other.ignore_index, other.boundary_width) != (
            self.num_classes,
            self.ignore_index,
            self.boundary_width,
        ):
            raise ValueError(
                "cannot merge metrics with different settings: "
                f"(num_classes, ignore_index, boundary_width) = "
                f"{(self.num_classes, self.ignore_index, self.boundary_width)} vs "
                f"{(other.num_classes, other.ignore_index, other.boundary_width)}"
            )
        self.confusion += other.confusion.to(self.confusion.device)
        if self.boundary_confusion is not None and other.boundary_confusion is not None:
            self.boundary_confusion += other.boundary_confusion.to(self.boundary_confusion.device)
        return self

    def reduce_across_processes(self) -> None:
        """Sum the matrices over all processes of the default group (all_reduce).

        A no-op unless ``torch.distributed`` is available and initialised. Works with gloo on CPU;
        with NCCL the matrices travel through the current CUDA device. Call it once, after the
        last ``update`` and before ``compute``, on every process.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        matrices = [self.confusion]
        if self.boundary_confusion is not None:
            matrices.append(self.boundary_confusion)
        stacked = torch.stack(matrices)  # (1 or 2, C, C)
        device = self.confusion.device
        if dist.get_backend() == "nccl":
            stacked = stacked.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked.to(device)
        self.confusion = stacked[0].clone()
        if self.boundary_confusion is not None:
            self.boundary_confusion = stacked[1].clone()

    def compute(self) -> SegmentationScores:
        """Scores of everything accumulated so far (see the module docstring for conventions)."""
        matrix = self.confusion.to(torch.float64).cpu()
        tp = matrix.diagonal()
        gt_count = matrix.sum(dim=1)
        total = float(matrix.sum())
        iou, miou = _iou_from_confusion(matrix)
        class_accuracy = torch.where(
            gt_count > 0, tp / gt_count.clamp(min=1), torch.full_like(tp, math.nan)
        )
        boundary_iou: list[float] | None = None
        boundary_miou: float | None = None
        boundary_num_pixels: int | None = None
        if self.boundary_confusion is not None:
            boundary_iou, boundary_miou = _iou_from_confusion(self.boundary_confusion.cpu())
            boundary_num_pixels = int(self.boundary_confusion.sum())
        return SegmentationScores(
            miou=miou,
            iou=iou,
            pixel_accuracy=float(tp.sum()) / total if total > 0 else math.nan,
            mean_class_accuracy=_nanmean(class_accuracy),
            class_accuracy=class_accuracy.tolist(),
            boundary_miou=boundary_miou,
            boundary_iou=boundary_iou,
            confusion=self.confusion.cpu().tolist(),
            num_pixels=int(total),
            boundary_num_pixels=boundary_num_pixels,
        )


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100.0 * value:.2f}"


def _score_rows(
    scores: SegmentationScores, class_names: Sequence[str] | None
) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Header, per-class rows and summary rows shared by the rich and plain-text tables."""
    num_classes = len(scores.iou)
    if class_names is None:
        class_names = [str(index) for index in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
    with_boundary = scores.boundary_iou is not None
    header = ["class", "IoU %"] + (["boundary IoU %"] if with_boundary else []) + ["accuracy %"]
    rows = []
    for index, name in enumerate(class_names):
        row = [str(name), _percent(scores.iou[index])]
        if scores.boundary_iou is not None:
            row.append(_percent(scores.boundary_iou[index]))
        row.append(_percent(scores.class_accuracy[index]))
        rows.append(row)
    mean_row = ["mean", _percent(scores.miou)]
    pixel_row = ["pixel accuracy", ""]
    if with_boundary:
        mean_row.append(_percent(scores.boundary_miou))
        pixel_row.append("")
    mean_row.append(_percent(scores.mean_class_accuracy))
    pixel_row.append(_percent(scores.pixel_accuracy))
    return header, rows, [mean_row, pixel_row]


def format_scores(scores: SegmentationScores, class_names: Sequence[str] | None = None) -> Table:
    """A rich table: IoU, boundary IoU and accuracy per class, then mean and pixel accuracy.

    Values are percentages; ``-`` marks NaN (class absent). ``class_names`` defaults to indices.
    """
    header, rows, summary = _score_rows(scores, class_names)
    title = f"Segmentation scores ({scores.num_pixels} pixels)"
    table = Table(title=title)
    table.add_column(header[0])
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    table.add_section()
    for row in summary:
        table.add_row(*row, style="bold")
    return table


def scores_to_text(scores: SegmentationScores, class_names: Sequence[str] | None = None) -> str:
    """The table of :func:`format_scores` as plain aligned text, for logs and result files."""
    header, rows, summary = _score_rows(scores, class_names)
    all_rows = [header, *rows, *summary]
    widths = [max(len(row[col]) for row in all_rows) for col in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    parts = [
        line(header),
        rule,
        *(line(row) for row in rows),
        rule,
        *(line(row) for row in summary),
    ]
    return "\n".join(parts) + "\n"
