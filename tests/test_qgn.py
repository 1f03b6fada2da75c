"""QGN head: sparse vs dense-masked decoder, propagation schemes, loss, anytime knobs."""

import pytest
import torch

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.heads.qgn import dense_masked_logits

SMALL = {
    "name": "qgn",
    "in_channels": 32,
    "decoder_channels": [16, 16, 8, 8, 8],
    "decoder_units": [1, 1, 1, 1, 1],
}


def _model(**head):
    torch.manual_seed(0)
    return build_segmentor(
        ModelConfig(backbone={"name": "resnet18"}, head={**SMALL, **head}), num_classes=3
    )


def _blocky_label(b=2, h=64, w=96):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 3, (b, h // 16, w // 16), generator=g)
    label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
    label[:, 5:9, 7:30] = 255
    label[:, 40, :] = 1
    return label


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize("scheme", ["all", "gtc", "pc"])
def test_sparse_decoder_matches_dense_masked(scheme, before):
    model = _model(train_scheme=scheme, units_before_upsample=before).double()
    model.train()
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    label = _blocky_label()
    feats = model.features(images)
    pred = model.head.predict_quadtree(
        feats, (64, 96), scheme=scheme, label=label, dense_scores=False
    )
    sites = {lvl: s.coords for lvl, s in pred.logits.items()}
    dense = dense_masked_logits(model.head, feats, sites)
    sparse_sum = dense_sum = 0
    for lvl, s in pred.logits.items():
        c = s.coords
        ref = dense[lvl].permute(0, 2, 3, 1)[c[:, 0], c[:, 1], c[:, 2]]
        torch.testing.assert_close(s.features, ref, atol=1e-8, rtol=1e-8)
        w = torch.randn_like(ref)
        sparse_sum = sparse_sum + (s.features * w).sum()
        dense_sum = dense_sum + (ref * w).sum()
    params = [p for p in model.head.parameters() if p.requires_grad]
    g_sparse = torch.autograd.grad(sparse_sum, params, allow_unused=True, retain_graph=True)
    g_dense = torch.autograd.grad(dense_sum, params, allow_unused=True)
    for a, b in zip(g_sparse, g_dense, strict=True):
        if a is None or b is None:
            assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
            continue
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)
    if scheme == "gtc":
        assert pred.active_sites[0] < 64 * 96 * 2 / 4


def test_losses_schemes_and_weighting():
    model = _model(train_scheme="gtc", loss_weighting="adaptive")
    model.train()
    losses = model.losses(torch.randn(2, 3, 64, 96), {"label": _blocky_label()})
    assert sorted(losses) == [f"loss_q{lvl}" for lvl in range(6)]
    sum(losses.values()).backward()
    assert not torch.equal(model.head.adaptive_beta, torch.ones(6))
    fixed = _model(gamma=0.5).head
    assert fixed.level_weights() == [0.5**lvl for lvl in range(6)]


def test_anytime_knobs_and_second_best():
    model = _model(eval_scheme="pc", min_level=2, max_sites=5).eval()
    with torch.no_grad():
        scores = model(torch.randn(1, 3, 64, 96))
    assert scores.shape == (1, 3, 64, 96)
    active = model.head.last_active_sites
    assert sorted(active) == [2, 3, 4, 5]
    assert all(active[lvl] <= 5 * 4 for lvl in (2, 3, 4))
    with pytest.raises(ValueError, match="gtc"):
        _model(eval_scheme="gtc").eval()(torch.randn(1, 3, 64, 64))
