"""Tests of tiled / multi-scale inference, the Predictor and the visualisation helpers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import Tensor, nn

from leanseg import visualize
from leanseg.data.base import DatasetError
from leanseg.files.checkpoint import CheckpointError, save_checkpoint
from leanseg.inference.predictor import (
    Predictor,
    _tile_spans,
    choose_tile,
    megapixels_to_pixels,
    predict_scores,
    sliding_window_scores,
)
from leanseg.models import run_config_from_dict
from leanseg.visualize import colorize, overlay, save_label_png, save_rgb_png, side_by_side


class TinyFCN(nn.Module):
    """3x3 conv, stride-2 3x3 conv, 3x3 conv, bilinear x2 upsampling.

    Each output pixel depends on input pixels at most ~6 px away, so tiles overlapping by 16 px
    (8 px kept margin) must reproduce whole-image scores. ``global_context`` adds the global
    mean of the features, which tiling cannot reproduce.
    """

    size_divisor = 2

    def __init__(self, num_classes: int = 4, global_context: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.global_context = global_context
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        x = F.pad(images, (0, (-width) % 2, 0, (-height) % 2))  # like Segmentor: bottom/right
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        if self.global_context:
            x = x + x.mean(dim=(2, 3), keepdim=True)
        x = self.conv3(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return x[..., :height, :width]


class Pointwise(nn.Module):
    """A 1x1 conv: commutes with horizontal flips."""

    size_divisor = 1

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.conv(images)


@pytest.fixture
def tiny() -> TinyFCN:
    torch.manual_seed(0)
    return TinyFCN().eval()


def _images(*shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _record_inputs(model: nn.Module) -> list[tuple[int, int]]:
    """The ``(height, width)`` of every input ``model`` is called on from now on."""
    sizes: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    return sizes


# --- sliding windows -------------------------------------------------------------------------


@pytest.mark.parametrize(("tile", "overlap"), [((32, 48), 16), ((40, 32), 24), ((32, 32), 0.5)])
def test_tiled_scores_equal_whole_image(tiny: TinyFCN, tile, overlap) -> None:
    images = _images(2, 3, 75, 101)  # not a multiple of the tile or of the divisor
    with torch.no_grad():
        whole = tiny(images)
    tiled = sliding_window_scores(tiny, images, tile, overlap, num_classes=4)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_tiles_without_margin_differ(tiny: TinyFCN) -> None:
    # Negative control: with no overlap, pixels next to tile borders see zero padding.
    images = _images(1, 3, 75, 101)
    with torch.no_grad():
        whole = tiny(images)
    tiled = sliding_window_scores(tiny, images, (32, 32), 0)
    assert (tiled - whole).abs().max() > 1e-3


def test_global_context_is_not_reproduced_exactly_by_tiles() -> None:
    # Negative control: each tile pools over itself, so tiled scores differ from whole-image
    # ones (how close they stay depends on the image; not checked).
    torch.manual_seed(0)
    model = TinyFCN(global_context=True).eval()
    images = _images(1, 3, 75, 101)
    with torch.no_grad():
        whole = model(images)
    tiled = sliding_window_scores(model, images, (32, 48), 16)
    assert tiled.shape == whole.shape
    assert not torch.allclose(tiled, whole, atol=1e-5)


def test_image_smaller_than_tile_is_one_forward(tiny: TinyFCN) -> None:
    images = _images(1, 3, 21, 17)
    with torch.no_grad():
        whole = tiny(images)
    sizes = _record_inputs(tiny)
    torch.testing.assert_close(sliding_window_scores(tiny, images, (64, 64), 32), whole)
    assert sizes == [(21, 17)]  # one forward on the image as it is, not padded to the tile


def test_sliding_window_rejects_bad_overlap(tiny: TinyFCN) -> None:
    images = _images(1, 3, 75, 101)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_scores(tiny, images, (32, 32), 32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_scores(tiny, images, (32, 32), 1.5)
    with pytest.raises(ValueError, match="classes"):
        sliding_window_scores(tiny, images, (32, 32), 16, num_classes=7)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 400),
    size=st.integers(1, 160),
    overlap=st.integers(0, 159),
    divisor=st.sampled_from([1, 2, 8, 32]),
)
def test_tile_spans_partition_with_margins(length, size, overlap, divisor) -> None:
    rounded = max(divisor, size // divisor * divisor)
    if length > rounded and overlap > rounded - divisor:
        with pytest.raises(ValueError):
            _tile_spans(length, size, overlap, divisor)
        return
    spans = _tile_spans(length, size, overlap, divisor)
    assert spans[0].start == 0 and spans[0].keep_start == 0
    assert spans[-1].stop == length and spans[-1].keep_stop == length
    for span in spans:
        assert span.start % divisor == 0
        assert 0 < span.stop - span.start <= max(rounded, 1)
        assert span.start <= span.keep_start < span.keep_stop <= span.stop
        # Kept pixels are at least overlap // 2 from every inner tile border.
        if span.start > 0:
            assert span.keep_start - span.start >= overlap // 2
        if span.stop < length:
            assert span.stop - span.keep_stop >= overlap // 2
    for left, right in zip(spans[:-1], spans[1:], strict=True):
        assert left.keep_stop == right.keep_start  # the kept regions partition [0, length)


# --- multi-scale and flip ----------------------------------------------------------------------


def test_single_scale_is_softmax_of_forward(tiny: TinyFCN) -> None:
    images = _images(2, 3, 37, 53)
    with torch.no_grad():
        expected = tiny(images).softmax(dim=1)
    torch.testing.assert_close(predict_scores(tiny, images), expected)


def test_flip_of_flip_equivariant_model_changes_nothing() -> None:
    torch.manual_seed(0)
    model = Pointwise().eval()
    images = _images(1, 3, 19, 23)
    plain = predict_scores(model, images)
    torch.testing.assert_close(predict_scores(model, images, flip=True), plain)


def test_flip_averages_mirrored_probabilities(tiny: TinyFCN) -> None:
    images = _images(1, 3, 19, 23)
    with torch.no_grad():
        straight = tiny(images).softmax(dim=1)
        mirrored = tiny(images.flip(-1)).softmax(dim=1).flip(-1)
    torch.testing.assert_close(
        predict_scores(tiny, images, flip=True), (straight + mirrored) / 2, atol=1e-6, rtol=0
    )


def test_multi_scale_shapes_for_odd_sizes(tiny: TinyFCN) -> None:
    images = _images(2, 3, 37, 53)
    probabilities = predict_scores(tiny, images, scales=(0.5, 0.75, 1.25), flip=True)
    assert probabilities.shape == (2, 4, 37, 53)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 37, 53))


def test_tiled_multi_scale_matches_untiled(tiny: TinyFCN) -> None:
    images = _images(1, 3, 75, 101)
    plain = predict_scores(tiny, images, scales=(1.0, 1.5), flip=True)
    sizes = _record_inputs(tiny)
    tiled = predict_scores(tiny, images, scales=(1.0, 1.5), flip=True, tile=(32, 48), overlap=16)
    # Every scale and flip is tiled: no forward sees more than a tile.
    assert len(sizes) > 4 and all(h <= 32 and w <= 48 for h, w in sizes)
    sizes.clear()
    budget = predict_scores(
        tiny, images, scales=(1.0, 1.5), flip=True, max_pixels=40 * 40, overlap=16
    )
    assert len(sizes) > 4 and all(h * w <= 40 * 40 for h, w in sizes)
    torch.testing.assert_close(tiled, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(budget, plain, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="either"):
        predict_scores(tiny, images, tile=(32, 32), max_pixels=1024)


# --- tile choice -----------------------------------------------------------------------------


def test_choose_tile_none_under_budget() -> None:
    assert choose_tile(1000, 1000, 1_000_000) is None
    assert choose_tile(10_000, 10_000, None) is None


@pytest.mark.parametrize(
    ("height", "width", "budget"),
    [(3000, 4000, 4_000_000), (4000, 3000, 1_000_000), (100, 50_000, 1_000_000), (999, 33, 2048)],
)
def test_choose_tile_within_budget(height: int, width: int, budget: int) -> None:
    tile = choose_tile(height, width, budget)
    assert tile is not None
    tile_height, tile_width = tile
    assert tile_height % 32 == 0 and tile_width % 32 == 0
    assert tile_height >= 32 and tile_width >= 32
    assert tile_height * tile_width <= budget
    # Uses the budget reasonably: at least a quarter of it, or the whole (padded) image side.
    assert tile_height * tile_width >= budget // 4 or min(height, width) <= min(tile)


def test_choose_tile_rejects_tiny_budget() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        choose_tile(100, 100, 500)


def test_megapixels_to_pixels() -> None:
    assert megapixels_to_pixels(4) == 4_000_000
    assert megapixels_to_pixels(0.5) == 500_000
    assert megapixels_to_pixels(None) is None
    with pytest.raises(ValueError):
        megapixels_to_pixels(0)


# --- Predictor -------------------------------------------------------------------------------


def _rgb(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _normalise(image: np.ndarray, cfg) -> Tensor:
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data.std).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)


def test_predictor_tiled_equals_whole(tiny: TinyFCN) -> None:
    cfg = run_config_from_dict({})
    image = _rgb(75, 101)
    with torch.no_grad():
        expected = tiny(_normalise(image, cfg)).argmax(dim=1)[0].numpy()
    sizes = _record_inputs(tiny)  # the hook is copied with the model the predictors prepare
    whole_predictor = Predictor(tiny, cfg, max_pixels=None)
    tiled_predictor = Predictor(tiny, cfg, max_pixels=32 * 48, overlap=16)
    sizes.clear()  # the forwards that checked the prepared copies
    whole = whole_predictor.predict(image)
    assert sizes == [(75, 101)]
    sizes.clear()
    tiled = tiled_predictor.predict(image)
    assert len(sizes) > 1 and all(h * w <= 32 * 48 for h, w in sizes)  # really tiled
    assert whole.dtype == np.uint8 and whole.shape == (75, 101)
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(tiled, expected)


def test_predictor_reads_paths_and_pil(tiny: TinyFCN, tmp_path) -> None:
    predictor = Predictor(tiny, run_config_from_dict({}))
    image = _rgb(30, 40)
    Image.fromarray(image).save(tmp_path / "image.png")
    expected = predictor.predict(image)
    np.testing.assert_array_equal(predictor.predict(tmp_path / "image.png"), expected)
    np.testing.assert_array_equal(predictor.predict(str(tmp_path / "image.png")), expected)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(image)), expected)
    assert predictor.predict_scores(image).shape == (4, 30, 40)


def test_predictor_unreadable_image_names_file(tiny: TinyFCN, tmp_path) -> None:
    predictor = Predictor(tiny, run_config_from_dict({}))
    with pytest.raises(DatasetError, match="missing.png"):
        predictor.predict(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(DatasetError, match="broken.png"):
        predictor.predict(broken)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), np.float32))


def test_from_checkpoint_with_stand_in_builder(tiny: TinyFCN, tmp_path, monkeypatch) -> None:
    # Exercises from_checkpoint without depending on the real model zoo.
    monkeypatch.setattr("leanseg.models.build_model", lambda cfg: TinyFCN())
    cfg = run_config_from_dict({})
    path = save_checkpoint(
        {"model": tiny.state_dict(), "config": cfg.to_dict(), "iteration": 0}, tmp_path / "a.pth"
    )
    image = _rgb(33, 47)
    predictor = Predictor.from_checkpoint(path, max_pixels=None)
    assert not predictor.model.training
    np.testing.assert_array_equal(predictor.predict(image), Predictor(tiny, cfg).predict(image))

    other = TinyFCN(num_classes=5).state_dict()
    wrong = save_checkpoint({"model": other, "config": cfg.to_dict()}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="wrong.pth"):
        Predictor.from_checkpoint(wrong)


def test_checkpoint_without_config_is_not_leanseg(tiny: TinyFCN, tmp_path) -> None:
    bare = save_checkpoint(tiny.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"bare\.pth.*not a leanseg checkpoint"):
        Predictor.from_checkpoint(bare)
    with pytest.raises(CheckpointError, match="nothing.pth"):
        Predictor.from_checkpoint(tmp_path / "nothing.pth")


def _require_build_model():
    """The real builder, once ``leanseg.models`` and ``leanseg.data.dataset_classes`` exist."""
    models = pytest.importorskip("leanseg.models")
    data = importlib.import_module("leanseg.data")
    if not hasattr(data, "dataset_classes"):
        pytest.skip("leanseg.data.dataset_classes is not written yet")
    try:
        data.dataset_classes(_real_config().data)
    except ImportError as err:
        pytest.skip(f"the synthetic dataset is not written yet ({err})")
    return models


def _real_config(**backbone):
    return run_config_from_dict(
        {
            "model": {"backbone": {"name": "resnet18", **backbone}, "head": {"name": "bilinear"}},
            "data": {"dataset": "synthetic"},
        }
    )


def test_predictor_round_trip_with_real_model(tmp_path) -> None:
    models = _require_build_model()
    torch.manual_seed(0)
    cfg = _real_config()
    model = models.build_model(cfg)
    # The ImageNet file named in the config is not needed: the checkpoint holds every weight.
    stored = _real_config(pretrained=str(tmp_path / "absent-imagenet.pth")).to_dict()
    path = save_checkpoint(
        {"model": model.state_dict(), "config": stored, "iteration": 0}, tmp_path / "model.pth"
    )
    image = _rgb(70, 90)
    labels = Predictor.from_checkpoint(path).predict(image)
    model.eval()
    with torch.no_grad():
        expected = model(_normalise(image, cfg)).argmax(dim=1)[0].numpy()
    assert labels.shape == (70, 90)
    np.testing.assert_array_equal(labels, expected)
    predictor = Predictor.from_checkpoint(path)
    assert len(predictor.class_names) == len(predictor.palette) == model.num_classes


def test_predictor_of_a_model_built_in_code_takes_class_names() -> None:
    model = TinyFCN(num_classes=3)
    assert Predictor(model).class_names == ("class 0", "class 1", "class 2")
    named = Predictor(model, class_names=["road", "car", "sky"])
    assert named.class_names == ("road", "car", "sky")
    assert len(named.palette) == 3
    with pytest.raises(ValueError, match="2 class names given for a model of 3 classes"):
        Predictor(model, class_names=["road", "car"])


def test_checkpoint_of_other_class_count_names_file(tmp_path) -> None:
    models = _require_build_model()
    from leanseg.data import dataset_classes

    cfg = _real_config()
    num_classes = len(dataset_classes(cfg.data)) + 2
    other = models.build_segmentor(cfg.model, num_classes=num_classes)
    path = save_checkpoint(
        {"model": other.state_dict(), "config": cfg.to_dict()}, tmp_path / "other.pth"
    )
    with pytest.raises(CheckpointError, match="other.pth"):
        Predictor.from_checkpoint(path)


# --- visualisation ---------------------------------------------------------------------------

PALETTE = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]


def test_colorize_maps_palette_and_ignore() -> None:
    label = np.array([[0, 1], [2, 255], [7, 1]], dtype=np.uint8)
    rgb = colorize(label, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], PALETTE[0])
    np.testing.assert_array_equal(rgb[0, 1], PALETTE[1])
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[2])
    np.testing.assert_array_equal(rgb[1, 1], (0, 0, 0))  # ignore
    np.testing.assert_array_equal(rgb[2, 0], (0, 0, 0))  # outside the palette
    np.testing.assert_array_equal(colorize(label.astype(np.int64), PALETTE), rgb)


def test_overlay_blends_and_keeps_ignored() -> None:
    image = np.full((2, 2, 3), 200, np.uint8)
    label = np.array([[0, 255], [1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(overlay(image, label, PALETTE, alpha=0.0), image)
    opaque = overlay(image, label, PALETTE, alpha=1.0)
    np.testing.assert_array_equal(opaque[0, 0], PALETTE[0])
    np.testing.assert_array_equal(opaque[0, 1], (200, 200, 200))
    half = overlay(image, label, PALETTE, alpha=0.5)
    np.testing.assert_array_equal(half[1, 1], (135, 140, 145))


def test_label_png_round_trip_keeps_ids(tmp_path) -> None:
    label = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    path = save_label_png(label, tmp_path / "out" / "label.png", PALETTE)
    assert sorted(p.name for p in path.parent.iterdir()) == ["label.png"]  # no temp files
    with Image.open(path) as picture:
        assert picture.mode == "P"
        np.testing.assert_array_equal(np.asarray(picture), label)
        colors = np.array(picture.getpalette()).reshape(-1, 3)
    np.testing.assert_array_equal(colors[:3], PALETTE)
    with Image.open(save_label_png(label.astype(np.int64), tmp_path / "grey.png")) as picture:
        assert picture.mode == "L"
        np.testing.assert_array_equal(np.asarray(picture), label)
    with pytest.raises(ValueError, match="0..255"):
        save_label_png(np.array([[300]]), tmp_path / "bad.png")


def test_rgb_png_atomic(tmp_path, monkeypatch) -> None:
    image = _rgb(5, 7)
    path = save_rgb_png(image, tmp_path / "rgb.png")
    with Image.open(path) as picture:
        np.testing.assert_array_equal(np.asarray(picture), image)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(visualize, "_write_chunk", fail)  # PNGs are written chunk by chunk
    with pytest.raises(OSError, match="disk full"):
        save_rgb_png(_rgb(3, 3), tmp_path / "rgb.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.png"]  # old file kept, no temp
    with Image.open(path) as picture:
        np.testing.assert_array_equal(np.asarray(picture), image)


def test_side_by_side_panels() -> None:
    image = _rgb(4, 5)
    label = colorize(np.zeros((3, 6), np.uint8), PALETTE)
    grey = np.zeros((4, 2), np.uint8)
    panel = side_by_side([image, label, grey], gap=1)
    assert panel.shape == (4, 5 + 1 + 6 + 1 + 2, 3) and panel.dtype == np.uint8
    np.testing.assert_array_equal(panel[:, :5], image)
    np.testing.assert_array_equal(panel[3, 6:12], np.full((6, 3), 255))  # padded bottom row
    assert side_by_side([image]).shape == (4, 5, 3)
