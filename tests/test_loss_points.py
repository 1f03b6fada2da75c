"""``model.loss_points``: the dense cross-entropy at random pixels, scores interpolated there."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.config import ConfigError
from leanseg.models import build_model, load_run_config
from leanseg.nn import pixel_sampling
from leanseg.nn.pixel_sampling import labels_at_pixels, random_pixels, scores_at_pixels


@settings(max_examples=30, deadline=None)
@given(
    coarse_size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    image_size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 1000),
)
def test_sampled_scores_are_the_upsampled_scores_at_those_pixels(coarse_size, image_size, seed):
    """Every pixel of the image, any ratio of sizes (smaller, equal, larger, not integer)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, *coarse_size, generator=generator)
    height, width = image_size
    upsampled = F.interpolate(coarse, size=image_size, mode="bilinear", align_corners=False)
    every_pixel = torch.arange(height * width).expand(2, -1)
    sampled = scores_at_pixels(coarse, every_pixel, image_size)
    assert sampled.shape == (2, 3, height * width, 1)
    torch.testing.assert_close(sampled.reshape(2, 3, height, width), upsampled)


def test_pixels_in_any_order_read_their_own_row_and_column():
    coarse = torch.randn(1, 2, 3, 4)
    upsampled = F.interpolate(coarse, size=(12, 16), mode="bilinear", align_corners=False)
    pixels = torch.tensor([[16 * 11 + 15, 0, 16 * 5 + 2, 16 * 5 + 2]])  # last, first, (5, 2) twice
    sampled = scores_at_pixels(coarse, pixels, (12, 16))[0, :, :, 0]
    expected = torch.stack(
        [
            upsampled[0, :, 11, 15],
            upsampled[0, :, 0, 0],
            upsampled[0, :, 5, 2],
            upsampled[0, :, 5, 2],
        ],
        dim=1,
    )
    torch.testing.assert_close(sampled, expected)


def test_labels_at_pixels_read_each_image_at_its_own_pixels():
    label = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    pixels = torch.tensor([[0, 5, 11], [11, 5, 0]])
    assert labels_at_pixels(label, pixels).tolist() == [[[0], [5], [11]], [[23], [17], [12]]]


def test_random_pixels_cover_the_image_and_repeat_with_the_seed():
    torch.manual_seed(3)
    first = random_pixels(4, (5, 7), 2000)
    torch.manual_seed(3)
    again = random_pixels(4, (5, 7), 2000)
    assert first.shape == (4, 2000) and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 34
    assert set(first.flatten().tolist()) == set(range(35))  # 8000 draws of 35 pixels
    assert not torch.equal(first[0], first[1])  # drawn per image


def test_a_count_below_one_is_refused():
    with pytest.raises(ValueError, match="count must be a positive"):
        random_pixels(1, (4, 4), 0)


def _config(head: str, *extra: str):
    overrides = [
        "data.dataset=synthetic",
        f"model.head.name={head}",
        "model.backbone.name=resnet18",
        "model.backbone.pretrained=null",
        *extra,
    ]
    return load_run_config(None, overrides)


def _features_and_label(model: torch.nn.Module, size=(32, 48)):
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, *size, generator=generator)
    label = torch.randint(0, 4, (2, *size), generator=generator)
    label[0, :5] = 255
    with torch.no_grad():
        features = model.backbone(image)
    return features, label


@pytest.mark.parametrize("head", ["ladder", "bilinear", "nrd", "deeplabv3plus"])
def test_the_loss_at_every_pixel_equals_the_full_loss(head, monkeypatch):
    """With the sampler made to return every pixel once, the sampled loss and its gradients are
    the full-resolution loss's: the sampling changes which pixels count, nothing else."""
    cfg = _config(head, "model.loss_points=1")
    sampled_model = build_model(cfg)
    full_model = build_model(_config(head))
    full_model.load_state_dict(sampled_model.state_dict())
    sampled_model.eval(), full_model.eval()  # no dropout, fixed BatchNorm statistics
    assert sampled_model.head.loss_points == 1 and full_model.head.loss_points is None
    features, label = _features_and_label(sampled_model)
    size = tuple(label.shape[-2:])
    every = torch.arange(size[0] * size[1]).expand(label.shape[0], -1)
    monkeypatch.setattr(
        "leanseg.nn.heads.base.random_pixels", lambda batch, image_size, count, device: every
    )
    targets = {"label": label}
    sampled = sampled_model.head.losses(features, targets, size)["loss_ce"]
    full = full_model.head.losses(features, targets, size)["loss_ce"]
    torch.testing.assert_close(sampled, full)
    sampled.backward(), full.backward()
    for (name, a), b in zip(
        sampled_model.head.named_parameters(), full_model.head.parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, msg=name, rtol=1e-4, atol=1e-6)


def test_the_loss_is_computed_at_the_sampled_pixels_only():
    model = build_model(_config("ladder", "model.loss_points=50"))
    features, label = _features_and_label(model)
    torch.manual_seed(0)
    loss = model.head.losses(features, {"label": label}, tuple(label.shape[-2:]))["loss_ce"]
    torch.manual_seed(0)
    pixels = random_pixels(2, tuple(label.shape[-2:]), 50)
    coarse = model.head.coarse_scores(features)
    expected = F.cross_entropy(
        pixel_sampling.scores_at_pixels(coarse, pixels, tuple(label.shape[-2:])),
        labels_at_pixels(label, pixels),
        weight=model.head.class_weights,
        ignore_index=255,
    )
    torch.testing.assert_close(loss, expected)


def test_as_many_points_as_pixels_is_the_full_loss():
    full = build_model(_config("ladder"))
    many = build_model(_config("ladder", "model.loss_points=100000"))
    many.load_state_dict(full.state_dict())
    features, label = _features_and_label(full)
    targets, size = {"label": label}, tuple(label.shape[-2:])
    assert torch.equal(
        many.head.losses(features, targets, size)["loss_ce"],
        full.head.losses(features, targets, size)["loss_ce"],
    )


def test_forward_is_unchanged_by_the_option():
    plain = build_model(_config("ladder"))
    sampled = build_model(_config("ladder", "model.loss_points=64"))
    sampled.load_state_dict(plain.state_dict())
    plain.eval(), sampled.eval()
    image = torch.randn(1, 3, 32, 48)
    assert torch.equal(plain(image), sampled(image))


@pytest.mark.parametrize("value", ["0", "-5", "2.5", "true"])
def test_a_value_that_is_not_a_positive_count_names_the_key(value):
    with pytest.raises(ConfigError, match=r"model\.loss_points"):
        _config("ladder", f"model.loss_points={value}")


@pytest.mark.parametrize("head", ["qgn", "ldn"])
def test_a_head_without_coarse_scores_refuses_it_and_names_those_that_take_it(head):
    with pytest.raises(ConfigError, match=r"model\.loss_points: head .* applies to .*ladder"):
        build_model(_config(head, "model.loss_points=64"))
