"""Cityscapes-style instance AP (``leanseg.metrics.instance``): the matching and AP rules one
by one.

Written against the survivors of mutation testing (``benchmarks/robustness/mutation.py --module
instance_metrics``). The rules are those of Cityscapes' ``evalInstanceLevelSemanticLabeling``
as the module docstring states them (SSN Tables 5-7 report these AP / AP50).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leanseg.metrics.instance import IOU_THRESHOLDS, InstanceAP, average_precision


def _gt_square(size: int = 8, top: int = 0, left: int = 0, instance: int = 8001):
    gt = torch.zeros(size, size, dtype=torch.long)
    gt[top : top + 4, left : left + 4] = instance
    label = torch.where(gt > 0, torch.full_like(gt, instance // 1000), torch.zeros_like(gt))
    return gt, label


def _ap(pred, scores, gt, label, classes=(8,), **kwargs):
    metric = InstanceAP(list(classes), **kwargs)
    metric.update(pred, scores, gt, label)
    return metric.compute()


# ---------------------------------------------------------------------- average_precision


def test_ap_by_hand_with_a_false_positive_between_true_positives():
    """Ranks TP, FP, TP of 3 ground truths: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3; the
    envelope makes it 1, 2/3, 2/3, so AP = 1/3 * 1 + 1/3 * 2/3 = 5/9."""
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    assert np.isclose(ap, 5 / 9)


def test_ap_without_ground_truth_is_nan_and_without_predictions_zero():
    assert math.isnan(average_precision(np.array([0.5]), np.array([False]), 0))
    assert average_precision(np.zeros(0), np.zeros(0, dtype=bool), 2) == 0.0


def test_only_false_positives_give_zero():
    assert average_precision(np.array([0.9, 0.4]), np.array([False, False]), 1) == 0.0


def test_equal_confidences_keep_their_order():
    """A stable ranking: of two predictions with the same confidence the first one given comes
    first (FP then TP: precision 1/2 at recall 1)."""
    scores = np.array([0.5, 0.5])
    assert np.isclose(average_precision(scores, np.array([False, True]), 1), 0.5)
    assert np.isclose(average_precision(scores, np.array([True, False]), 1), 1.0)


# ---------------------------------------------------------------------- matching


def test_a_match_needs_iou_above_the_threshold():
    """IoU exactly 0.5 is no match at 0.5 (``>``, as Cityscapes); IoU 0.75 matches at the five
    thresholds 0.5 .. 0.7, so AP = 5/10 and AP50 = 1."""
    gt, label = _gt_square()
    half = torch.zeros_like(gt)
    half[0:2, 0:4] = 8001  # 8 of 16 pixels: IoU 0.5
    result = _ap(half, {8001: 1.0}, gt, label)
    assert result["AP"] == 0.0 and result["AP50"] == 0.0
    three_quarters = torch.zeros_like(gt)
    three_quarters[0:3, 0:4] = 8001  # 12 of 16: IoU 0.75
    result = _ap(three_quarters, {8001: 1.0}, gt, label)
    assert np.isclose(result["AP"], 0.5) and result["AP50"] == 1.0
    assert np.isclose(result["per_class"]["8"], 0.5) and result["per_class_AP50"]["8"] == 1.0


def test_iou_counts_the_predicted_pixels_outside_the_instance():
    """IoU = |P ∩ G| / |P ∪ G|: a prediction covering the instance and as much again has IoU
    1/2 and matches at no threshold."""
    gt, label = _gt_square()
    pred = torch.zeros_like(gt)
    pred[0:8, 0:4] = 8001  # 32 pixels, 16 of them on the instance
    assert _ap(pred, {8001: 1.0}, gt, label)["AP50"] == 0.0


def test_unmatched_predictions_are_false_positives_where_they_rank():
    """A prediction matching no instance is a false positive at its rank: ranked after the
    match AP is still 1, ranked first 1/2 (precision 1/2 at recall 1); two halves of one
    instance (IoU exactly 1/2 each) match nothing.

    That each instance is matched at most once cannot be seen from the outside: predictions
    are disjoint masks, so no two of them have IoU > 0.5 with one instance
    (``benchmarks/robustness/mutation.py``, ``_DISJOINT``)."""
    gt, label = _gt_square(size=8)
    pred = torch.zeros_like(gt)
    pred[0:4, 0:4] = 8001  # exact
    pred[4:8, 0:4] = 8002  # covers nothing: a false positive
    assert _ap(pred, {8001: 0.9, 8002: 0.1}, gt, label)["AP"] == 1.0
    assert _ap(pred, {8001: 0.1, 8002: 0.9}, gt, label)["AP"] == 0.5
    # Two predictions overlapping the same instance: the higher one takes it.
    pred = torch.zeros(8, 8, dtype=torch.long)
    gt2 = torch.zeros(8, 8, dtype=torch.long)
    gt2[0:4, 0:8] = 8001  # 32 pixels
    label2 = torch.where(gt2 > 0, 8, 0)
    pred[0:4, 0:4] = 8001  # each half of the instance: IoU exactly 0.5, no match
    pred[0:4, 4:8] = 8002
    assert _ap(pred, {8001: 0.9, 8002: 0.8}, gt2, label2)["AP50"] == 0.0
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[0:4, 0:7] = 8001  # IoU 28/32
    pred[0:4, 7:8] = 8002  # IoU 4/32
    pred[4:8, 0:8] = 8003  # IoU 0
    result = _ap(pred, {8001: 0.2, 8002: 0.9, 8003: 0.95}, gt2, label2)
    # Ranked 8003 (FP), 8002 (FP), 8001 (TP): precision 1/3 at recall 1.
    assert np.isclose(result["AP50"], 1 / 3)


def test_a_prediction_overlapping_two_instances_matches_the_one_above_the_threshold():
    """A prediction that also overlaps a second instance (IoU 1/12, below every threshold)
    matches the instance it covers, and leaves the other to the next prediction: both found.

    Which of two instances above the threshold is taken cannot be seen from the outside:
    instances are disjoint, so a prediction has IoU > 0.5 with at most one of them
    (``benchmarks/robustness/mutation.py``, ``_ONE_CANDIDATE``)."""
    gt = torch.zeros(4, 12, dtype=torch.long)
    gt[:, 0:6] = 8001
    gt[:, 6:12] = 8002
    label = torch.where(gt > 0, 8, 0)
    pred = torch.zeros_like(gt)
    pred[:, 0:5] = 8001  # IoU 5/6 with 8001, 0 with 8002
    pred[:, 5:12] = 8002  # IoU 6/7 with 8002, 4/48 = 1/12 with 8001
    result = _ap(pred, {8001: 0.5, 8002: 0.9}, gt, label)
    assert result["AP50"] == 1.0


def test_predictions_of_another_class_do_not_match():
    gt, label = _gt_square()
    pred = torch.where(gt > 0, 9001, 0)
    result = _ap(pred, {9001: 1.0}, gt, label, classes=(8, 9))
    assert result["per_class"]["8"] == 0.0  # missed
    assert math.isnan(result["per_class"]["9"])  # no ground truth of class 9
    assert result["AP"] == 0.0 and result["AP50"] == 0.0


def test_ids_below_1000_are_no_instances():
    """Values below 1000 are "no instance" in both maps (stuff, or 0 = none)."""
    gt, label = _gt_square()
    gt_with_stuff = torch.where(gt > 0, gt, 7)
    pred = torch.where(gt > 0, 8001, 999)
    assert _ap(pred, {8001: 1.0}, gt_with_stuff, label)["AP"] == 1.0


def test_a_missing_confidence_counts_as_one():
    """The prediction without a confidence ranks with 1.0: before the FP of 0.5, AP = 1."""
    gt, label = _gt_square()
    pred = torch.where(gt > 0, 8001, 0)
    pred[6:8, 6:8] = 8002  # a false positive
    assert _ap(pred, {8002: 0.5}, gt, label)["AP"] == 1.0
    assert _ap(pred, {8002: 0.5, 8001: 0.4}, gt, label)["AP"] == 0.5


def test_predictions_are_ranked_across_images():
    """All images' predictions are ranked together by confidence."""
    metric = InstanceAP([8])
    gt, label = _gt_square()
    hit = torch.where(gt > 0, 8001, 0)
    miss = torch.zeros_like(gt)
    miss[6:8, 6:8] = 8001
    metric.update(miss, {8001: 0.9}, gt, label)  # image 1: a FP of 0.9, its instance missed
    metric.update(hit, {8001: 0.3}, gt, label)  # image 2: a TP of 0.3
    # FP then TP over 2 ground truths: precision 1/2 at recall 1/2.
    assert np.isclose(metric.compute()["AP"], 0.25)


# ---------------------------------------------------------------------- small instances


def test_a_prediction_on_a_small_instance_is_neither_true_nor_false():
    """Instances below ``min_gt_area`` are ignored: not missed, and a prediction matching one is
    not counted; an instance of exactly ``min_gt_area`` pixels counts."""
    gt, label = _gt_square(size=8)
    gt[7, 7] = 8002
    label[7, 7] = 8
    pred = gt.clone()
    result = _ap(pred, {8001: 0.1, 8002: 0.9}, gt, label, min_gt_area=2)
    assert result["AP"] == 1.0  # the 1-pixel one: no FP ranked first, no miss
    result = _ap(pred, {8001: 0.1, 8002: 0.9}, gt, label, min_gt_area=1)
    assert result["AP"] == 1.0  # both count and both are found
    only_big = torch.where(gt == 8001, 8001, 0)
    assert _ap(only_big, {8001: 1.0}, gt, label, min_gt_area=1)["AP"] == 0.5
    assert _ap(only_big, {8001: 1.0}, gt, label, min_gt_area=16)["AP"] == 1.0
    # Both below the limit: no ground truth left, and the prediction on one is not counted.
    assert math.isnan(_ap(only_big, {8001: 1.0}, gt, label, min_gt_area=17)["AP"])


def test_a_false_positive_far_from_a_small_instance_still_counts():
    gt, label = _gt_square(size=8)
    gt[7, 7] = 8002
    label[7, 7] = 8
    pred = torch.where(gt == 8001, 8001, 0)
    pred[6, 0] = 8003  # overlaps nothing
    result = _ap(pred, {8001: 0.1, 8003: 0.9}, gt, label, min_gt_area=2)
    assert np.isclose(result["AP"], 0.5)


# ---------------------------------------------------------------------- compute and merge


def test_ap_is_the_mean_over_thresholds_and_ap50_the_first():
    gt, label = _gt_square()
    pred = torch.zeros_like(gt)
    pred[0:4, 0:3] = 8001  # IoU 0.75
    result = _ap(pred, {8001: 1.0}, gt, label)
    per_threshold = [1.0 if t < 0.75 else 0.0 for t in IOU_THRESHOLDS]
    assert np.isclose(result["AP"], np.mean(per_threshold)) and result["AP50"] == 1.0


def test_class_names_label_the_per_class_results():
    gt, label = _gt_square()
    names = [f"class{i}" for i in range(10)]
    result = _ap(torch.where(gt > 0, 8001, 0), {}, gt, label, classes=(8, 9), class_names=names)
    assert set(result["per_class"]) == {"class8", "class9"}
    assert result["per_class"]["class8"] == 1.0 and result["per_class_AP50"]["class8"] == 1.0


def test_means_skip_classes_without_ground_truth_and_are_nan_without_any():
    metric = InstanceAP([8, 9])
    gt, label = _gt_square()
    pred = torch.zeros_like(gt)
    pred[0:4, 0:3] = 8001  # IoU 0.75 for class 8
    metric.update(pred, {}, gt, label)
    result = metric.compute()
    assert np.isclose(result["AP"], 0.5) and result["AP50"] == 1.0
    empty = InstanceAP([8]).compute()
    assert math.isnan(empty["AP"]) and math.isnan(empty["AP50"])


def test_merge_adds_ground_truth_counts_and_records_per_threshold():
    gt, label = _gt_square()
    found, missed = InstanceAP([8]), InstanceAP([8])
    found.update(torch.where(gt > 0, 8001, 0), {8001: 0.9}, gt, label)
    missed.update(torch.zeros_like(gt), {}, gt, label)
    found.merge(missed)
    result = found.compute()
    assert result["AP"] == 0.5 and result["AP50"] == 0.5  # 1 of 2 instances at every threshold
    with pytest.raises(ValueError, match=r"thing classes \[9\] into \[8\]"):
        found.merge(InstanceAP([9]))


def _ap_by_definition(scores, matched, num_gt):
    """AP from its definition: rank by confidence (ties in the order given), precision and
    recall after each prediction, precision made monotone from the right, summed over the
    recall steps."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    points = []
    for i in order:
        tp, fp = tp + bool(matched[i]), fp + (not matched[i])
        points.append((tp / num_gt, tp / (tp + fp)))
    total, previous_recall = 0.0, 0.0
    for k, (recall, _) in enumerate(points):
        best = max(precision for _, precision in points[k:])
        total += (recall - previous_recall) * best
        previous_recall = recall
    return total


def test_many_equal_confidences_keep_their_order():
    """Ties are ranked in the order given (a stable sort) however many there are; numpy's
    default sort reorders ties from 16 elements on."""
    rng = np.random.default_rng(0)
    scores = rng.choice([0.5, 0.7], 64)
    matched = rng.random(64) < 0.5
    expected = _ap_by_definition(scores.tolist(), matched.tolist(), 40)
    assert np.isclose(average_precision(scores, matched, 40), expected)


def test_instance_id_1000_is_the_first_instance_of_class_1():
    """Ids are ``class * 1000 + k`` with k from 0: 1000 is an instance (class 1, k = 0)."""
    gt, _ = _gt_square(instance=1000)
    label = torch.where(gt > 0, 1, 0)
    assert _ap(gt, {1000: 1.0}, gt, label, classes=(1,))["AP"] == 1.0


def test_a_prediction_in_an_image_without_instances_is_a_false_positive():
    metric = InstanceAP([8])
    gt, label = _gt_square()
    metric.update(torch.where(gt > 0, 8001, 0), {8001: 0.5}, gt, label)
    empty = torch.zeros_like(gt)
    metric.update(torch.where(gt > 0, 8001, 0), {8001: 0.9}, empty, empty)
    # FP (0.9) then TP (0.5) of one instance: precision 1/2 at recall 1.
    assert metric.compute()["AP"] == 0.5


def test_confidences_rank_predictions_of_different_images():
    """A later image's more confident false positive ranks before an earlier true positive."""
    metric = InstanceAP([8])
    gt, label = _gt_square()
    hit = torch.where(gt > 0, 8001, 0)
    miss = torch.zeros_like(gt)
    miss[6:8, 6:8] = 8001
    metric.update(hit, {8001: 0.3}, gt, label)  # image 1: a TP of 0.3
    metric.update(miss, {8001: 0.9}, gt, label)  # image 2: a FP of 0.9, its instance missed
    assert np.isclose(metric.compute()["AP"], 0.25)  # FP, TP over 2: precision 1/2 at 1/2


def test_a_missing_confidence_is_exactly_one():
    """It ties with a confidence of 1.0 given earlier, which keeps its place in front."""
    metric = InstanceAP([8])
    gt, label = _gt_square()
    miss = torch.zeros_like(gt)
    miss[6:8, 6:8] = 8001
    metric.update(miss, {8001: 1.0}, gt, label)  # image 1: a FP of 1.0
    metric.update(torch.where(gt > 0, 8001, 0), {}, gt, label)  # image 2: a TP, no confidence
    assert np.isclose(metric.compute()["AP"], 0.25)


def test_half_covering_a_small_instance_is_a_false_positive():
    """Only a prediction that would *match* an ignored small instance (IoU above the threshold)
    is left uncounted; one of IoU exactly 0.5 is a false positive at every threshold."""
    gt, label = _gt_square(size=8)
    gt[7, 6:8] = 8002  # 2 pixels, below min_gt_area
    label[7, 6:8] = 8
    pred = torch.where(gt == 8001, 8001, 0)
    pred[7, 7] = 8003  # 1 of its 2 pixels: IoU 1/2
    result = _ap(pred, {8001: 0.1, 8003: 0.9}, gt, label, min_gt_area=3)
    assert result["AP50"] == 0.5 and result["AP"] == 0.5


def test_ap50_is_the_value_at_iou_0_5_alone():
    """IoU 0.55 matches at 0.5 only (not above 0.55): AP50 = 1, AP = 1/10."""
    gt = torch.zeros(8, 8, dtype=torch.long)
    gt[0:4, 0:5] = 8001  # 20 pixels
    label = torch.where(gt > 0, 8, 0)
    pred = torch.zeros_like(gt)
    pred[0:2, 0:5] = 8001
    pred[2, 0] = 8001  # 11 pixels inside: IoU 11/20
    result = _ap(pred, {8001: 1.0}, gt, label)
    assert result["AP50"] == 1.0 and result["per_class_AP50"]["8"] == 1.0
    assert np.isclose(result["AP"], 0.1)


# ---------------------------------------------------------------------- the printed table


def _cells(table):
    return [[str(cell) for cell in column._cells] for column in table.columns]


def test_ap_table_columns_rows_and_mean():
    """Title, a class column and two right-aligned percentage columns; one row per class, then
    the bold mean row after a section line."""
    from leanseg.metrics.instance import format_instance_ap

    ap = {
        "AP": 0.25,
        "AP50": 0.5,
        "per_class": {"1": 0.25, "3": 0.125, "x": None},
        "per_class_AP50": {"1": 0.5, "3": 0.75, "x": None},
    }
    table = format_instance_ap(ap, ["road", "car", "person"])
    assert table.title == "Instance AP (IoU 0.50:0.95) and AP50"
    assert [column.header for column in table.columns] == ["class", "AP", "AP50"]
    assert [column.justify for column in table.columns] == ["left", "right", "right"]
    # Ids name classes while they are below len(class_names); others stay as they are.
    assert _cells(table) == [
        ["car", "3", "x", "mean"],
        ["25.0", "12.5", "-", "25.0"],
        ["50.0", "75.0", "-", "50.0"],
    ]
    assert table.rows[-1].style == "bold" and table.rows[-1].end_section is False
    assert table.rows[-2].end_section is True


def test_ap_table_without_names_or_ap50():
    from leanseg.metrics.instance import format_instance_ap

    table = format_instance_ap({"AP": None, "per_class": {"2": math.nan}})
    assert _cells(table) == [["2", "mean"], ["-", "-"], ["-", "-"]]
    table = format_instance_ap({"AP": 0.5, "AP50": 0.5, "per_class": {"0": 0.5}}, ["sky"])
    assert _cells(table) == [["sky", "mean"], ["50.0", "50.0"], ["-", "50.0"]]
