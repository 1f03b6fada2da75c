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
- Void predictions (per-dataset evaluation of a multi-domain model, thesis 5.3.1): with
  ``void_index`` set, predictions equal to it are "Void" - a false negative of the pixel's class
  and a false positive of none, as the ROB benchmark scripts count foreign-class predictions.
- Category IoU (Cityscapes; thesis Table 5.3) is IoU of the confusion matrix summed into the 7
  categories of the Cityscapes label definition, :data:`CITYSCAPES_CATEGORIES`.
- Instance-level IoU, iIoU (Cityscapes; thesis 5.1.2), see :class:`InstanceIoU`.
- Units: :class:`SegmentationScores` holds fractions in ``[0, 1]`` (the Python API, and the
  keys named as its fields in ``metrics.jsonl`` and ``leanseg eval --json``). Everything shown
  to people is a percentage with one decimal (:func:`percent`): the tables here, the training
  log, ``leanseg eval``'s summary, the HTML report; JSON records carry the same numbers under
  keys ending in ``_percent`` (:func:`percent_scores`).
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

from leanseg.structures.labels import IGNORE_INDEX

__all__ = [
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_CLASS_CATEGORY",
    "InstanceIoU",
    "InstanceIoUScores",
    "SegmentationMetric",
    "SegmentationScores",
    "boundary_band",
    "category_iou",
    "foreign_fraction",
    "format_percent",
    "format_scores",
    "group_confusion",
    "group_fractions",
    "percent",
    "percent_scores",
    "predicted_class_pixels",
    "scores_to_text",
]


def boundary_band(target: Tensor, width: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
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
            instance labels, what :meth:`leanseg.metrics.instance.InstanceAP.compute` returns
            (``AP``, ``AP50``, ``per_class``, ``per_class_AP50``, fractions in ``[0, 1]``); None
            otherwise.
        category_iou: Cityscapes category -> IoU (:func:`category_iou`); None unless the
            classes are Cityscapes' 19.
        category_miou: mean of ``category_iou`` (nanmean); None with it.
        iiou: instance-level IoU per class (:class:`InstanceIoU`), NaN for classes without
            ground-truth instances; None unless the ground truth has instance maps.
        miiou: nanmean of ``iiou`` (over the classes with instances); None with it.
        category_iiou: Cityscapes category -> iIoU, NaN for categories without instances;
            None unless both of the above apply.
        category_miiou: nanmean of ``category_iiou``; None with it.
        foreign_fraction: share of all pixels (ignored ones included) predicted as a class
            foreign to the dataset (thesis Table 5.1); None outside per-dataset evaluation.

    The fields from ``category_iou`` on are left out of :meth:`to_dict` while None, so the
    records of runs that do not compute them stay as they were.
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
    category_iou: dict[str, float] | None = None
    category_miou: float | None = None
    iiou: list[float] | None = None
    miiou: float | None = None
    category_iiou: dict[str, float] | None = None
    category_miiou: float | None = None
    foreign_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: plain Python numbers and lists, NaN written as None."""
        record = asdict(self)
        for name in _OPTIONAL_FIELDS:
            if record[name] is None:
                del record[name]
        return _nan_to_none(record)


# Fields of SegmentationScores that ``to_dict`` writes only when they were computed.
_OPTIONAL_FIELDS = (
    "category_iou",
    "category_miou",
    "iiou",
    "miiou",
    "category_iiou",
    "category_miiou",
    "foreign_fraction",
)


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


def _iou_from_confusion(confusion: Tensor, void: Tensor | None = None) -> tuple[list[float], float]:
    """IoU per class and its nanmean; ``void`` (C,) adds void predictions to the false negatives."""
    matrix = confusion.to(torch.float64)
    tp = matrix.diagonal()
    union = matrix.sum(dim=0) + matrix.sum(dim=1) - tp
    if void is not None:
        union = union + void.to(torch.float64)
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
        void_index: predicted label meaning "Void" (a false negative of the pixel's class, a
            false positive of none; thesis 5.3.1), e.g. 255 for a multi-domain model's
            predictions of classes foreign to the dataset; None: every prediction must be a
            class. Void predictions are kept apart from ``confusion`` (in ``void``, per
            ground-truth class), so the matrix stays ``C x C``.

    Example:
        >>> metric = SegmentationMetric(num_classes=19)
        >>> for images, labels in loader:  # doctest: +SKIP
        ...     metric.update(model(images).argmax(1), labels)
        >>> metric.reduce_across_processes()  # doctest: +SKIP
        >>> print(metric.compute().miou)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        boundary_width: int | None = 8,
        *,
        void_index: int | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if boundary_width is not None and boundary_width < 0:
            raise ValueError(f"boundary_width must be >= 0 or None, got {boundary_width}")
        if void_index is not None and 0 <= void_index < num_classes:
            raise ValueError(f"void_index {void_index} is a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width
        self.void_index = void_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.boundary_confusion: Tensor | None = (
            torch.zeros_like(self.confusion) if boundary_width is not None else None
        )
        # Void predictions per ground-truth class (all zero unless ``void_index`` is set).
        self.void = torch.zeros(num_classes, dtype=torch.int64)
        self.boundary_void = torch.zeros(num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Zero the accumulated matrices."""
        self.confusion.zero_()
        self.void.zero_()
        self.boundary_void.zero_()
        if self.boundary_confusion is not None:
            self.boundary_confusion.zero_()

    def _to_device(self, device: torch.device) -> None:
        if self.confusion.device != device:
            self.confusion = self.confusion.to(device)
            self.void = self.void.to(device)
            self.boundary_void = self.boundary_void.to(device)
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
        void = torch.zeros_like(valid)
        if self.void_index is not None:
            void = valid & (pred == self.void_index)
            valid = valid & ~void
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
        self.void += torch.bincount(target[void], minlength=self.num_classes)
        if self.boundary_confusion is not None and self.boundary_width is not None:
            band = boundary_band(target, self.boundary_width, self.ignore_index)
            self.boundary_confusion += self._bincount(pred, target, band & valid)
            self.boundary_void += torch.bincount(target[band & void], minlength=self.num_classes)

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Add another metric's counts into this one (e.g. from another worker); returns self."""
        mine = (self.num_classes, self.ignore_index, self.boundary_width, self.void_index)
        theirs = (other.num_classes, other.ignore_index, other.boundary_width, other.void_index)
        if mine != theirs:
            raise ValueError(
                "cannot merge metrics with different settings: "
                f"(num_classes, ignore_index, boundary_width, void_index) = {mine} vs {theirs}"
            )
        self.confusion += other.confusion.to(self.confusion.device)
        self.void += other.void.to(self.void.device)
        self.boundary_void += other.boundary_void.to(self.boundary_void.device)
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
        # Void counts ride along as one more column of each matrix: (C, C + 1).
        matrices = [torch.cat([self.confusion, self.void[:, None]], dim=1)]
        if self.boundary_confusion is not None:
            matrices.append(torch.cat([self.boundary_confusion, self.boundary_void[:, None]], 1))
        stacked = torch.stack(matrices)  # (1 or 2, C, C + 1)
        device = self.confusion.device
        if dist.get_backend() == "nccl":
            stacked = stacked.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked.to(device)
        self.confusion = stacked[0, :, :-1].clone()
        self.void = stacked[0, :, -1].clone()
        if self.boundary_confusion is not None:
            self.boundary_confusion = stacked[1, :, :-1].clone()
            self.boundary_void = stacked[1, :, -1].clone()

    def compute(self) -> SegmentationScores:
        """Scores of everything accumulated so far (see the module docstring for conventions)."""
        matrix = self.confusion.to(torch.float64).cpu()
        void = self.void.to(torch.float64).cpu()
        tp = matrix.diagonal()
        gt_count = matrix.sum(dim=1) + void
        total = float(gt_count.sum())
        iou, miou = _iou_from_confusion(matrix, void)
        class_accuracy = torch.where(
            gt_count > 0, tp / gt_count.clamp(min=1), torch.full_like(tp, math.nan)
        )
        boundary_iou: list[float] | None = None
        boundary_miou: float | None = None
        boundary_num_pixels: int | None = None
        if self.boundary_confusion is not None:
            boundary_void = self.boundary_void.cpu()
            boundary_iou, boundary_miou = _iou_from_confusion(
                self.boundary_confusion.cpu(), boundary_void
            )
            boundary_num_pixels = int(self.boundary_confusion.sum() + boundary_void.sum())
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


# ---------------------------------------------------------------------- categories, iIoU

# The 7 categories of the Cityscapes label definition (Cordts et al. 2016, ``labels.py``), and
# the category of each of the 19 train ids in train-id order: road, sidewalk (flat); building,
# wall, fence (construction); pole, traffic light, traffic sign (object); vegetation, terrain
# (nature); sky; person, rider (human); car, truck, bus, train, motorcycle, bicycle (vehicle).
CITYSCAPES_CATEGORIES: tuple[str, ...] = (
    "flat",
    "construction",
    "object",
    "nature",
    "sky",
    "human",
    "vehicle",
)
CITYSCAPES_CLASS_CATEGORY: tuple[int, ...] = (
    0,
    0,
    1,
    1,
    1,
    2,
    2,
    2,
    3,
    3,
    4,
    5,
    5,
    6,
    6,
    6,
    6,
    6,
    6,
)


def group_confusion(confusion: Tensor, class_to_group: Sequence[int], num_groups: int) -> Tensor:
    """A ``C x C`` confusion matrix summed into ``G x G`` groups (e.g. classes -> categories).

    ``M_g = A^T M A`` with ``A`` the ``(C, G)`` one-hot class-to-group matrix, so entry
    ``(g, h)`` counts the pixels of a class of group ``g`` predicted as a class of group ``h``.
    """
    groups = torch.as_tensor(class_to_group, dtype=torch.int64)
    if groups.numel() != confusion.shape[0]:
        raise ValueError(f"{groups.numel()} groups given for {confusion.shape[0]} classes")
    one_hot = F.one_hot(groups, num_groups).to(torch.float64)  # (C, G)
    return one_hot.T @ confusion.to(torch.float64).cpu() @ one_hot


def category_iou(
    confusion: Tensor,
    class_to_category: Sequence[int] = CITYSCAPES_CLASS_CATEGORY,
    categories: Sequence[str] = CITYSCAPES_CATEGORIES,
    *,
    void: Tensor | None = None,
) -> tuple[dict[str, float], float]:
    """Category IoU: IoU of the confusion matrix summed into categories (thesis Table 5.3).

    As the Cityscapes evaluation counts it: a pixel of a class of category ``g`` predicted as
    any class of ``g`` is a true positive of ``g``; predictions across categories are a false
    negative of the ground truth's category and a false positive of the predicted one.

    ``void`` (C,), the void predictions per ground-truth class (``SegmentationMetric.void``),
    adds them to the false negatives of their category.

    Returns:
        Category name -> IoU (NaN when absent from ground truth and predictions), and their
        nanmean.
    """
    grouped = group_confusion(confusion, class_to_category, len(categories))
    grouped_void = None
    if void is not None:
        grouped_void = group_confusion(torch.diag(void), class_to_category, len(categories))
        grouped_void = grouped_void.sum(dim=1)
    iou, mean = _iou_from_confusion(grouped, grouped_void)
    return dict(zip(categories, iou, strict=True)), mean


@dataclass
class InstanceIoUScores:
    """What :meth:`InstanceIoU.compute` returns: iIoU per group, NaN without instances."""

    iiou: list[float]
    mean: float
    num_instances: list[int]


class InstanceIoU:
    """Instance-level IoU (iIoU) of the Cityscapes benchmark, optionally over class groups.

    Plain IoU favours large objects: a missed pedestrian far away costs little. iIoU weighs each
    ground-truth instance's pixels by ``w_i = mean_size(c) / size(i)``, the mean instance size of
    its class over its own size, so every instance counts about equally (Cordts et al. 2016;
    thesis 5.1.2 evaluates WildDash by category iIoU):

        iIoU_c = TP_w / (TP_w + FP + FN_w)

    with ``TP_w`` / ``FN_w`` the weighted counts of instance pixels predicted as / not as ``c``,
    and ``FP`` the *unweighted* pixels of other ground-truth classes predicted as ``c``. Pixels of
    class ``c`` outside any instance (Cityscapes' crowd "group" regions) are neither true
    positives nor false positives. With the mean size measured on the evaluated ground truth,
    ``TP_w = mean_size * sum_i tp_i / size_i`` factors, so only per-class sums are kept:
    instances, instance pixels and ``tp_i / size_i``.

    Instances: within one image, the pixels of one nonzero id of ``instance`` whose label is not
    ignored. An instance's class is its most frequent label (the lowest id on a tie); its size is
    its number of pixels of that label, and its other pixels count in ``FP`` only. Instance ids
    carry no class here, so any id convention works (Cityscapes' ``class_id * 1000 + k``, the
    synthetic scenes').

    Choices where the definition leaves room: the Cityscapes script takes the mean instance
    sizes from a fixed table measured on its training set; by default they are measured on the
    evaluated ground truth here, and ``mean_instance_size`` gives fixed ones instead.

    Args:
        num_classes: number of classes ``C`` of the labels and predictions.
        ignore_index: ground-truth label left out of every count.
        class_to_group: class -> group (e.g. :data:`CITYSCAPES_CLASS_CATEGORY` for category
            iIoU); None scores the classes themselves.
        num_groups: number of groups; defaults to ``max(class_to_group) + 1``.
        mean_instance_size: fixed mean instance size per group (NaN entries are measured).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        *,
        class_to_group: Sequence[int] | None = None,
        num_groups: int | None = None,
        mean_instance_size: Sequence[float] | None = None,
    ) -> None:
        if class_to_group is None:
            class_to_group = range(num_classes)
        self.lut = torch.as_tensor(list(class_to_group), dtype=torch.int64)
        if self.lut.numel() != num_classes:
            raise ValueError(f"{self.lut.numel()} groups given for {num_classes} classes")
        self.num_classes = num_classes
        self.num_groups = int(self.lut.max()) + 1 if num_groups is None else num_groups
        self.ignore_index = ignore_index
        groups = self.num_groups
        self.fixed_size = torch.full((groups,), math.nan, dtype=torch.float64)
        if mean_instance_size is not None:
            self.fixed_size = torch.as_tensor(mean_instance_size, dtype=torch.float64).clone()
        self.confusion = torch.zeros(groups, groups, dtype=torch.int64)
        self.instances = torch.zeros(groups, dtype=torch.int64)
        self.instance_pixels = torch.zeros(groups, dtype=torch.int64)
        self.hit_ratio = torch.zeros(groups, dtype=torch.float64)  # sum_i tp_i / size_i

    def _group(self, labels: Tensor) -> Tensor:
        """Group of each label, -1 for labels that are no class (ignore, void predictions)."""
        inside = (labels >= 0) & (labels < self.num_classes)
        return torch.where(inside, self.lut[labels.clamp(0, self.num_classes - 1)], -1)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, instance: Tensor) -> None:
        """Add a batch: predicted labels, ground-truth labels and instance ids, ``(B, H, W)``
        or ``(H, W)``; predictions outside ``0..C-1`` (void) are false negatives only."""
        if not pred.shape == target.shape == instance.shape:
            raise ValueError(
                f"pred, target and instance shapes differ: {tuple(pred.shape)}, "
                f"{tuple(target.shape)}, {tuple(instance.shape)}"
            )
        if pred.dim() == 2:
            pred, target, instance = pred[None], target[None], instance[None]
        pred, target, instance = (t.to(torch.int64).cpu() for t in (pred, target, instance))
        groups = self.num_groups
        valid = target != self.ignore_index
        truth = self._group(target)  # (B, H, W), -1 where ignored
        guess = self._group(pred)
        counted = valid & (guess >= 0)
        pairs = torch.bincount(truth[counted] * groups + guess[counted], minlength=groups**2)
        self.confusion += pairs.view(groups, groups)

        in_instance = valid & (instance > 0)
        if not in_instance.any():
            return
        image = torch.arange(pred.shape[0]).view(-1, 1, 1).expand_as(instance)
        keys = image[in_instance] * (int(instance.max()) + 1) + instance[in_instance]
        _, member = torch.unique(keys, return_inverse=True)  # instance number of each pixel
        count = int(member.max()) + 1
        labels = truth[in_instance]
        cells = member * groups + labels
        pixels = torch.bincount(cells, minlength=count * groups).view(count, groups)
        hit = guess[in_instance] == labels
        hits = torch.bincount(cells[hit], minlength=count * groups).view(count, groups)
        group = pixels.argmax(dim=1)  # (N,) the instance's class (group): its most frequent
        size = pixels.gather(1, group[:, None]).squeeze(1)
        tp = hits.gather(1, group[:, None]).squeeze(1)
        self.instances += torch.bincount(group, minlength=groups)
        self.instance_pixels += torch.bincount(
            group, weights=size.double(), minlength=groups
        ).long()
        ratio = tp.to(torch.float64) / size.to(torch.float64)
        self.hit_ratio += torch.bincount(group, weights=ratio, minlength=groups)

    def compute(self) -> InstanceIoUScores:
        """iIoU per group (NaN where the ground truth has no instance) and its nanmean."""
        instances = self.instances.to(torch.float64)
        measured = self.instance_pixels.to(torch.float64) / instances.clamp(min=1)
        mean_size = torch.where(torch.isnan(self.fixed_size), measured, self.fixed_size)
        tp = mean_size * self.hit_ratio
        fn = mean_size * (instances - self.hit_ratio)
        matrix = self.confusion.to(torch.float64)
        fp = matrix.sum(dim=0) - matrix.diagonal()
        iiou = torch.where(
            instances > 0, tp / (tp + fn + fp).clamp(min=1e-12), torch.full_like(tp, math.nan)
        )
        return InstanceIoUScores(iiou.tolist(), _nanmean(iiou), self.instances.tolist())


# ---------------------------------------------------------------------- foreign classes


def predicted_class_pixels(pred: Tensor, num_classes: int) -> Tensor:
    """Pixels predicted as each class, ``(C,)`` int64, over every pixel of ``pred``.

    No pixel is left out: the incidence of foreign classes (thesis Table 5.1) counts the whole
    image, ignored regions included (most foreign pixels on Cityscapes lie on the ignored car
    hood, thesis 5.3.2).
    """
    return torch.bincount(pred.reshape(-1).to(torch.int64).cpu(), minlength=num_classes)


def group_fractions(pixels: Tensor, groups: dict[str, Sequence[int]]) -> dict[str, float]:
    """Share of predicted pixels falling into each group of classes (thesis Table 5.1's columns,
    e.g. ``{"driving": [...], "indoor": [...]}``); NaN when nothing was counted."""
    total = float(pixels.sum())
    shares = {}
    for name, classes in groups.items():
        inside = float(pixels[list(classes)].sum()) if len(classes) else 0.0
        shares[name] = inside / total if total > 0 else math.nan
    return shares


def foreign_fraction(pixels: Tensor, own_classes: Sequence[int]) -> float:
    """Share of predicted pixels in classes *not* in ``own_classes`` (foreign to the dataset).

    Args:
        pixels: :func:`predicted_class_pixels` of a dataset's images, union label space.
        own_classes: the union classes the dataset's labels can hold.
    """
    total = float(pixels.sum())
    if total == 0:
        return math.nan
    own = float(pixels[list(own_classes)].sum()) if len(own_classes) else 0.0
    return (total - own) / total


def percent(value: float | None) -> float | None:
    """A score in ``[0, 1]`` as leanseg shows it: a percentage rounded to one decimal
    (``0.72413 -> 72.4``); None for None or NaN (a class absent from the evaluated images)."""
    if value is None or math.isnan(value):
        return None
    return round(100.0 * value, 1)


def percent_scores(
    scores: SegmentationScores, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The mIoU and per-class IoU of ``scores`` as the percentages the tables print, for JSON
    records: ``miou_percent`` and ``iou_percent`` (class name -> IoU, None for an absent class;
    names default to the class indices), and ``boundary_miou_percent`` when it was computed.
    """
    if class_names is None:
        class_names = [str(index) for index in range(len(scores.iou))]
    if len(class_names) != len(scores.iou):
        raise ValueError(f"got {len(class_names)} class names for {len(scores.iou)} classes")
    record: dict[str, Any] = {
        "miou_percent": percent(scores.miou),
        "iou_percent": {
            str(name): percent(value) for name, value in zip(class_names, scores.iou, strict=True)
        },
    }
    if scores.boundary_miou is not None:
        record["boundary_miou_percent"] = percent(scores.boundary_miou)
    return record


def format_percent(value: float | None) -> str:
    """A score in ``[0, 1]`` as printed: :func:`percent` with one decimal, ``-`` for none."""
    shown = percent(value)
    return "-" if shown is None else f"{shown:.1f}"


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
        row = [str(name), format_percent(scores.iou[index])]
        if scores.boundary_iou is not None:
            row.append(format_percent(scores.boundary_iou[index]))
        row.append(format_percent(scores.class_accuracy[index]))
        rows.append(row)
    mean_row = ["mean", format_percent(scores.miou)]
    pixel_row = ["pixel accuracy", ""]
    if with_boundary:
        mean_row.append(format_percent(scores.boundary_miou))
        pixel_row.append("")
    mean_row.append(format_percent(scores.mean_class_accuracy))
    pixel_row.append(format_percent(scores.pixel_accuracy))
    return header, rows, [mean_row, pixel_row]


def format_scores(scores: SegmentationScores, class_names: Sequence[str] | None = None) -> Table:
    """A rich table: IoU, boundary IoU and accuracy per class, then mean and pixel accuracy.

    Values are percentages with one decimal (:func:`percent`); ``-`` marks NaN (class absent).
    ``class_names`` defaults to indices.
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
