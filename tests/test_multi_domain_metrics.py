"""Category IoU, instance-level IoU, void predictions and foreign-class incidence (thesis ch. 5)
on hand-made label maps, each value worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from leanseg.metrics.semantic import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_CLASS_CATEGORY,
    InstanceIoU,
    SegmentationMetric,
    category_iou,
    foreign_fraction,
    group_fractions,
    predicted_class_pixels,
)

# Cityscapes train ids used below.
ROAD, SIDEWALK, PERSON, CAR, TRUCK = 0, 1, 11, 13, 14


def test_category_table_follows_the_cityscapes_label_definition():
    assert len(CITYSCAPES_CLASS_CATEGORY) == 19
    names = [CITYSCAPES_CATEGORIES[g] for g in CITYSCAPES_CLASS_CATEGORY]
    assert names[ROAD] == names[SIDEWALK] == "flat"
    assert names[2:5] == ["construction"] * 3  # building, wall, fence
    assert names[5:8] == ["object"] * 3  # pole, traffic light, traffic sign
    assert names[8:10] == ["nature"] * 2  # vegetation, terrain
    assert names[10] == "sky"
    assert names[11:13] == ["human"] * 2  # person, rider
    assert names[13:] == ["vehicle"] * 6  # car, truck, bus, train, motorcycle, bicycle


def test_category_iou_from_the_confusion_matrix():
    # ground truth: road, sidewalk, car, truck; predicted: sidewalk, sidewalk, truck, person.
    target = torch.tensor([[ROAD, SIDEWALK, CAR, TRUCK]])
    pred = torch.tensor([[SIDEWALK, SIDEWALK, TRUCK, PERSON]])
    metric = SegmentationMetric(19, boundary_width=None)
    metric.update(pred, target)
    scores = metric.compute()
    # Class IoU: road 0/1, sidewalk 1/2, car 0/1, truck 0/2 (FP car->truck, FN truck->person).
    assert scores.iou[ROAD] == 0 and scores.iou[SIDEWALK] == 0.5 and scores.iou[TRUCK] == 0
    per_category, mean = category_iou(metric.confusion)
    # flat: both flat pixels predicted flat -> 2 / 2 = 1.
    # vehicle: car->truck is a vehicle TP, truck->person a vehicle FN -> 1 / (1 + 1) = 0.5.
    # human: one FP, no TP -> 0. The other four categories occur nowhere -> NaN.
    assert per_category["flat"] == 1.0
    assert per_category["vehicle"] == 0.5
    assert per_category["human"] == 0.0
    assert all(math.isnan(per_category[c]) for c in ("construction", "object", "nature", "sky"))
    assert mean == pytest.approx((1.0 + 0.5 + 0.0) / 3)


# Classes 0 background, 1 person, 2 car. Instances: A person (4 px, row 0), B person (2 px),
# C car (3 px); one person pixel outside any instance (a crowd "group" region); one ignored.
TARGET = torch.tensor(
    [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 2, 2, 2],
        [0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 255],
    ]
)
INSTANCE = torch.tensor(
    [
        [24001, 24001, 24001, 24001, 0, 0],
        [24002, 24002, 0, 26001, 26001, 26001],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
)
PRED = torch.tensor(
    [
        [1, 1, 0, 0, 0, 0],  # A: 2 of 4 hit
        [1, 1, 1, 0, 0, 0],  # B: 2 of 2 hit; background predicted person (FP); C: 0 of 3
        [0, 0, 0, 0, 0, 0],  # the group pixel is missed: not counted by iIoU
        [0, 0, 0, 0, 0, 1],  # the ignored pixel is not counted
    ]
)


def test_instance_iou_weighs_instances_by_mean_size_over_size():
    metric = InstanceIoU(3)
    metric.update(PRED, TARGET, INSTANCE)
    scores = metric.compute()
    # person: mean size (4 + 2) / 2 = 3; weights A 3/4, B 3/2.
    #   TP_w = 3/4 * 2 + 3/2 * 2 = 4.5, FN_w = 3/4 * 2 + 0 = 1.5, FP = 1 (unweighted)
    #   iIoU = 4.5 / (4.5 + 1.5 + 1) = 4.5 / 7  (plain IoU would be 4 / (4 + 1 + 3) = 0.5)
    # car: one instance, no hit -> 0 / (0 + 3 + 0) = 0. background: no instance -> NaN.
    assert math.isnan(scores.iiou[0])
    assert scores.iiou[1] == pytest.approx(4.5 / 7)
    assert scores.iiou[2] == 0.0
    assert scores.mean == pytest.approx((4.5 / 7 + 0.0) / 2)
    assert scores.num_instances == [0, 2, 1]


def test_instance_iou_with_fixed_mean_sizes_and_split_batches():
    # Fixed mean person size 2: weights A 2/4, B 2/2 -> TP_w = 1 + 2 = 3, FN_w = 1, FP = 1
    # -> 3 / 5.
    metric = InstanceIoU(3, mean_instance_size=[math.nan, 2.0, math.nan])
    metric.update(PRED[None], TARGET[None], INSTANCE[None])
    assert metric.compute().iiou[1] == pytest.approx(3 / 5)
    # Fed row by row (each row an image of its own, so A and B land in different updates), the
    # mean size is still measured over everything fed: 3, and iIoU 4.5 / 7 as in one update
    # (with each update's own mean, A's weight would be 4/4 and B's 2/2: 4 / 7).
    rows = InstanceIoU(3)
    for row in range(TARGET.shape[0]):
        rows.update(PRED[row : row + 1], TARGET[row : row + 1], INSTANCE[row : row + 1])
    assert rows.compute().iiou[1] == pytest.approx(4.5 / 7)
    assert rows.compute().num_instances == [0, 2, 1]


def test_same_instance_id_in_two_images_is_two_instances():
    # Stacked as a batch of two identical images: each id counts once per image, so the
    # weights and hence iIoU are unchanged, and there are twice as many instances.
    metric = InstanceIoU(3)
    metric.update(
        torch.stack([PRED, PRED]), torch.stack([TARGET, TARGET]), torch.stack([INSTANCE] * 2)
    )
    scores = metric.compute()
    assert scores.iiou[1] == pytest.approx(4.5 / 7)
    assert scores.num_instances == [0, 4, 2]


def test_category_iiou_groups_classes():
    # Group 1 = {person, car}: instances A, B, C of sizes 4, 2, 3 -> mean 3; hits 2, 2, 0.
    #   TP_w = 3 * (2/4 + 2/2 + 0/3) = 4.5, FN_w = 3 * (3 - 1.5) = 4.5, FP = 1
    #   -> 4.5 / (4.5 + 4.5 + 1) = 0.45
    metric = InstanceIoU(3, class_to_group=[0, 1, 1])
    metric.update(PRED, TARGET, INSTANCE)
    scores = metric.compute()
    assert scores.iiou[1] == pytest.approx(0.45)
    assert scores.num_instances == [0, 3]


def test_void_predictions_are_false_negatives_only():
    # classes 0, 1: target 0 0 1 1, prediction 0 void 1 0.
    #   class 0: TP 1, FN 1 (void), FP 1 (a 1 predicted 0) -> 1/3
    #   class 1: TP 1, FN 1, FP 0 -> 1/2; pixel accuracy 2 / 4.
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 255, 1, 0]])
    with pytest.raises(ValueError, match="predicted labels"):
        SegmentationMetric(2, boundary_width=None).update(pred, target)
    metric = SegmentationMetric(2, boundary_width=0, void_index=255)
    metric.update(pred, target)
    scores = metric.compute()
    assert scores.iou == pytest.approx([1 / 3, 1 / 2])
    assert scores.pixel_accuracy == 0.5
    assert scores.num_pixels == 4
    assert scores.class_accuracy == pytest.approx([0.5, 0.5])
    assert scores.confusion == [[1, 0], [1, 1]]  # void kept apart
    with pytest.raises(ValueError, match="class id"):
        SegmentationMetric(2, void_index=1)


def test_foreign_incidence_counts_every_pixel():
    # Union classes 0..4; the dataset owns 0, 1, 2. Predicted: 0 1 3 / 4 4 2 -> 3 of 6 foreign.
    pred = torch.tensor([[0, 1, 3], [4, 4, 2]])
    pixels = predicted_class_pixels(pred, 5)
    assert pixels.tolist() == [1, 1, 1, 1, 2]
    assert foreign_fraction(pixels, [0, 1, 2]) == 0.5
    assert group_fractions(pixels, {"driving": [0, 1, 2], "indoor": [3, 4]}) == {
        "driving": 0.5,
        "indoor": 0.5,
    }
    assert math.isnan(foreign_fraction(torch.zeros(5, dtype=torch.int64), [0]))


def test_scores_write_the_new_fields_only_when_computed():
    metric = SegmentationMetric(2, boundary_width=None)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    scores = metric.compute()
    assert "iiou" not in scores.to_dict() and "category_iou" not in scores.to_dict()
    scores.foreign_fraction = 0.25
    assert scores.to_dict()["foreign_fraction"] == 0.25


def test_category_iou_counts_void_predictions_as_false_negatives():
    # road predicted road, car predicted Void: flat 1 / 1; vehicle 0 / (0 + 1) = 0.
    metric = SegmentationMetric(19, boundary_width=None, void_index=255)
    metric.update(torch.tensor([[ROAD, 255]]), torch.tensor([[ROAD, CAR]]))
    per_category, mean = category_iou(metric.confusion, void=metric.void)
    assert per_category["flat"] == 1.0 and per_category["vehicle"] == 0.0
    assert mean == 0.5
