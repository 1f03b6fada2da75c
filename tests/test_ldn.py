"""LDN parts (thesis ch. 4-5): DenseNet backbones, SPP, TU blocks, soft targets, checkpointing."""

import json

import pytest
import torch
import torch.nn.functional as F

from leanseg.config import ModelConfig
from leanseg.models import BACKBONES, build_segmentor
from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.backbones.densenet import CHECKPOINTING, densenet121
from leanseg.nn.context.spp import SPP, square_grid
from leanseg.nn.heads.ldn import class_histograms, soft_cross_entropy, soft_targets


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet161"])
def test_densenet_names_shapes_and_sizes_match_torchvision(name, shared_reference):
    manifest = json.loads((shared_reference / f"torchvision_{name}.json").read_text())
    expected = {k: tuple(v) for k, v in manifest["keys"].items() if not k.startswith("classifier.")}
    model = BACKBONES[name](split_db3=6)  # a split changes no parameter name
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    classifier = sum(
        torch.Size(v).numel() for k, v in manifest["keys"].items() if k.startswith("classifier.")
    )
    assert sum(p.numel() for p in model.parameters()) + classifier == manifest["num_params"]


@pytest.mark.parametrize(
    ("options", "strides"),
    [
        ({}, [4, 8, 16, 32]),
        ({"split_db3": 12}, [4, 8, 16, 32, 64]),
        ({"split_db3": 6}, [4, 8, 16, 32, 64]),
        ({"split_db3": 12, "split_db4": 8}, [4, 8, 16, 32, 64, 128]),
        ({"output_stride": 16}, [4, 8, 16]),
        ({"output_stride": 8}, [4, 8]),
        ({"db1_stride": 2}, [2, 8, 16, 32]),
    ],
)
def test_densenet_variants_strides_match_declaration(options, strides):
    model = densenet121(**options).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 128, 128))
    assert list(features) == strides == model.strides
    for info in model.feature_info:
        assert features[info.stride].shape[1:] == (
            info.channels,
            128 // info.stride,
            128 // info.stride,
        )
    if "split_db3" in options:
        assert model.channels(16) == 256 + 32 * options["split_db3"]


def test_spp_grids_have_square_cells_and_paper_widths():
    assert square_grid(1, 16, 32) == (1, 2)
    assert square_grid(8, 16, 32) == (8, 16)
    assert square_grid(4, 12, 12) == (4, 4)
    info = [FeatureInfo(16, 64, "skip"), FeatureInfo(32, 1024, "top")]
    spp = SPP(feature_info=info)
    skip = torch.randn(2, 64, 16, 32)
    out = spp({16: skip, 32: torch.randn(2, 1024, 8, 16)})
    assert list(out) == [16, 32] and out[16] is skip
    assert out[32].shape == (2, 256, 8, 16)  # d/4
    assert spp.feature_info == [info[0], FeatureInfo(32, 256, "context")]
    assert spp.pooled_channels == (128,) * 4
    assert [tuple(p.shape[1:]) for p in out.pooled] == [
        (128, 1, 2),
        (128, 2, 4),
        (128, 4, 8),
        (128, 8, 16),
    ]
    assert spp.project[2].out_channels == 512  # d/2


def test_soft_targets_are_window_histograms_and_respect_ignore():
    label = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    one_hot = class_histograms(label, 3)
    target = soft_targets(one_hot, (2, 2))  # 2x2 windows: eq. 4.3
    assert torch.allclose(target[0, :, 0, 0], torch.tensor([0.75, 0.25, 0.0]))
    assert torch.allclose(target[0, :, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(target[0, :, 1, 1], torch.zeros(3))  # all ignored
    # With one-hot targets eq. 4.2 reduces to the ordinary cross-entropy.
    scores = torch.randn(1, 3, 2, 2)
    hard = torch.tensor([[[0, 1], [2, 255]]])
    expected = F.cross_entropy(scores, hard, ignore_index=255)
    assert torch.allclose(soft_cross_entropy(scores, class_histograms(hard, 3)), expected)


@pytest.mark.parametrize("aux_loss", ["ladder", "pyramid"])
def test_ldn_losses_have_aux_terms_and_backward(aux_loss):
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone={"name": "densenet121", "split_db3": 12},
        context={"name": "spp"},
        head={"name": "ldn", "aux_loss": aux_loss, "separable": aux_loss == "pyramid"},
    )
    model = build_segmentor(cfg, num_classes=5).train()
    label = torch.randint(0, 5, (2, 128, 128))
    label[0, :40] = 255
    losses = model.losses(torch.randn(2, 3, 128, 128), {"label": label})
    assert set(losses) == {"loss_ce", "loss_aux"}
    n_aux = len(model.head.aux_classifiers)
    assert n_aux == (4 + 3 if aux_loss == "ladder" else 4)  # 4 SPP pools + 3 TUs / 64..8
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 70, 90)).shape == (1, 5, 70, 90)


def _train_step(strategy: str):
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone={"name": "densenet121", "checkpointing": strategy},
        context={"name": "spp"},
        head={"name": "ldn", "checkpoint": CHECKPOINTING[strategy][1]},
    )
    model = build_segmentor(cfg, num_classes=3).train()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    label = torch.randint(0, 3, (2, 64, 64), generator=generator)
    sum(model.losses(images, {"label": label}).values()).backward()
    return model


def test_checkpointing_strategies_keep_gradients_and_bn_statistics():
    reference = _train_step("none")
    ref_grads = dict(reference.named_parameters())
    ref_buffers = dict(reference.named_buffers())
    for strategy in list(CHECKPOINTING)[1:]:
        model = _train_step(strategy)
        for name, p in model.named_parameters():
            assert torch.allclose(p.grad, ref_grads[name].grad, atol=1e-5), (strategy, name)
        for name, buffer in model.named_buffers():
            # Recomputation must not update running statistics a second time.
            assert torch.allclose(buffer.float(), ref_buffers[name].float(), atol=1e-6), (
                strategy,
                name,
            )
        assert int(model.backbone.features.norm0.num_batches_tracked) == 1


def test_unknown_checkpointing_strategy_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"\(cat 1x1 3x3\)"):
        densenet121(checkpointing="everything")
