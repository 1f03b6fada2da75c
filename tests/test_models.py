"""Every registered backbone and head: shapes, backward, declared features, torchvision names."""

import json
from pathlib import Path

import pytest
import torch

from leanseg import data
from leanseg.config import ModelConfig
from leanseg.data import DatasetClasses, resolve_classes
from leanseg.models import (
    BACKBONE_NORMALIZATIONS,
    BACKBONES,
    HEADS,
    build_model,
    build_segmentor,
    input_normalization,
    load_run_config,
)
from leanseg.nn.backbones.base import Backbone, Normalization
from leanseg.nn.backbones.pretrained import PretrainedError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_feature_info_matches_outputs(backbone):
    model = BACKBONES[backbone]().eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    assert list(features) == model.strides == sorted(features)
    for info in model.feature_info:
        assert features[info.stride].shape == (
            1,
            info.channels,
            64 // info.stride,
            96 // info.stride,
        )


def test_every_backbone_declares_its_normalisation():
    assert sorted(BACKBONE_NORMALIZATIONS) == sorted(BACKBONES)
    for name, normalization in BACKBONE_NORMALIZATIONS.items():
        assert isinstance(normalization, Normalization), name
        assert len(normalization.mean) == len(normalization.std) == 3, name  # RGB statistics
        assert all(std > 0 for std in normalization.std), name


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0", "erfnet_encoder"])
def test_declared_normalisation_is_read_without_building(backbone, monkeypatch):
    declared = BACKBONE_NORMALIZATIONS[backbone]
    built = BACKBONES[backbone]()
    assert isinstance(built, Backbone) and built.normalization == declared

    def refuse(**_: object) -> None:
        raise AssertionError("the backbone was built")

    monkeypatch.setitem(BACKBONES, backbone, refuse)
    assert input_normalization(ModelConfig(backbone={"name": backbone})) == declared


def test_resnet_stem_features_add_strides_1_and_2_only():
    plain = BACKBONES["resnet50"](deep_stem=True)
    model = BACKBONES["resnet50"](deep_stem=True, stem_features=True).eval()
    assert model.strides == [1, 2, 4, 8, 16, 32] and model.output_stride == 32
    assert list(model.state_dict()) == list(plain.state_dict())  # same names: weights still load
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = model(images)
    assert list(features) == model.strides
    assert torch.equal(features[1], images)
    assert features[2].shape == (1, model.channels(2), 32, 48)


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "efficientnet_lite0"])
def test_segmentor_odd_sizes_and_backward(backbone, head):
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(backbone={"name": backbone}, head={"name": head}), num_classes=5
    )
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 5, 37, 53)
    model.train()
    label = torch.randint(0, 5, (2, 45, 61))
    label[0, :5] = 255
    losses = model.losses(torch.randn(2, 3, 45, 61), {"label": label})
    assert sorted(losses) == sorted(model.head.loss_names())  # the head declares its terms
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_all_ignored_batch_gives_zero_loss_not_nan():
    model = build_segmentor(ModelConfig(), num_classes=3)
    label = torch.full((1, 64, 64), 255)
    loss = model.losses(torch.randn(1, 3, 64, 64), {"label": label})["loss_ce"]
    assert loss.item() == 0.0


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet_keeps_resolution(output_stride):
    model = BACKBONES["resnet50"](output_stride=output_stride).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert max(features) == output_stride
    assert features[output_stride].shape[1] == 2048
    assert features[output_stride].shape[-1] == 64 // output_stride


def _manifest(name: str, shared_reference: Path) -> dict:
    return json.loads((shared_reference / f"torchvision_{name}.json").read_text())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_resnet_names_and_shapes_match_torchvision(name, shared_reference):
    manifest = _manifest(name, shared_reference)
    expected = {k: tuple(v) for k, v in manifest["keys"].items() if not k.startswith("fc.")}
    state = BACKBONES[name]().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    fc_params = sum(
        torch.Size(v).numel() for k, v in manifest["keys"].items() if k.startswith("fc.")
    )
    params = sum(p.numel() for p in BACKBONES[name]().parameters())
    assert params + fc_params == manifest["num_params"]


def _fake_imagenet_file(name: str, shared_reference: Path, path: Path) -> dict:
    manifest = _manifest(name, shared_reference)
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=generator) if shape else torch.tensor(3)
        for key, shape in manifest["keys"].items()
    }
    torch.save(state, path)
    return state


def test_pretrained_weights_load_from_torchvision_file(tmp_path, shared_reference):
    state = _fake_imagenet_file("resnet18", shared_reference, tmp_path / "rn18.pth")
    model = BACKBONES["resnet18"](pretrained=str(tmp_path / "rn18.pth"))
    # Every parameter and BN statistic is the file's (its classifier fc.* is left out).
    loaded = model.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    # A deep stem keeps its own initialisation; every other weight is still the file's.
    deep = BACKBONES["resnet18"](pretrained=str(tmp_path / "rn18.pth"), deep_stem=True)
    after_stem = {k: v for k, v in deep.state_dict().items() if not k.startswith("conv1.")}
    assert set(after_stem) == {k for k in state if not k.startswith(("fc.", "conv1."))}
    for key, value in after_stem.items():
        assert torch.equal(value, state[key]), key


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path, shared_reference):
    _fake_imagenet_file("resnet50", shared_reference, tmp_path / "rn50.pth")
    with pytest.raises(PretrainedError, match="rn50.pth.*shape mismatches|rn50.pth.*unexpected"):
        BACKBONES["resnet18"](pretrained=str(tmp_path / "rn50.pth"))


def test_a_resolved_dataset_answers_classes_palette_and_ignore_index():
    cfg = load_run_config(None, ["data.dataset=camvid", "data.ignore_index=254"])
    classes = resolve_classes(cfg.data)
    assert classes.num_classes == len(classes.classes) == len(classes.palette) == 11
    assert classes.ignore_index == 254 and classes.label_set_mask is None


def test_build_model_reads_no_dataset_with_resolved_classes(monkeypatch):
    cfg = load_run_config(None, ["model.backbone.name=resnet18", "model.head.name=bilinear"])
    resolved = DatasetClasses(classes=("a", "b", "c"), palette=(), ignore_index=7)

    def refuse(*_: object) -> None:
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(data, "resolve_classes", refuse)
    model = build_model(cfg, resolved)
    assert model.num_classes == 3 and model.head.ignore_index == 7
