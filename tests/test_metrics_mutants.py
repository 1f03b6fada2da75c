"""Semantic metrics (``leanseg.metrics.semantic``): the conventions of its module docstring that the
other tests leave open, with values worked out by hand.

Written against mutation testing (``benchmarks/robustness/mutation.py --module metrics``).
"""

from __future__ import annotations

import math

import pytest
import torch

from leanseg.metrics.semantic import (
    CITYSCAPES_CATEGORIES,
    InstanceIoU,
    SegmentationMetric,
    boundary_band,
    category_iou,
    foreign_fraction,
    format_percent,
    group_confusion,
    group_fractions,
    percent,
    percent_scores,
    predicted_class_pixels,
    scores_to_text,
)


def _two_class_metric(**kwargs) -> SegmentationMetric:
    """Targets 0 1 1 1, predictions 0 0 1 1: IoU_0 = 1/2, IoU_1 = 2/3, recall 1 and 2/3."""
    metric = SegmentationMetric(num_classes=3, **kwargs)
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
    return metric


def test_scores_of_a_hand_made_example():
    scores = _two_class_metric(boundary_width=None).compute()
    assert scores.iou[:2] == pytest.approx([1 / 2, 2 / 3]) and math.isnan(scores.iou[2])
    assert scores.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores.class_accuracy[:2] == pytest.approx([1.0, 2 / 3])
    assert math.isnan(scores.class_accuracy[2])
    assert scores.mean_class_accuracy == pytest.approx(5 / 6)
    assert scores.pixel_accuracy == 0.75 and scores.num_pixels == 4
    assert scores.confusion == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert scores.boundary_miou is None and scores.boundary_num_pixels is None


def test_the_printed_table():
    """Percentages with one decimal, ``-`` for an absent class, columns aligned."""
    text = scores_to_text(_two_class_metric(boundary_width=None).compute(), ["road", "car", "sky"])
    assert text == (
        "class           IoU %  accuracy %\n"
        "---------------------------------\n"
        "road             50.0       100.0\n"
        "car              66.7        66.7\n"
        "sky                 -           -\n"
        "---------------------------------\n"
        "mean             58.3        83.3\n"
        "pixel accuracy               75.0\n"
    )


def test_the_printed_table_with_boundary_scores_and_index_names():
    metric = SegmentationMetric(num_classes=2, boundary_width=0)
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 1, 1]]))
    lines = scores_to_text(metric.compute()).splitlines()
    assert lines[0] == "class           IoU %  boundary IoU %  accuracy %"
    assert lines[2] == "0               100.0           100.0       100.0"
    assert lines[-2] == "mean            100.0           100.0       100.0"
    assert lines[-1] == "pixel accuracy" + " " * 30 + "100.0"


def test_percent_rounds_to_one_decimal():
    assert percent(0.72413) == 72.4 and percent(0.99951) == 100.0 and percent(0.0) == 0.0
    assert percent(None) is None and percent(math.nan) is None
    assert format_percent(0.5) == "50.0" and format_percent(math.nan) == "-"
    assert format_percent(None) == "-"


def test_percent_scores_for_json_records():
    scores = _two_class_metric(boundary_width=None).compute()
    record = percent_scores(scores)
    assert record == {"miou_percent": 58.3, "iou_percent": {"0": 50.0, "1": 66.7, "2": None}}
    named = percent_scores(_two_class_metric(boundary_width=0).compute(), ["a", "b", "c"])
    assert set(named) == {"miou_percent", "iou_percent", "boundary_miou_percent"}
    assert list(named["iou_percent"]) == ["a", "b", "c"]
    # Band of width 0: the pixels either side of the 0|1 edge; IoU 1/2 and 0 there.
    assert named["boundary_miou_percent"] == 25.0
    with pytest.raises(ValueError, match="got 2 class names for 3 classes"):
        percent_scores(scores, ["a", "b"])


def test_to_dict_writes_nan_as_none_and_optional_fields_when_computed():
    scores = _two_class_metric(boundary_width=None).compute()
    record = scores.to_dict()
    assert record["iou"][2] is None and record["class_accuracy"][2] is None
    assert "foreign_fraction" not in record and "category_miou" not in record
    scores.category_iou = {"flat": math.nan, "sky": 0.5}
    scores.category_miou = 0.5
    scores.foreign_fraction = 0.25
    scores.active_sites = {"Q5": 3.0}
    record = scores.to_dict()
    assert record["category_iou"] == {"flat": None, "sky": 0.5}
    assert record["category_miou"] == 0.5 and record["foreign_fraction"] == 0.25
    assert record["active_sites"] == {"Q5": 3.0}
    scores.instance_ap = {"per_class": (math.nan, 0.5)}
    assert scores.to_dict()["instance_ap"] == {"per_class": [None, 0.5]}


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        SegmentationMetric(0)
    with pytest.raises(ValueError, match="boundary_width must be >= 0 or None, got -1"):
        SegmentationMetric(2, boundary_width=-1)
    with pytest.raises(ValueError, match=r"void_index 1 is a class id \(0..2\)"):
        SegmentationMetric(3, void_index=1)
    with pytest.raises(ValueError, match=r"void_index 0 is a class id"):
        SegmentationMetric(3, void_index=0)
    assert SegmentationMetric(3, void_index=3).void_index == 3
    assert SegmentationMetric(3, void_index=-1).void_index == -1
    assert SegmentationMetric(1).num_classes == 1


def test_default_band_is_eight_pixels_each_side_of_the_boundary():
    """S&F Table 2b's eight-pixel range: a straight edge gives a band of 2 * (8 + 1) columns."""
    metric = SegmentationMetric(num_classes=2)
    assert metric.boundary_width == 8
    target = torch.zeros(1, 4, 40, dtype=torch.long)
    target[..., 20:] = 1
    metric.update(target, target)
    assert metric.compute().boundary_num_pixels == 4 * 18


def test_boundary_band_checks_and_shapes():
    with pytest.raises(ValueError, match="boundary width must be >= 0, got -1"):
        boundary_band(torch.zeros(2, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match=r"expected labels \(B, H, W\) or \(H, W\), got shape"):
        boundary_band(torch.zeros(1, 1, 2, 2, dtype=torch.long), 1)
    target = torch.tensor([[0, 0, 1, 1, 1, 1]])
    band = boundary_band(target, 1)
    assert band.shape == (1, 6) and band.dtype == torch.bool
    assert band.tolist() == [[True, True, True, True, False, False]]
    assert boundary_band(target, 0).tolist() == [[False, True, True, False, False, False]]
    # Labels read with their ignore value: 1 as ignore leaves no boundary at all.
    assert not boundary_band(target, 1, ignore_index=1).any()


def test_update_checks_shapes_and_types_with_their_messages():
    metric = SegmentationMetric(num_classes=2)
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 3\) vs \(3, 2\)"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pass scores.argmax\(1\)"):
        metric.update(torch.zeros(1, 2, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, 2).long())
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        metric.update(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    for bad in (torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.complex64)):
        with pytest.raises(TypeError, match="pred must hold integer labels"):
            metric.update(bad, torch.zeros(2, 2, dtype=torch.long))
        with pytest.raises(TypeError, match="target must hold integer labels"):
            metric.update(torch.zeros(2, 2, dtype=torch.long), bad)
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\) or 255, found \[-1"):
        metric.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match=r"predicted labels must be in \[0, 2\), found \[-1\]"):
        metric.update(torch.tensor([[-1, 0]]), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"found \[2\]"):
        metric.update(torch.tensor([[2, 0]]), torch.zeros(1, 2, dtype=torch.long))
    assert metric.compute().num_pixels == 0  # nothing was added by the refused batches


def test_uint8_label_maps_are_counted():
    metric = SegmentationMetric(num_classes=3, boundary_width=None)
    target = torch.tensor([[0, 1, 2, 255]], dtype=torch.uint8)
    metric.update(target.clone(), target)
    assert metric.compute().num_pixels == 3 and metric.compute().miou == 1.0


def test_void_predictions_are_false_negatives_inside_the_band_too():
    """A void prediction lowers the IoU and recall of its pixel's class, inside the band as
    well, and its pixel is still counted (thesis 5.3.1)."""
    metric = SegmentationMetric(num_classes=2, boundary_width=0, void_index=255, ignore_index=254)
    target = torch.tensor([[0, 0, 1, 1]])
    metric.update(torch.tensor([[0, 255, 255, 1]]), target)
    scores = metric.compute()
    assert scores.iou == [0.5, 0.5] and scores.class_accuracy == [0.5, 0.5]
    assert scores.num_pixels == 4 and scores.pixel_accuracy == 0.5
    assert scores.boundary_iou == [0.0, 0.0] and scores.boundary_num_pixels == 2
    assert metric.void.tolist() == [1, 1] and metric.boundary_void.tolist() == [1, 1]


def test_merge_adds_every_count_and_refuses_other_settings():
    first = SegmentationMetric(2, boundary_width=0, void_index=9)
    second = SegmentationMetric(2, boundary_width=0, void_index=9)
    first.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    second.update(torch.tensor([[9, 1]]), torch.tensor([[0, 1]]))
    assert first.merge(second) is first
    assert first.confusion.tolist() == [[1, 0], [0, 2]]
    assert first.void.tolist() == [1, 0] and first.boundary_void.tolist() == [1, 0]
    assert first.boundary_confusion.tolist() == [[1, 0], [0, 2]]
    message = r"\(num_classes, ignore_index, boundary_width, void_index\) = \(2, 255, 0, 9\) vs"
    for other in (
        SegmentationMetric(3, boundary_width=0, void_index=9),
        SegmentationMetric(2, ignore_index=0, boundary_width=0, void_index=9),
        SegmentationMetric(2, boundary_width=1, void_index=9),
        SegmentationMetric(2, boundary_width=0),
    ):
        with pytest.raises(ValueError, match=message):
            first.merge(other)
    first.reset()
    assert not first.void.any() and not first.boundary_void.any()
    assert not first.confusion.any() and not first.boundary_confusion.any()


def test_group_confusion_sums_classes_into_groups():
    confusion = torch.tensor([[5, 1, 0], [2, 3, 4], [0, 6, 7]])
    grouped = group_confusion(confusion, [0, 0, 1], 2)
    assert grouped.tolist() == [[11.0, 4.0], [6.0, 7.0]]
    with pytest.raises(ValueError, match="2 groups given for 3 classes"):
        group_confusion(confusion, [0, 1], 2)


def test_category_iou_defaults_to_the_cityscapes_categories():
    """19 classes: road (flat) predicted as sidewalk (flat) is a true positive of flat."""
    confusion = torch.zeros(19, 19, dtype=torch.int64)
    confusion[0, 1] = 4  # road -> sidewalk: flat TP
    confusion[10, 10] = 2  # sky
    confusion[11, 13] = 1  # person -> car: human FN, vehicle FP
    per_category, mean = category_iou(confusion)
    assert list(per_category) == list(CITYSCAPES_CATEGORIES)
    assert per_category["flat"] == 1.0 and per_category["sky"] == 1.0
    assert per_category["human"] == 0.0 and per_category["vehicle"] == 0.0
    assert math.isnan(per_category["construction"])
    assert mean == pytest.approx(0.5)
    void = torch.zeros(19, dtype=torch.int64)
    void[1] = 4  # 4 sidewalk pixels predicted void: flat FN
    assert category_iou(confusion, void=void)[0]["flat"] == 0.5


def test_instance_iou_checks_and_groups():
    with pytest.raises(ValueError, match="2 groups given for 3 classes"):
        InstanceIoU(3, class_to_group=[0, 1])
    assert InstanceIoU(3, class_to_group=[0, 2, 2]).num_groups == 3
    assert InstanceIoU(3, class_to_group=[0, 1, 1], num_groups=4).num_groups == 4
    metric = InstanceIoU(2)
    with pytest.raises(ValueError, match=r"shapes differ: \(1, 2\), \(1, 2\), \(2, 1\)"):
        metric.update(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(2, 1))


def test_instance_iou_of_one_hand_made_image():
    """Two instances of class 1 (sizes 4 and 1, mean 2.5): weights 2.5/4 and 2.5/1. The first
    is found on 2 of 4 pixels, the second missed; one class-0 pixel is predicted 1 (FP 1).
    TP_w = 2.5 * 2/4 = 1.25, FN_w = 2.5 * (2 - 0.5) = 3.75: iIoU = 1.25 / (1.25 + 3.75 + 1)."""
    target = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 255]])
    instance = torch.tensor([[5, 5, 0, 7], [5, 5, 0, 0]])
    pred = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]])
    metric = InstanceIoU(2)
    metric.update(pred, target, instance)
    scores = metric.compute()
    assert math.isnan(scores.iiou[0]) and scores.num_instances == [0, 2]
    assert scores.iiou[1] == pytest.approx(1.25 / 6)
    assert scores.mean == pytest.approx(1.25 / 6)
    assert metric.instance_pixels.tolist() == [0, 5]


def test_an_instance_takes_its_most_frequent_label_and_the_lowest_on_a_tie():
    """An instance's other pixels count in FP only; on a tie the lower class id wins."""
    metric = InstanceIoU(3)
    target = torch.tensor([[2, 2, 1]])
    metric.update(torch.tensor([[2, 2, 1]]), target, torch.tensor([[4, 4, 4]]))
    assert metric.instances.tolist() == [0, 0, 1] and metric.instance_pixels.tolist() == [0, 0, 2]
    tie = InstanceIoU(3)
    tie.update(torch.tensor([[2, 1]]), torch.tensor([[2, 1]]), torch.tensor([[4, 4]]))
    assert tie.instances.tolist() == [0, 1, 0]


def test_void_predictions_are_no_group_in_instance_iou():
    """A prediction outside 0..C-1 (void) is a false negative only."""
    metric = InstanceIoU(2)
    metric.update(torch.tensor([[255, 1]]), torch.tensor([[1, 1]]), torch.tensor([[3, 3]]))
    assert metric.confusion.tolist() == [[0, 0], [0, 1]]
    assert metric.compute().iiou[1] == pytest.approx(0.5)
    assert metric._group(torch.tensor([-1, 0, 1, 2])).tolist() == [-1, 0, 1, -1]


def test_images_without_instances_add_only_to_the_confusion():
    metric = InstanceIoU(2)
    metric.update(torch.tensor([[1, 0]]), torch.tensor([[1, 1]]), torch.tensor([[0, 0]]))
    assert metric.confusion.tolist() == [[0, 0], [1, 1]] and metric.instances.sum() == 0
    assert all(math.isnan(v) for v in metric.compute().iiou)


def test_predicted_pixels_and_fractions():
    pred = torch.tensor([[0, 2, 2], [255, 1, 2]], dtype=torch.uint8)
    pixels = predicted_class_pixels(pred, 3)
    assert pixels[:3].tolist() == [1, 1, 3] and int(pixels.sum()) == 6
    assert predicted_class_pixels(torch.tensor([0]), 4).tolist() == [1, 0, 0, 0]
    counts = torch.tensor([1, 1, 3, 5])
    assert group_fractions(counts, {"a": [0, 1], "b": [], "c": [3]}) == {
        "a": 0.2, "b": 0.0, "c": 0.5,
    }  # fmt: skip
    assert math.isnan(group_fractions(torch.zeros(2), {"a": [0]})["a"])
    assert foreign_fraction(counts, []) == 1.0 and foreign_fraction(counts, [3]) == 0.5


def test_boundary_band_of_uint8_label_maps():
    """Label maps stored as uint8 (PNG) give the same band as int64 ones."""
    target = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 255]])
    expected = boundary_band(target, 1)
    assert torch.equal(boundary_band(target.to(torch.uint8), 1), expected)
    assert expected.tolist() == [[True, True, True, True, True, True, False, False]]


def test_counts_are_exact_int64_whatever_their_size():
    """The matrices are int64 (module docstring): float32 counts stop being exact above 2^24
    pixels, fewer than ten Cityscapes images."""
    metric = _two_class_metric(boundary_width=1, void_index=9)
    for counts in (metric.confusion, metric.boundary_confusion, metric.void, metric.boundary_void):
        assert counts.dtype == torch.int64
    other = SegmentationMetric(3, boundary_width=1, void_index=9)
    other.confusion[0, 0] = 2**24
    metric.merge(other)
    assert metric.compute().confusion[0][0] == 2**24 + 1


def test_merge_adds_void_counts_of_both_sides():
    first = SegmentationMetric(2, boundary_width=0, void_index=9)
    second = SegmentationMetric(2, boundary_width=0, void_index=9)
    first.update(torch.tensor([[9, 9]]), torch.tensor([[0, 1]]))
    second.update(torch.tensor([[9, 1]]), torch.tensor([[0, 1]]))
    first.merge(second)
    assert first.void.tolist() == [2, 1] and first.boundary_void.tolist() == [2, 1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_reduce_in_a_group_of_one_process_keeps_every_count(tmp_path):
    """The all-reduce path in this process (gloo, world size 1: the sum is the counts
    themselves): confusion, void and the band's counts travel and come back in place."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        metric = SegmentationMetric(3, boundary_width=0, void_index=9)
        metric.update(torch.tensor([[0, 9, 1, 2]]), torch.tensor([[0, 0, 1, 1]]))
        before = [t.clone() for t in (metric.confusion, metric.void)]
        band_before = [t.clone() for t in (metric.boundary_confusion, metric.boundary_void)]
        metric.reduce_across_processes()
        assert torch.equal(metric.confusion, before[0]) and torch.equal(metric.void, before[1])
        assert torch.equal(metric.boundary_confusion, band_before[0])
        assert torch.equal(metric.boundary_void, band_before[1])
        assert metric.confusion.dtype == torch.int64 and metric.confusion.device.type == "cpu"
        plain = SegmentationMetric(2, boundary_width=None)
        plain.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
        plain.reduce_across_processes()
        assert plain.confusion.tolist() == [[1, 1], [0, 0]] and plain.boundary_confusion is None
    finally:
        dist.destroy_process_group()


def test_groups_that_no_class_maps_to_still_get_their_rows():
    confusion = torch.tensor([[5, 1, 0], [2, 3, 4], [0, 6, 7]])
    grouped = group_confusion(confusion, [0, 0, 1], 3)
    assert grouped.shape == (3, 3) and grouped[2].sum() == 0 and grouped[:, 2].sum() == 0


def test_instance_iou_accumulates_exact_counts_in_float64():
    """Counts are int64 and the weighted sums float64, so given mean sizes are used as given:
    one instance of 4 pixels, 2 found, fixed mean size 0.1, and one pixel of class 0 predicted
    as 1: TP_w = 0.1 * 2/4, FN_w = 0.1 * (1 - 2/4), FP = 1 (unweighted)."""
    metric = InstanceIoU(2, mean_instance_size=[math.nan, 0.1])
    for counts in (metric.confusion, metric.instances, metric.instance_pixels):
        assert counts.dtype == torch.int64
    assert metric.hit_ratio.dtype == torch.float64
    target = torch.tensor([[1, 1, 1, 1, 0]])
    pred = torch.tensor([[1, 1, 0, 0, 1]])
    metric.update(pred, target, torch.tensor([[3, 3, 3, 3, 0]]))
    tp, fn = 0.1 * 0.5, 0.1 * 0.5
    assert metric.compute().iiou[1] == pytest.approx(tp / (tp + fn + 1), rel=1e-12)


def test_instance_iou_with_one_measured_instance_and_small_fixed_sizes():
    """One instance (mean size = its size, 3): found on 1 of 3 pixels, one FP pixel:
    TP_w = 3 * 1/3 = 1, FN_w = 3 * 2/3 = 2, iIoU = 1 / (1 + 2 + 1). With a fixed mean size of
    0.1 and no FP the weighted counts sum below 1 and iIoU is still TP_w / (TP_w + FN_w)."""
    metric = InstanceIoU(2)
    metric.update(
        torch.tensor([[1, 0, 0, 1]]), torch.tensor([[1, 1, 1, 0]]), torch.tensor([[4, 4, 4, 0]])
    )
    assert metric.compute().iiou[1] == pytest.approx(1 / 4, rel=1e-12)
    small = InstanceIoU(2, mean_instance_size=[math.nan, 0.1])
    small.update(torch.tensor([[1, 0]]), torch.tensor([[1, 1]]), torch.tensor([[4, 4]]))
    assert small.compute().iiou[1] == pytest.approx(0.5, rel=1e-12)


def test_measured_mean_sizes_are_exact():
    """Sizes 1, 1 and 2 of one class: mean 4/3, used in float64; one FP pixel."""
    metric = InstanceIoU(2)
    target = torch.tensor([[1, 0, 1, 0, 1, 1, 0]])
    instance = torch.tensor([[5, 0, 6, 0, 7, 7, 0]])
    pred = torch.tensor([[1, 1, 0, 0, 1, 0, 0]])
    metric.update(pred, target, instance)
    mean = 4 / 3
    tp = mean * (1 / 1 + 0 / 1 + 1 / 2)
    fn = mean * (3 - 1.5)
    assert metric.compute().iiou[1] == pytest.approx(tp / (tp + fn + 1), rel=1e-12)


def test_any_prediction_outside_the_classes_is_void():
    metric = InstanceIoU(2)
    pred = torch.tensor([[-100, 1, 255, 2]])
    metric.update(pred, torch.tensor([[1, 1, 1, 1]]), torch.tensor([[3, 3, 3, 3]]))
    assert metric.confusion.tolist() == [[0, 0], [0, 1]]
    assert metric.compute().iiou[1] == pytest.approx(0.25)


def test_fractions_of_a_single_predicted_pixel():
    assert group_fractions(torch.tensor([1, 0]), {"a": [0], "b": [1]}) == {"a": 1.0, "b": 0.0}
    assert foreign_fraction(torch.tensor([0, 1]), [0]) == 1.0


def test_the_rich_table_of_scores():
    """The same rows as the text table: a left-aligned class column, right-aligned percentage
    columns, the pixel count in the title, bold summary rows after a section line."""
    from leanseg.metrics.semantic import format_scores

    scores = _two_class_metric(boundary_width=None).compute()
    table = format_scores(scores, ["road", "car", "sky"])
    assert table.title == "Segmentation scores (4 pixels)"
    assert [column.header for column in table.columns] == ["class", "IoU %", "accuracy %"]
    assert [column.justify for column in table.columns] == ["left", "right", "right"]
    cells = [[str(cell) for cell in column._cells] for column in table.columns]
    assert cells == [
        ["road", "car", "sky", "mean", "pixel accuracy"],
        ["50.0", "66.7", "-", "58.3", ""],
        ["100.0", "66.7", "-", "83.3", "75.0"],
    ]
    assert [row.style for row in table.rows] == [None, None, None, "bold", "bold"]
    assert [row.end_section for row in table.rows] == [False, False, True, False, False]


def test_text_table_keeps_its_columns_for_a_blank_class_name():
    text = scores_to_text(_two_class_metric(boundary_width=None).compute(), ["", "car", "sky"])
    assert text.splitlines()[2] == " " * 14 + "   50.0       100.0"
