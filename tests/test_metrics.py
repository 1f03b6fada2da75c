"""Unit and property tests of the confusion-matrix metrics and the boundary band."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
from io import StringIO

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from leanseg.metrics.semantic import (
    SegmentationMetric,
    SegmentationScores,
    boundary_band,
    format_scores,
    scores_to_text,
)


def two_regions(height: int, width: int, split: int) -> torch.Tensor:
    """Class 0 left of column ``split``, class 1 from it on."""
    target = torch.zeros(height, width, dtype=torch.long)
    target[:, split:] = 1
    return target


def test_perfect_prediction_scores_one() -> None:
    target = torch.randint(0, 4, (2, 9, 11), generator=torch.Generator().manual_seed(0))
    metric = SegmentationMetric(num_classes=4)
    metric.update(target.clone(), target)
    scores = metric.compute()
    assert scores.miou == 1.0
    assert scores.pixel_accuracy == 1.0
    assert scores.mean_class_accuracy == 1.0
    assert scores.boundary_miou == 1.0
    assert scores.num_pixels == target.numel()


def test_two_class_exact_values() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    metric = SegmentationMetric(num_classes=2, boundary_width=None)
    metric.update(pred, target)
    scores = metric.compute()
    # rows = ground truth, columns = prediction
    assert scores.confusion == [[1, 1], [0, 2]]
    assert scores.iou == pytest.approx([1 / 2, 2 / 3])
    assert scores.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores.pixel_accuracy == pytest.approx(3 / 4)
    assert scores.class_accuracy == pytest.approx([1 / 2, 1.0])
    assert scores.mean_class_accuracy == pytest.approx(3 / 4)
    assert scores.boundary_miou is None
    assert scores.boundary_iou is None


def test_ignore_pixels_are_excluded() -> None:
    target = torch.tensor([[0, 255, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 0]])  # wrong only where ignored
    metric = SegmentationMetric(num_classes=2, ignore_index=255)
    metric.update(pred, target)
    scores = metric.compute()
    assert scores.num_pixels == 2
    assert scores.miou == 1.0
    assert scores.confusion == [[1, 0], [0, 1]]


def test_absent_classes_are_nan_and_skipped_by_mean() -> None:
    target = torch.tensor([[0, 0, 2, 2]])
    pred = torch.tensor([[0, 0, 2, 3]])  # class 1 absent everywhere; class 3 only predicted
    metric = SegmentationMetric(num_classes=4)
    metric.update(pred, target)
    scores = metric.compute()
    assert math.isnan(scores.iou[1])
    assert scores.iou[0] == 1.0
    assert scores.iou[2] == pytest.approx(1 / 2)
    assert scores.iou[3] == 0.0  # predicted but absent from the ground truth: counts as 0
    assert scores.miou == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert math.isnan(scores.class_accuracy[1]) and math.isnan(scores.class_accuracy[3])
    assert scores.mean_class_accuracy == pytest.approx((1.0 + 0.5) / 2)
    as_dict = scores.to_dict()
    assert as_dict["iou"][1] is None
    json.dumps(as_dict, allow_nan=False)


def test_empty_metric_is_nan() -> None:
    scores = SegmentationMetric(num_classes=3).compute()
    assert math.isnan(scores.miou) and math.isnan(scores.pixel_accuracy)
    assert scores.num_pixels == 0


@pytest.mark.parametrize("width", [0, 1, 3])
def test_boundary_band_has_expected_width(width: int) -> None:
    height, cols, split = 20, 30, 15
    target = two_regions(height, cols, split)
    band = boundary_band(target, width)
    # Both columns next to the edge are boundary pixels; each is dilated by ``width``.
    expected = torch.zeros_like(band)
    expected[:, split - 1 - width : split + 1 + width] = True
    assert torch.equal(band, expected)
    assert int(band.sum()) == height * 2 * (width + 1)

    metric = SegmentationMetric(num_classes=2, boundary_width=width)
    metric.update(target, target)
    assert metric.compute().boundary_num_pixels == height * 2 * (width + 1)


def test_boundary_band_uses_8_neighbourhood_and_batches() -> None:
    target = torch.zeros(3, 7, 7, dtype=torch.long)
    target[0, 3, 3] = 1  # a single pixel: its 3x3 neighbourhood are boundary pixels
    target[1, 0, 3] = 1  # on the top border: the neighbourhood is cut by the image edge,
    # not continued into the image above it in the batch; the third image has no boundary.
    band = boundary_band(target, 0)
    expected = torch.zeros_like(band)
    expected[0, 2:5, 2:5] = True
    expected[1, 0:2, 2:5] = True
    assert torch.equal(band, expected)
    assert torch.equal(boundary_band(target[1], 0), expected[1])  # each image on its own


def test_ignore_creates_no_boundary() -> None:
    target = torch.zeros(6, 10, dtype=torch.long)
    target[:, 5:] = 255
    assert not boundary_band(target, 2).any()
    # A class edge (columns 4 | 5) below two ignored rows: the band stops at the ignore pixels.
    target = two_regions(6, 10, 5)
    target[:2] = 255
    band = boundary_band(target, 1)
    expected = torch.zeros_like(band)
    expected[2:, 3:7] = True
    assert torch.equal(band, expected)


def test_wrong_far_from_boundary_keeps_boundary_iou() -> None:
    width = 2
    target = two_regions(16, 40, 20)
    pred = target.clone()
    pred[:, :5] = 1  # wrong, but at least 14 pixels away from the edge
    metric = SegmentationMetric(num_classes=2, boundary_width=width)
    metric.update(pred, target)
    scores = metric.compute()
    assert scores.boundary_miou == 1.0
    assert scores.boundary_iou == [1.0, 1.0]
    assert scores.miou < 1.0
    assert scores.iou[0] == pytest.approx(15 / 20)
    assert scores.iou[1] == pytest.approx(20 / 25)


def test_accumulation_equals_one_big_update() -> None:
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 3, (4, 12, 10), generator=generator)
    targets[torch.rand(targets.shape, generator=generator) < 0.2] = 255
    preds = torch.randint(0, 3, (4, 12, 10), generator=generator)
    batched = SegmentationMetric(num_classes=3, boundary_width=1)
    for index in range(4):
        batched.update(preds[index], targets[index])
    whole = SegmentationMetric(num_classes=3, boundary_width=1)
    whole.update(preds, targets)
    assert torch.equal(batched.confusion, whole.confusion)
    assert torch.equal(batched.boundary_confusion, whole.boundary_confusion)
    assert _same_scores(batched.compute(), whole.compute())


def _same_scores(a: SegmentationScores, b: SegmentationScores) -> bool:
    return json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_merge_and_reset() -> None:
    generator = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 4, (2, 8, 8), generator=generator)
    preds = torch.randint(0, 4, (2, 8, 8), generator=generator)
    first, second, whole = (SegmentationMetric(num_classes=4) for _ in range(3))
    first.update(preds[0], targets[0])
    second.update(preds[1], targets[1])
    whole.update(preds, targets)
    assert first.merge(second) is first
    assert _same_scores(first.compute(), whole.compute())
    first.reset()
    assert first.compute().num_pixels == 0
    assert int(first.boundary_confusion.sum()) == 0
    with pytest.raises(ValueError, match="different settings"):
        first.merge(SegmentationMetric(num_classes=5))


def test_reduce_is_noop_without_distributed() -> None:
    metric = SegmentationMetric(num_classes=2)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    before = metric.confusion.clone()
    metric.reduce_across_processes()
    assert torch.equal(metric.confusion, before)


def _reduce_worker(rank: int, world_size: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    metric = SegmentationMetric(num_classes=2, boundary_width=1)
    # rank 0 sees one correct pixel of class 0, rank 1 one wrong pixel of class 1
    metric.update(torch.tensor([[rank]]), torch.tensor([[0]]))
    metric.reduce_across_processes()
    queue.put((rank, metric.confusion.tolist()))
    dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available() or os.name != "posix", reason="needs gloo")
def test_reduce_sums_over_gloo_processes() -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        init_file = os.path.join(folder, "init")
        workers = [
            context.Process(target=_reduce_worker, args=(rank, 2, init_file, queue))
            for rank in range(2)
        ]
        for worker in workers:
            worker.start()
        results = dict(queue.get(timeout=60) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
    assert results[0] == results[1] == [[1, 1], [0, 0]]


def test_update_validates_inputs() -> None:
    metric = SegmentationMetric(num_classes=2)
    with pytest.raises(ValueError, match="shapes differ"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target labels"):
        metric.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="predicted labels"):
        metric.update(torch.tensor([[0, 2]]), torch.zeros(1, 2, dtype=torch.long))


def test_tables() -> None:
    metric = SegmentationMetric(num_classes=3, boundary_width=1)
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
    scores = metric.compute()
    names = ["road", "car", "sky"]
    text = scores_to_text(scores, names)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["class", "IoU"]
    assert any(line.startswith("sky") and line.split()[1] == "-" for line in lines)
    assert any(line.startswith("mean") for line in lines)
    console = Console(file=StringIO(), width=120)
    console.print(format_scores(scores, names))
    rendered = console.file.getvalue()
    assert "boundary IoU" in rendered and "car" in rendered
    with pytest.raises(ValueError, match="class names"):
        scores_to_text(scores, ["a"])


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    num_classes=st.integers(1, 5),
    boundary_width=st.one_of(st.none(), st.integers(0, 3)),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_labels_properties(
    height: int, width: int, num_classes: int, boundary_width: int | None, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (2, height, width), generator=generator)
    ignored = torch.rand(target.shape, generator=generator) < 0.2
    target[ignored] = 255
    pred = torch.randint(0, num_classes, target.shape, generator=generator)
    metric = SegmentationMetric(num_classes=num_classes, boundary_width=boundary_width)
    metric.update(pred, target)
    scores = metric.compute()

    valid = target != 255
    assert scores.num_pixels == int(valid.sum())
    for value in [*scores.iou, scores.miou, *(scores.boundary_iou or [])]:
        assert math.isnan(value) or 0.0 <= value <= 1.0
    if valid.any():
        expected = float((pred == target)[valid].double().mean())
        assert scores.pixel_accuracy == pytest.approx(expected)
    else:
        assert math.isnan(scores.pixel_accuracy)
    if boundary_width is not None:
        assert scores.boundary_num_pixels <= scores.num_pixels
