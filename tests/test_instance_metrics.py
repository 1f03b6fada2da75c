"""Cityscapes-style instance AP."""

import math

import numpy as np
import torch

from leanseg.metrics.instance import IOU_THRESHOLDS, InstanceAP, average_precision


def _scene():
    gt = torch.zeros(20, 20, dtype=torch.long)
    gt[0:10, 0:10] = 8001
    gt[12:20, 12:20] = 8002
    label = torch.zeros(20, 20, dtype=torch.long)
    label[gt > 0] = 8
    return gt, label


def test_thresholds_are_cityscapes():
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_prediction_scores_one():
    gt, label = _scene()
    metric = InstanceAP([8, 9])
    metric.update(gt, {8001: 0.9, 8002: 0.8}, gt, label)
    result = metric.compute()
    assert result["AP"] == 1.0 and result["AP50"] == 1.0
    assert math.isnan(result["per_class"]["9"])  # no ground truth: excluded from the mean


def test_no_prediction_scores_zero():
    gt, label = _scene()
    metric = InstanceAP([8])
    metric.update(torch.zeros_like(gt), {}, gt, label)
    assert metric.compute()["AP"] == 0.0


def test_partial_overlap_counts_only_lower_thresholds():
    gt, label = _scene()
    pred = torch.zeros_like(gt)
    pred[0:7, 0:10] = 8001  # IoU 0.7 with the first instance: a match only for thresholds < 0.7
    metric = InstanceAP([8])
    metric.update(pred, {8001: 1.0}, gt, label)
    result = metric.compute()
    # Recall 1/2 at four of ten thresholds (0.5 .. 0.65), precision 1.
    assert np.isclose(result["AP"], 0.5 * 4 / 10)
    assert np.isclose(result["AP50"], 0.5)


def test_class_of_gt_comes_from_semantic_label():
    gt, label = _scene()
    gt_cityscapes = torch.where(gt > 0, gt + 18000, gt)  # Cityscapes label id 26 (car) * 1000
    metric = InstanceAP([8])
    metric.update(gt, {}, gt_cityscapes, label)
    assert metric.compute()["AP"] == 1.0


def test_average_precision_ranks_by_score():
    # A false positive ranked after both true positives costs nothing; ranked first it does.
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([True, True, False]), 2) == 1.0
    ap = average_precision(np.array([0.9, 0.8, 0.95]), np.array([True, True, False]), 2)
    # Precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the monotone envelope is 2/3 throughout.
    assert np.isclose(ap, 2 / 3)


def test_small_gt_ignored():
    gt, label = _scene()
    gt[19, 0] = 8003  # a 1-pixel instance, below min_gt_area
    label[19, 0] = 8

    def ap(pred, scores, min_gt_area):
        metric = InstanceAP([8], min_gt_area=min_gt_area)
        metric.update(pred, scores, gt, label)
        return metric.compute()["AP"]

    # Missed, the small instance is no miss: recall 2 of 2 (counted: 2 of 3, AP 2/3).
    big_only = torch.where(gt == 8003, 0, gt)
    assert ap(big_only, {8001: 0.9, 8002: 0.8}, min_gt_area=4) == 1.0
    assert np.isclose(ap(big_only, {8001: 0.9, 8002: 0.8}, min_gt_area=1), 2 / 3)
    # Found, it is no hit and no false positive: ranked first it changes nothing (a false
    # positive ranked first would give precision 1/2, 2/3 at recall 1/2, 1: AP 2/3).
    assert ap(gt, {8001: 0.9, 8002: 0.8, 8003: 0.95}, min_gt_area=4) == 1.0
