"""Joint transforms: shapes, padding, flip consistency, disparity scaling, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.config import DataConfig
from leanseg.data.transforms import (
    CROP_DRAWS,
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    RandomScaleCrop,
    ToTensor,
    build_eval_transform,
    build_train_transform,
    largest_class_share,
    mean_colour,
    resize_nearest,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _sample(h: int = 12, w: int = 20, seed: int = 0) -> dict:
    """A sample whose maps all encode the pixel column, so alignment can be checked."""
    rng = np.random.default_rng(seed)
    cols = np.broadcast_to(np.arange(w), (h, w))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[..., 0] = cols
    return {
        "image": image,
        "label": (cols % 5).astype(np.uint8),
        "instance": (cols.astype(np.int32) + 1000),
        "disparity": np.full((h, w), 8.0, dtype=np.float32),
        "name": "s",
    }


def test_random_scale_shapes_and_disparity() -> None:
    sample = _sample(h=10, w=20)
    sample["disparity"][:, :4] = 0  # unknown stays unknown
    torch.manual_seed(0)
    out = RandomScale(1.5, 1.5)(sample)
    assert out["image"].shape == (15, 30, 3) and out["image"].dtype == np.uint8
    for key in ("label", "instance", "disparity"):
        assert out[key].shape == (15, 30) and out[key].dtype == sample[key].dtype
    assert out["name"] == "s"
    assert set(np.unique(out["disparity"]).tolist()) == {0.0, 12.0}  # 8 px * 1.5
    down = RandomScale(0.5, 0.5)(sample)
    assert down["label"].shape == (5, 10)
    assert set(np.unique(down["disparity"]).tolist()) <= {0.0, 4.0}


@settings(max_examples=25, deadline=None)
@given(
    scale=st.floats(0.3, 2.5),
    seed=st.integers(0, 2**16),
    height=st.integers(3, 17),
    width=st.integers(3, 17),
)
def test_random_scale_keeps_label_values(scale: float, seed: int, height: int, width: int) -> None:
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([0, 3, 10, 255], dtype=np.uint8), (height, width))
    sample = {"image": np.zeros((height, width, 3), np.uint8), "label": label}
    out = RandomScale(scale, scale)(sample)
    assert set(np.unique(out["label"]).tolist()) <= {0, 3, 10, 255}  # nearest: no new values


def test_resize_nearest_identity_and_upsampling() -> None:
    array = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(resize_nearest(array, 3, 4), array)
    np.testing.assert_array_equal(resize_nearest(array, 6, 8)[::2, ::2], array)


def test_random_crop_pads_with_mean_colour_and_ignore() -> None:
    sample = _sample(h=4, w=6)
    torch.manual_seed(1)
    out = RandomCrop((8, 10), mean_colour=(1, 2, 3))(sample)
    assert out["image"].shape == (8, 10, 3) and out["label"].shape == (8, 10)
    pad = out["label"] == 255
    assert pad.sum() == 8 * 10 - 4 * 6
    assert (out["image"][pad] == [1, 2, 3]).all()
    assert (out["instance"][pad] == 0).all() and (out["disparity"][pad] == 0).all()
    # The original sits intact somewhere inside the crop.
    rows, cols = np.nonzero(~pad)
    r, c = rows.min(), cols.min()
    np.testing.assert_array_equal(out["image"][r : r + 4, c : c + 6], sample["image"])
    np.testing.assert_array_equal(out["instance"][r : r + 4, c : c + 6], sample["instance"])


def test_random_crop_window_inside_larger_sample() -> None:
    sample = _sample(h=12, w=20)
    out = RandomCrop(5, mean_colour=(0, 0, 0))(sample)
    assert out["image"].shape == (5, 5, 3)
    first = int(out["image"][0, 0, 0])  # column index encoded in the red channel
    np.testing.assert_array_equal(out["image"][..., 0], sample["image"][:5, first : first + 5, 0])
    np.testing.assert_array_equal(out["label"], (out["image"][..., 0] % 5))


def test_flip_keeps_maps_aligned() -> None:
    sample = _sample()
    sample["disparity"] = sample["image"][..., 0].astype(np.float32) / 4  # the column too
    out = RandomHorizontalFlip(p=1.0)(sample)
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], out["image"][..., 0] % 5)
    np.testing.assert_array_equal(out["instance"], out["image"][..., 0].astype(np.int32) + 1000)
    np.testing.assert_array_equal(out["disparity"], out["image"][..., 0].astype(np.float32) / 4)
    assert RandomHorizontalFlip(p=0.0)(sample) is sample


def test_color_jitter_changes_only_the_image() -> None:
    sample = _sample()
    torch.manual_seed(0)
    out = ColorJitter(0.5)(sample)
    assert out["image"].dtype == np.uint8 and out["image"].shape == sample["image"].shape
    assert not np.array_equal(out["image"], sample["image"])
    for key in ("label", "instance", "disparity"):
        assert out[key] is sample[key]
    assert ColorJitter(0.0)(sample) is sample


def test_to_tensor() -> None:
    sample = _sample(h=4, w=6)
    out = ToTensor(MEAN, STD)(sample)
    assert out["image"].shape == (3, 4, 6) and out["image"].dtype == torch.float32
    expected = (sample["image"][1, 2, 1] / 255.0 - MEAN[1]) / STD[1]
    assert float(out["image"][1, 1, 2]) == pytest.approx(expected, rel=1e-5)
    assert out["label"].dtype == torch.int64 and out["instance"].dtype == torch.int64
    assert out["disparity"].dtype == torch.float32
    assert out["name"] == "s"


def test_build_train_transform_shapes_and_determinism() -> None:
    cfg = DataConfig(crop_size=(16, 24), scale_range=(0.5, 2.0), color_jitter=0.3)
    transform = build_train_transform(cfg)
    assert isinstance(transform, Compose)
    sample = _sample(h=12, w=20)
    torch.manual_seed(123)
    first = [transform(sample) for _ in range(3)]
    torch.manual_seed(123)
    second = [transform(sample) for _ in range(3)]
    for a, b in zip(first, second, strict=True):
        assert a["image"].shape == (3, 16, 24) and a["label"].shape == (16, 24)
        for key in ("image", "label", "instance", "disparity"):
            assert torch.equal(a[key], b[key])
    assert not torch.equal(first[0]["image"], first[1]["image"])  # the draws differ


def test_train_transform_pads_with_dataset_mean() -> None:
    cfg = DataConfig(crop_size=(16, 16), scale_range=(1.0, 1.0), color_jitter=0.0, hflip=False)
    out = build_train_transform(cfg)(_sample(h=4, w=4))
    pad = out["label"] == 255
    mean_pixel = (torch.tensor(mean_colour(cfg)) / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out["image"][:, pad], mean_pixel[:, None].expand(3, int(pad.sum())))


def test_eval_transform_keeps_full_image() -> None:
    sample = _sample(h=7, w=9)
    out = build_eval_transform(DataConfig())(sample)
    assert out["image"].shape == (3, 7, 9) and out["label"].shape == (7, 9)
    # Every pixel where it was, only normalised (ImageNet statistics for a hand-made config).
    pixels = torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 255.0
    expected = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(out["image"], expected)
    assert torch.equal(out["label"], torch.from_numpy(sample["label"]).long())


# ---------------------------------------------------------------- crops that one class fills


def _road_and_pole(h: int = 60, w: int = 80) -> dict:
    """Class 0 everywhere but a 28-pixel-wide column of class 1, and an ignore strip on top."""
    label = np.zeros((h, w), dtype=np.uint8)
    label[:, 30:58] = 1
    label[:4] = 255
    image = np.zeros((h, w, 3), dtype=np.uint8)
    return {"image": image, "label": label, "name": "s"}


def test_largest_class_share_counts_labelled_pixels_only():
    label = np.array([[0, 0, 1, 255], [0, 2, 255, 255]], dtype=np.uint8)
    assert largest_class_share(label, 255) == pytest.approx(3 / 5)
    assert largest_class_share(np.full((3, 3), 255, np.uint8), 255) == 0.0
    assert largest_class_share(np.full((3, 3), 7, np.uint8), 255) == 1.0


@pytest.mark.parametrize("scaled", [False, True])
def test_cat_max_ratio_makes_crops_that_one_class_fills_rare(scaled):
    def transform(ratio):
        if scaled:
            return RandomScaleCrop(1.0, 1.5, (16, 16), (0, 0, 0), cat_max_ratio=ratio)
        return RandomCrop((16, 16), (0, 0, 0), cat_max_ratio=ratio)

    def dominated_share(ratio) -> float:
        shares = []
        for seed in range(200):
            torch.manual_seed(seed)
            crop = transform(ratio)(_road_and_pole())
            shares.append(largest_class_share(crop["label"], 255))
        return float(np.mean(np.array(shares) > 0.75))

    # Most random 16x16 windows fall on one side of a border; only those across one have a
    # quarter of each class, and ten draws find one most of the time.
    without = dominated_share(None)
    assert without > 0.5
    assert dominated_share(0.75) < without / 4


@pytest.mark.parametrize("ratio", [None, 1.0])
def test_cat_max_ratio_off_or_one_keeps_the_first_draw(ratio):
    sample = _sample(h=30, w=40)
    for seed in range(5):
        torch.manual_seed(seed)
        plain = RandomScaleCrop(1.0, 2.0, (8, 8), (0, 0, 0))(sample)
        after_plain = torch.rand(())
        torch.manual_seed(seed)
        option = RandomScaleCrop(1.0, 2.0, (8, 8), (0, 0, 0), cat_max_ratio=ratio)(sample)
        np.testing.assert_array_equal(plain["image"], option["image"])
        np.testing.assert_array_equal(plain["label"], option["label"])
        assert torch.rand(()) == after_plain  # no extra draw: the streams continue alike


def test_cat_max_ratio_keeps_the_last_of_ten_draws_when_none_qualifies():
    # One class everywhere, so no window qualifies; the image encodes each pixel's row and
    # column, so the window kept can be told from the others.
    rows, cols = np.mgrid[0:30, 0:40]
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    sample = {"image": image, "label": np.zeros((30, 40), np.uint8)}
    torch.manual_seed(3)
    kept = RandomCrop((8, 8), (0, 0, 0), cat_max_ratio=0.5)(sample)
    after_option = torch.rand(())
    torch.manual_seed(3)
    draws = [RandomCrop((8, 8), (0, 0, 0))(sample) for _ in range(CROP_DRAWS)]
    assert torch.rand(()) == after_option
    assert not np.array_equal(draws[0]["image"], draws[-1]["image"])
    np.testing.assert_array_equal(kept["image"], draws[-1]["image"])
    np.testing.assert_array_equal(kept["label"], draws[-1]["label"])


def test_cat_max_ratio_reaches_the_train_transform():
    transform = build_train_transform(DataConfig(crop_size=(16, 16), cat_max_ratio=0.75))
    crops = [step for step in transform.transforms if isinstance(step, RandomScaleCrop)]
    assert crops and crops[0].crop.cat_max_ratio == 0.75
