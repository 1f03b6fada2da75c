"""S&F head: Table 2a rows, eq. 1 losses, tau knob, strides 4/8, supplementary choices."""

import pytest
import torch

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.heads.sandf import (
    POOL_SIZES,
    CoarseToFineContext,
    ResidualFuse,
    SandFHead,
    UnityHead,
    pyramid_sampling,
)

ROWS = {
    "a": dict(context="none", output="pixel"),
    "b": dict(context="anl", output="pixel"),
    "c": dict(context="c2f", output="pixel"),
    "d": dict(context="none", output="pyramid", relabel="raw"),
    "e": dict(context="none", output="pyramid", relabel="gt"),
    "f": dict(context="none", output="pyramid", relabel="tp"),
    "g": dict(context="anl", output="pyramid", relabel="tp"),
    "h": dict(context="c2f", output="pyramid", relabel="tp"),
    "i": dict(context="c2f", output="auxiliary"),
}


def _head(stride=4, channels=24, **kwargs):
    info = [FeatureInfo(stride, channels, "x")]
    options = dict(num_classes=5, semantic_channels=16, unity_channels=8) | kwargs
    return SandFHead(feature_info=info, **options)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_every_table_2a_row_trains_and_predicts(row):
    torch.manual_seed(0)
    head = _head(**ROWS[row])
    features = {4: torch.randn(2, 24, 9, 13)}  # not divisible by 2**(L-1): padded inside
    label = torch.randint(0, 5, (2, 36, 52))
    label[0, :8] = 255
    losses = head.losses(features, {"label": label}, (36, 52))
    expected = {"loss_ce"} if ROWS[row]["output"] == "pixel" else {"loss_semantic"}
    if ROWS[row]["output"] == "pyramid":
        expected.add("loss_unity")
    assert set(losses) == expected
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in head.parameters())
    head.eval()
    with torch.no_grad():
        assert head(features, (36, 52)).shape == (2, 5, 36, 52)
        _, level = head.fuse(features)
    assert level.shape == (2, 9, 13)


def test_pixel_rows_without_c2f_have_one_classifier_and_no_unity_head():
    for row in ("a", "b"):  # both pixel rows without c2f: naive and ANL context
        head = _head(**ROWS[row])
        assert len(head.classifiers) == 1 and head.unity is None and head.c2f is None, row
    assert _head(**ROWS["b"]).anl is not None
    assert len(_head(**ROWS["c"]).classifiers) == 1 and len(_head(**ROWS["c"]).c2f.update) == 3
    assert len(_head(**ROWS["i"]).classifiers) == 4 and _head(**ROWS["i"]).unity is None


def test_unity_head_kernels_equal_strides():
    unity = UnityHead(10, 4, num_levels=4)
    assert [c.kernel_size for c in unity.levels] == [(8, 8), (4, 4), (2, 2)]
    assert [c.stride for c in unity.levels] == [(8, 8), (4, 4), (2, 2)]
    out = unity(torch.randn(1, 10, 16, 24))
    assert [tuple(u.shape) for u in out] == [(1, 2, 3), (1, 4, 6), (1, 8, 12)]


def test_pyramid_sampling_has_110_slots():
    assert sum(n * n for n in POOL_SIZES) == 110
    assert pyramid_sampling(torch.randn(2, 7, 4, 5)).shape == (2, 7, 110)


def test_c2f_uses_1x1_at_finest_and_residual_blocks_coarser():
    module = CoarseToFineContext(16, num_levels=4)
    assert all(isinstance(m, ResidualFuse) for m in module.aggregate[:3])
    assert module.aggregate[3][0].kernel_size == (1, 1)
    assert len(module.update) == 3  # theta^(1..L-1), eq. 4
    levels = [torch.randn(1, 16, 2 * 2**i, 3 * 2**i) for i in range(4)]
    assert [o.shape for o in module(levels)] == [x.shape for x in levels]


def test_coarsest_level_gets_global_context_from_the_finest_map():
    # theta^(0) = PyramidSampling(X^(L)): the coarsest output depends on the finest input (eq. 3).
    torch.manual_seed(0)
    module = CoarseToFineContext(8, num_levels=3).eval()
    levels = [torch.randn(1, 8, 2 * 2**i, 2 * 2**i) for i in range(3)]
    with torch.no_grad():
        out = module(levels)
        out2 = module([levels[0], levels[1], levels[2] + 1.0])
    assert not torch.allclose(out[0], out2[0])


def test_tau_is_an_inference_knob():
    torch.manual_seed(0)
    head = _head(**ROWS["h"]).eval()
    features = {4: torch.randn(1, 24, 16, 16)}
    with torch.no_grad():
        _, coarse = head.fuse(features, tau=0.0)  # every coarsest cell is a unit cell
        _, fine = head.fuse(features, tau=1.01)  # no unit cells: the finest level serves all
        head.tau = 1.01
        _, knob = head.fuse(features)
    assert coarse.eq(0).all() and fine.eq(3).all() and knob.eq(3).all()


@pytest.mark.parametrize("stride", [4, 8])
def test_head_on_resnet_stride_4_and_8(stride):
    model = build_segmentor(
        ModelConfig(
            backbone={"name": "resnet18"},
            head={"name": "sandf", "in_stride": stride, "semantic_channels": 16},
        ),
        num_classes=3,
    )
    assert model.head.in_stride == stride
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 56)).shape == (1, 3, 40, 56)


def test_stride_16_only_backbone_is_refused():
    with pytest.raises(ValueError, match="stride-4 or stride-8"):
        SandFHead(feature_info=[FeatureInfo(16, 8, "x")], num_classes=3)


def test_perfect_predictions_give_low_loss_and_tp_ignores_descendants():
    """TP relabelling: with the unity head saying 'unit' everywhere and a one-class label,
    only the coarsest level is supervised (finer ones are all done by coarser)."""
    head = _head(**ROWS["f"])
    with torch.no_grad():
        for conv in head.unity.levels:
            conv.weight.zero_()
            conv.bias.fill_(10.0)
    label = torch.full((2, 32, 32), 2)
    features = {4: torch.randn(2, 24, 8, 8)}
    semantic, unity = head.predict_pyramid(features)
    from leanseg.structures.pyramid import pyramid_targets, relabel

    gt = pyramid_targets(label, num_levels=4, finest_stride=4)
    re = relabel(gt, [torch.sigmoid(u) for u in unity], mode="tp")
    assert re.semantic[0].eq(2).all() and all(y.eq(255).all() for y in re.semantic[1:])
    losses = head.losses(features, {"label": label}, (32, 32))
    assert losses["loss_unity"] < 1e-3  # the only supervised unity cells are predicted right


def test_rows_without_a_pyramid_are_served_by_the_finest_level():
    """S&F eq. 2 levels are 0 (coarsest) .. L-1 (finest); a per-pixel head serves from L-1."""
    model = build_segmentor(
        ModelConfig(backbone={"name": "resnet18"}, head={"name": "sandf", "output": "pixel"}),
        num_classes=3,
    ).eval()
    with torch.no_grad():
        _, level = model.head.fuse(model.features(torch.randn(1, 3, 64, 64)))
    assert torch.all(level == model.head.num_levels - 1)
