"""``model.hard_pixel_fraction``: the dense cross-entropy over the hardest labelled pixels only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.config import ConfigError
from leanseg.models import build_model, load_run_config
from leanseg.nn.losses import cross_entropy, hardest_pixels_mean


def _batch(seed: int = 0, ignored_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, 4, 6, 7, generator=generator)
    label = torch.randint(0, 4, (2, 6, 7), generator=generator)
    label[0, :ignored_rows] = 255
    return scores, label


def test_fraction_one_is_the_plain_mean():
    scores, label = _batch()
    assert torch.allclose(
        cross_entropy(scores, label, hard_pixel_fraction=1.0), cross_entropy(scores, label)
    )


@settings(max_examples=40, deadline=None)
@given(
    fraction=st.floats(min_value=0.01, max_value=1.0),
    seed=st.integers(min_value=0, max_value=1000),
    ignored_rows=st.integers(min_value=0, max_value=6),
)
def test_loss_is_the_mean_of_the_largest_labelled_losses(fraction, seed, ignored_rows):
    """Against an independent sort in NumPy: ceil(fraction * N) of the N labelled pixels."""
    scores, label = _batch(seed, ignored_rows)
    per_pixel = F.cross_entropy(scores, label, ignore_index=255, reduction="none").numpy()
    labelled = np.sort(per_pixel[label.numpy() != 255])[::-1]
    count = math.ceil(fraction * labelled.size)
    expected = labelled[:count].mean()
    got = cross_entropy(scores, label, hard_pixel_fraction=fraction).item()
    assert got == pytest.approx(float(expected), rel=1e-5)


def test_only_the_hard_pixels_get_a_gradient():
    scores, label = _batch(3, ignored_rows=0)
    scores.requires_grad_(True)
    cross_entropy(scores, label, hard_pixel_fraction=0.25).backward()
    per_pixel = F.cross_entropy(scores.detach(), label, reduction="none")
    trained = scores.grad.abs().sum(1) > 0
    assert trained.sum().item() == math.ceil(0.25 * label.numel())
    # Every trained pixel's loss is at least every untrained pixel's loss.
    assert per_pixel[trained].min() >= per_pixel[~trained].max()


def test_an_ignored_pixel_is_never_chosen_however_wrong():
    scores, label = _batch(4)
    label[1, 0, 0] = 255
    scores[1, :, 0, 0] = torch.tensor([-50.0, 50.0, -50.0, -50.0])  # confident, would be wrong
    scores.requires_grad_(True)
    cross_entropy(scores, label, hard_pixel_fraction=0.05).backward()
    assert scores.grad[1, :, 0, 0].abs().sum() == 0
    assert scores.grad[0, :, :2].abs().sum() == 0


def test_class_weights_weigh_the_losses_before_the_choice():
    scores, label = _batch(5, ignored_rows=0)
    weights = torch.tensor([1.0, 1.0, 1.0, 1e3])
    scores.requires_grad_(True)
    cross_entropy(scores, label, class_weights=weights, hard_pixel_fraction=0.1).backward()
    trained = scores.grad.abs().sum(1) > 0
    assert (label[trained] == 3).all()


def test_an_all_ignored_batch_gives_zero_with_a_gradient_path():
    scores = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = hardest_pixels_mean(scores.sum(1), torch.zeros(1, 4, 4, dtype=torch.bool), 0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match="hard_pixel_fraction"):
        hardest_pixels_mean(torch.ones(4), torch.ones(4, dtype=torch.bool), fraction)


def _config(head: str, *extra: str):
    overrides = [
        "data.dataset=synthetic",
        f"model.head.name={head}",
        "model.backbone.name=resnet18",
        *extra,
    ]
    return load_run_config(None, overrides)


def test_the_config_key_reaches_the_head_and_changes_its_loss():
    plain = build_model(_config("bilinear"))
    hard = build_model(_config("bilinear", "model.hard_pixel_fraction=0.2"))
    assert plain.head.hard_pixel_fraction is None and hard.head.hard_pixel_fraction == 0.2
    scores, label = _batch(6)
    assert hard.head.dense_loss(scores, label) > plain.head.dense_loss(scores, label)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_an_out_of_range_fraction_names_the_key(value):
    with pytest.raises(ConfigError, match=r"model\.hard_pixel_fraction: must be in \(0, 1\]"):
        _config("bilinear", f"model.hard_pixel_fraction={value}")


def test_a_head_with_its_own_loss_refuses_it():
    with pytest.raises(ConfigError, match=r"model\.hard_pixel_fraction: head 'qgn' computes"):
        build_model(_config("qgn", "model.hard_pixel_fraction=0.2"))


def test_class_balancing_and_hard_pixels_are_not_combined():
    cfg = _config("bilinear", "model.hard_pixel_fraction=0.2", "model.class_balancing=true")
    with pytest.raises(ConfigError, match="not combined with model.class_balancing"):
        build_model(cfg)
