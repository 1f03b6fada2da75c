"""Class-weighted cross-entropy (ladder head) and median-frequency weights (``data weights``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from leanseg.cli import main
from leanseg.data.class_weights import median_frequency_weights
from leanseg.models import build_model, load_run_config
from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.heads.ladder import LadderHead
from leanseg.nn.losses import cross_entropy


def test_weighted_cross_entropy_is_torch_weighted_mean():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 6)
    label = torch.randint(0, 3, (2, 5, 6))
    label[0, :2] = 255
    weights = torch.tensor([0.5, 2.0, 3.0])
    expected = F.cross_entropy(scores, label, weight=weights, ignore_index=255)
    assert torch.allclose(cross_entropy(scores, label, class_weights=weights), expected)
    assert torch.allclose(
        cross_entropy(scores, label, class_weights=torch.ones(3)), cross_entropy(scores, label)
    )


def test_weighted_cross_entropy_of_an_all_ignored_batch_is_zero():
    scores = torch.randn(1, 3, 4, 4, requires_grad=True)
    label = torch.full((1, 4, 4), 255)
    loss = cross_entropy(scores, label, class_weights=torch.tensor([1.0, 2.0, 3.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(scores.grad).all()


def test_a_heavier_class_pulls_harder():
    """Raising a class's weight raises the gradient on the pixels of that class."""
    torch.manual_seed(1)
    scores = torch.randn(1, 2, 4, 4)
    label = torch.randint(0, 2, (1, 4, 4))
    grads = []
    for weights in (torch.tensor([1.0, 1.0]), torch.tensor([1.0, 4.0])):
        s = scores.clone().requires_grad_(True)
        cross_entropy(s, label, class_weights=weights).backward()
        grads.append(s.grad.abs().sum(1)[label == 1].sum() / s.grad.abs().sum())
    assert grads[1] > grads[0]


def _ladder(**kwargs):
    info = [FeatureInfo(name=f"s{s}", stride=s, channels=8) for s in (4, 8, 16, 32)]
    return LadderHead(feature_info=info, num_classes=3, channels=8, **kwargs)


def test_ladder_rejects_bad_class_weights():
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        _ladder(class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        _ladder(class_weights=[1.0, 0.0, 2.0])


def test_ladder_class_weights_change_its_loss_and_not_its_state_dict():
    torch.manual_seed(0)
    plain, weighted = _ladder(), _ladder(class_weights=[1.0, 5.0, 0.2])
    weighted.load_state_dict(plain.state_dict())  # the weights are config, not state
    features = {s: torch.randn(2, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)}
    label = torch.randint(0, 3, (2, 64, 64))
    a = plain.losses(features, {"label": label}, (64, 64))["loss_ce"]
    b = weighted.losses(features, {"label": label}, (64, 64))["loss_ce"]
    assert not torch.allclose(a, b)


def test_class_weights_from_a_config_reach_the_head(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "backbone": {"name": "resnet18"},
                    "head": {"name": "ladder", "channels": 16, "class_weights": [1, 2, 3]},
                },
                "data": {"dataset": "folder", "root": str(tmp_path), "classes": ["a", "b", "c"]},
            }
        )
    )
    model = build_model(load_run_config(config))
    assert model.head.class_weights.tolist() == [1.0, 2.0, 3.0]


def test_median_frequency_weights_by_hand():
    # frequencies 0.5, 0.25, 0.25 -> median 0.25 -> weights 0.5, 1, 1
    assert median_frequency_weights([200, 100, 100]) == [0.5, 1.0, 1.0]
    assert median_frequency_weights([200, 100, 100], power=0.0) == [1.0, 1.0, 1.0]
    assert median_frequency_weights([300, 0, 100], power=1.0) == [0.67, 1.0, 2.0]


def test_median_frequency_weights_refuse_an_empty_split():
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights([0, 0, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30))
def test_rarer_classes_never_weigh_less(counts):
    if sum(counts) == 0:
        return
    weights = median_frequency_weights(counts, power=0.5, decimals=6)
    assert all(w > 0 for w in weights)
    present = [(c, w) for c, w in zip(counts, weights, strict=True) if c > 0]
    for (c1, w1), (c2, w2) in zip(sorted(present), sorted(present)[1:], strict=False):
        assert c1 <= c2 and w1 >= w2 - 1e-6


def test_data_weights_command(tmp_path, capsys):
    root = tmp_path / "folder"
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    label = np.zeros((8, 8), np.uint8)
    label[:, 4:6] = 1  # a: 32 pixels, b: 16, c: 0
    label[:, 6:] = 255
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images/train/x.png")
    Image.fromarray(label).save(root / "labels/train/x.png")
    config = tmp_path / "folder.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"dataset": "folder", "root": str(root), "classes": ["a", "b", "c"]}}
        )
    )
    assert main(["data", "weights", str(config), "--split", "train"]) == 0
    # frequencies 2/3 and 1/3, median 1/2 -> 0.75, 1.5; c has no pixel -> 1
    assert "model.head.class_weights: [0.75, 1.5, 1]" in capsys.readouterr().out
    assert main(["data", "weights", str(config), "--power", "-1"]) == 2
    assert "--power" in capsys.readouterr().err
