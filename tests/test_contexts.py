"""Context modules are parts: every head works with every context, and with none.

Each context maps the backbone's pyramid to a pyramid and declares it (``feature_info``); a head
only reads that declaration, so any pair composes. Widths are kept small so the grid stays fast.
"""

import pytest
import torch

from leanseg.config import ModelConfig
from leanseg.models import BACKBONES, CONTEXTS, HEADS, build_segmentor
from leanseg.nn.context.base import ContextFeatures
from leanseg.nn.heads.ldn import LDNHead

# Small widths per context (the defaults are the papers' and cost more than the test needs).
SMALL_CONTEXTS = {
    "spp": {"bottleneck_channels": 64, "level_channels": 16, "out_channels": 32},
    "psp_spp": {"out_channels": 32},
    "conv": {"bottleneck_channels": 64, "out_channels": 32},
    "aspp": {"out_channels": 32},
}


def test_small_options_cover_every_registered_context():
    assert set(SMALL_CONTEXTS) == set(CONTEXTS)


def _context(name: str | None) -> dict | None:
    return None if name is None else {"name": name, **SMALL_CONTEXTS[name]}


@pytest.mark.parametrize("context", [None, *sorted(CONTEXTS)])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_with_every_context_on_odd_sizes(head, context):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone={"name": "resnet18"}, context=_context(context), head={"name": head})
    model = build_segmentor(cfg, num_classes=5)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 5, 37, 53)
    model.train()
    label = torch.randint(0, 5, (2, 45, 61))
    label[0, :5] = 255
    losses = model.losses(torch.randn(2, 3, 45, 61), {"label": label})
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_context_declares_what_it_returns(context):
    backbone = BACKBONES["resnet18"]()
    module = CONTEXTS[context](feature_info=backbone.feature_info, **SMALL_CONTEXTS[context])
    features = backbone(torch.randn(2, 3, 64, 96))
    out = module(features)
    assert isinstance(out, ContextFeatures)
    assert list(out) == [info.stride for info in module.feature_info] == list(features)
    for info in module.feature_info:
        assert out[info.stride].shape == (2, info.channels, 64 // info.stride, 96 // info.stride)
        if info.stride != module.in_stride:
            assert out[info.stride] is features[info.stride]  # other strides pass through
    assert [p.shape[1] for p in out.pooled] == list(module.pooled_channels)


def test_in_stride_picks_the_map_a_context_reworks():
    backbone = BACKBONES["resnet18"]()
    aspp = CONTEXTS["aspp"](feature_info=backbone.feature_info, in_stride=16, out_channels=8)
    assert [info.channels for info in aspp.feature_info] == [64, 128, 8, 512]
    with pytest.raises(ValueError, match=r"in_stride 64 not among features \[4, 8, 16, 32\]"):
        CONTEXTS["spp"](feature_info=backbone.feature_info, in_stride=64)


def test_ldn_ladder_loss_gets_one_auxiliary_classifier_per_pooled_grid():
    cfg = ModelConfig(backbone={"name": "resnet18"}, context=_context("spp"), head={"name": "ldn"})
    model = build_segmentor(cfg, num_classes=3)
    assert model.head.pooled_channels == (16,) * 4
    assert len(model.head.aux_classifiers) == 4 + 2  # 4 pools + TU outputs at strides 16, 8
    plain_cfg = ModelConfig(backbone={"name": "resnet18"}, head={"name": "ldn"})
    plain = build_segmentor(plain_cfg, num_classes=3)
    assert len(plain.head.aux_classifiers) == 2


def test_ldn_built_for_pooled_grids_refuses_features_without_them():
    backbone = BACKBONES["resnet18"]()
    head = LDNHead(feature_info=backbone.feature_info, num_classes=3, pooled_channels=(16, 16))
    features = backbone(torch.randn(1, 3, 64, 64))
    label = torch.zeros(1, 64, 64, dtype=torch.long)
    with pytest.raises(ValueError, match=r"pooled grids of widths \[16, 16\].*carry \[\]"):
        head.losses(features, {"label": label}, (64, 64))
