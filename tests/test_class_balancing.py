"""``model.class_balancing``: thesis §3.4's loss weighting for every dense-score head."""

from __future__ import annotations

import pytest
import torch

from leanseg.config import ConfigError, ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.losses import class_balanced_cross_entropy, cross_entropy

DENSE_HEADS = ["bilinear", "deeplabv3plus", "nrd", "erfnet_decoder", "ladder", "igum", "gum"]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=generator)
    label = torch.zeros(2, 64, 96, dtype=torch.long)
    label[:, :4, :6] = 3  # a rare class: its pixels weigh far more when balanced
    label[:, 10:, :] = 1
    label[0, 0, 0] = 255
    return images, label


@pytest.mark.parametrize("head", DENSE_HEADS)
def test_balanced_loss_is_the_weighted_cross_entropy_of_the_scores(head: str) -> None:
    images, label = _batch()
    losses = {}
    for balancing in (False, True):
        torch.manual_seed(0)
        model = build_segmentor(
            ModelConfig(
                backbone={"name": "resnet18"}, head={"name": head}, class_balancing=balancing
            ),
            num_classes=5,
        ).train()
        torch.manual_seed(1)
        losses[balancing] = model.losses(images, {"label": label})["loss_ce"]
        # The same scores, through the loss functions directly (igum's training scores are
        # its bilinear guided upsampling, which forward in training mode also gives).
        torch.manual_seed(1)
        loss_fn = class_balanced_cross_entropy if balancing else cross_entropy
        expected = loss_fn(model(images), label, 255)
        assert torch.allclose(losses[balancing], expected, rtol=1e-4, atol=1e-5), head
    assert not torch.allclose(losses[False], losses[True])


@pytest.mark.parametrize(
    ("backbone", "head", "message"),
    [
        (
            {"name": "resnet18", "stem_features": True},
            {"name": "qgn"},
            r"model.class_balancing: head 'qgn' computes its own",
        ),
        (
            {"name": "resnet18"},
            {"name": "ladder", "class_weights": [1.0] * 5},
            "class_weights; both weigh the classes",
        ),
        (
            {"name": "resnet18"},
            {"name": "single5", "hidden_channels": 8},
            "set model.head.class_balancing instead",
        ),
    ],
)
def test_heads_with_their_own_loss_or_weights_are_refused(
    backbone: dict, head: dict, message: str
) -> None:
    cfg = ModelConfig(backbone=backbone, head=head, class_balancing=True)
    with pytest.raises(ConfigError, match=message):
        build_segmentor(cfg, num_classes=5)
