"""Instance segmentation metrics: Cityscapes-style AP (IoU 0.5:0.95) and AP50 per thing class.

Used for SSN Tables 5-7. For every thing class and every IoU threshold ``0.50, 0.55, ..., 0.95``
the predictions of all images, ranked by confidence, are matched greedily to unmatched ground-truth
instances of the same class in the same image (a match needs IoU > threshold, as Cityscapes'
``evalInstanceLevelSemanticLabeling``); the average precision is the area under the
precision-recall curve made monotone (precision at recall r = best precision at recall >= r),
integrated over the recall steps. AP of a class is the mean over thresholds, AP50 the value at 0.5;
the overall AP / AP50 is the mean over classes that have ground truth.

Simplifications of the official script (stated so figures are read correctly): predictions are
non-overlapping masks given as an id map (what :mod:`leanseg.nn.heads.ssn_instance` produces);
ground-truth instances below ``min_gt_area`` pixels are ignored (not counted as misses, and a
prediction matching one is neither true nor false positive), as Cityscapes ignores instances
below 100 pixels at full resolution; predicted pixels on ignore-label pixels count in the IoU
(Cityscapes discounts void overlap); no distance-based AP (AP 50m / 100m).

The class of a ground-truth instance is the most frequent semantic label under it, so the metric
works with Cityscapes ``instanceIds`` (label ids ``* 1000``) and synthetic ids (train ids
``* 1000``) alike; the class of a prediction is ``id // 1000`` (the convention of
:class:`~leanseg.nn.heads.ssn_instance.InstancePrediction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import Tensor

IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())
INSTANCE_ID_BASE = 1000


def average_precision(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> float:
    """Area under the monotone precision-recall curve.

    Args:
        scores: ``(P,)`` prediction confidences.
        matched: ``(P,)`` bool, whether each prediction is a true positive.
        num_gt: number of ground-truth instances.

    Returns:
        AP in [0, 1]; 0 with ground truth but no prediction; NaN without ground truth.
    """
    if num_gt == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, 1)
    # Monotone envelope, then sum precision over recall increments.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * precision))


def _ids_and_masks(instance: Tensor, keep: Tensor) -> tuple[list[int], Tensor]:
    ids = [int(i) for i in torch.unique(instance[keep]).tolist() if i >= INSTANCE_ID_BASE]
    if not ids:
        return [], torch.zeros(0, *instance.shape, dtype=torch.bool)
    masks = instance.unsqueeze(0) == torch.tensor(ids).view(-1, 1, 1)  # (N, H, W)
    return ids, masks


@dataclass
class _ClassRecords:
    # Per threshold: confidences and true-positive flags of the counted predictions.
    scores: list[list[float]] = field(default_factory=list)
    matched: list[list[bool]] = field(default_factory=list)
    num_gt: int = 0


class InstanceAP:
    """Accumulates predictions and ground truth image by image; :meth:`compute` gives AP.

    Args:
        thing_classes: semantic class ids that have instances.
        class_names: optional names for the report, indexed by class id.
        min_gt_area: ground-truth instances smaller than this are ignored.
    """

    def __init__(
        self,
        thing_classes: Sequence[int],
        class_names: Sequence[str] | None = None,
        min_gt_area: int = 0,
    ) -> None:
        self.thing_classes = list(thing_classes)
        self.class_names = class_names
        self.min_gt_area = min_gt_area
        self._records = {
            c: _ClassRecords(
                scores=[[] for _ in IOU_THRESHOLDS], matched=[[] for _ in IOU_THRESHOLDS]
            )
            for c in self.thing_classes
        }

    def update(
        self,
        pred_instance: Tensor,
        pred_scores: dict[int, float],
        gt_instance: Tensor,
        gt_label: Tensor,
    ) -> None:
        """Add one image.

        Args:
            pred_instance: ``(H, W)`` predicted ids ``class * 1000 + k``, 0 = none.
            pred_scores: confidence of each predicted id (missing ids get 1.0).
            gt_instance: ``(H, W)`` ground-truth ids (instances are ``>= 1000``).
            gt_label: ``(H, W)`` semantic labels (train ids, 255 ignore).
        """
        pred_instance = pred_instance.cpu().long()
        gt_instance = gt_instance.cpu().long()
        gt_label = gt_label.cpu().long()
        everywhere = torch.ones_like(gt_instance, dtype=torch.bool)
        gt_ids, gt_masks = _ids_and_masks(gt_instance, everywhere)
        gt_area = gt_masks.flatten(1).sum(1)
        gt_class = [int(torch.mode(gt_label[m]).values) for m in gt_masks]
        pred_ids, pred_masks = _ids_and_masks(pred_instance, everywhere)
        pred_class = [i // INSTANCE_ID_BASE for i in pred_ids]
        if gt_masks.shape[0] and pred_masks.shape[0]:
            inter = pred_masks.flatten(1).float() @ gt_masks.flatten(1).float().T  # (P, G)
            pred_area = pred_masks.flatten(1).sum(1)
            union = pred_area.view(-1, 1) + gt_area.view(1, -1) - inter
            iou = (inter / union.clamp(min=1)).numpy()
        else:
            iou = np.zeros((len(pred_ids), len(gt_ids)))
        for c in self.thing_classes:
            record = self._records[c]
            g_sel = [j for j, gc in enumerate(gt_class) if gc == c]
            valid_g = [j for j in g_sel if gt_area[j] >= self.min_gt_area]
            ignored_g = [j for j in g_sel if gt_area[j] < self.min_gt_area]
            record.num_gt += len(valid_g)
            p_sel = [i for i, pc in enumerate(pred_class) if pc == c]
            p_sel.sort(key=lambda i: -pred_scores.get(pred_ids[i], 1.0))
            for t, threshold in enumerate(IOU_THRESHOLDS):
                taken: set[int] = set()
                for i in p_sel:
                    candidates = [j for j in valid_g if j not in taken and iou[i, j] > threshold]
                    score = pred_scores.get(pred_ids[i], 1.0)
                    if candidates:
                        best = max(candidates, key=lambda j: iou[i, j])
                        taken.add(best)
                        record.scores[t].append(score)
                        record.matched[t].append(True)
                    elif any(iou[i, j] > threshold for j in ignored_g):
                        continue  # matches an ignored instance: not counted
                    else:
                        record.scores[t].append(score)
                        record.matched[t].append(False)

    def merge(self, other: InstanceAP) -> None:
        """Add the images ``other`` accumulated (another rank's share of a distributed eval).

        Raises:
            ValueError: ``other`` counts other thing classes.
        """
        if other.thing_classes != self.thing_classes:
            raise ValueError(
                f"cannot merge AP of thing classes {other.thing_classes} into {self.thing_classes}"
            )
        for c in self.thing_classes:
            mine, theirs = self._records[c], other._records[c]
            mine.num_gt += theirs.num_gt
            for t in range(len(IOU_THRESHOLDS)):
                mine.scores[t] += theirs.scores[t]
                mine.matched[t] += theirs.matched[t]

    def compute(self) -> dict[str, float | dict[str, float]]:
        """``{"AP", "AP50", "per_class": {name: AP}, "per_class_AP50": {name: AP50}}``.

        AP values are in [0, 1]; classes without ground truth are NaN and excluded from means.
        """
        per_class: dict[str, float] = {}
        per_class50: dict[str, float] = {}
        for c in self.thing_classes:
            record = self._records[c]
            aps = [
                average_precision(
                    np.asarray(record.scores[t], dtype=np.float64),
                    np.asarray(record.matched[t], dtype=bool),
                    record.num_gt,
                )
                for t in range(len(IOU_THRESHOLDS))
            ]
            name = self.class_names[c] if self.class_names else str(c)
            per_class[name] = float(np.mean(aps))
            per_class50[name] = aps[0]
        valid = [v for v in per_class.values() if not np.isnan(v)]
        valid50 = [v for v in per_class50.values() if not np.isnan(v)]
        return {
            "AP": float(np.mean(valid)) if valid else float("nan"),
            "AP50": float(np.mean(valid50)) if valid50 else float("nan"),
            "per_class": per_class,
            "per_class_AP50": per_class50,
        }


def format_instance_ap(ap: dict[str, Any], class_names: Sequence[str] | None = None) -> Table:
    """A rich table of :meth:`InstanceAP.compute` (or its JSON, NaN as None) in percent.

    Per-class keys that are class ids (as :mod:`leanseg.evaluation.instances` writes them) are
    shown by name when ``class_names`` is given; ``-`` marks a class without ground truth.
    """

    def pct(value: float | None) -> str:
        return "-" if value is None or np.isnan(value) else f"{100 * value:.1f}"

    def name(key: str) -> str:
        if class_names is not None and key.isdigit() and int(key) < len(class_names):
            return class_names[int(key)]
        return key

    table = Table(title="Instance AP (IoU 0.50:0.95) and AP50")
    table.add_column("class")
    table.add_column("AP", justify="right")
    table.add_column("AP50", justify="right")
    per_class50 = ap.get("per_class_AP50") or {}
    for key, value in (ap.get("per_class") or {}).items():
        table.add_row(name(key), pct(value), pct(per_class50.get(key)))
    table.add_section()
    table.add_row("mean", pct(ap.get("AP")), pct(ap.get("AP50")), style="bold")
    return table
