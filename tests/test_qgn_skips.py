"""QGN's encoder skips are normalised, so no level's logits depend on the encoder's scale."""

from __future__ import annotations

import torch

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor

SMALL = {
    "name": "qgn",
    "in_channels": 32,
    "decoder_channels": [16, 16, 8, 8, 8],
    "decoder_units": [1, 1, 1, 1, 1],
    "train_scheme": "all",
}


def test_level_logits_do_not_grow_with_the_scale_of_encoder_features():
    """Scaling every encoder feature by 10 leaves every level's logits as they were (training
    mode: each skip and the projection end in a BatchNorm). Lite0's linear-bottleneck features,
    added unnormalised, made the finer levels' initial logits grow level by level (issue 26's
    QGN bug hunt)."""
    torch.manual_seed(0)
    backbone = {"name": "resnet18", "stem_features": True}
    model = build_segmentor(ModelConfig(backbone=backbone, head=SMALL), num_classes=3).double()
    model.train()
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    features = model.features(images)
    scaled = {stride: 10 * feature for stride, feature in features.items()}
    plain = model.head.predict_quadtree(features, (64, 96), scheme="all", dense_scores=False)
    loud = model.head.predict_quadtree(scaled, (64, 96), scheme="all", dense_scores=False)
    assert set(plain.logits) == set(range(6))
    for level, sites in plain.logits.items():
        torch.testing.assert_close(
            loud.logits[level].features, sites.features, atol=2e-3, rtol=2e-3
        )
