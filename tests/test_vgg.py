"""VGG-16 backbone (thesis §3.2.2): torchvision parameter names, group-5 BN, declared features."""

import pytest
import torch
from torch import nn

from leanseg.nn.backbones.vgg import vgg16

# torchvision ``models.vgg16().features``: index of each convolution -> (out, in) channels.
# (No VGG manifest in ../shared/reference; these are torchvision's layout for configuration D.)
TORCHVISION_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256),
    17: (512, 256), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip
# Parameters of torchvision's vgg16 ``features`` (138,357,544 in all minus the classifier).
TORCHVISION_FEATURE_PARAMS = 14_714_688


def _torchvision_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for index, (out_channels, in_channels) in TORCHVISION_CONVS.items():
        keys[f"features.{index}.weight"] = (out_channels, in_channels, 3, 3)
        keys[f"features.{index}.bias"] = (out_channels,)
    return keys


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def test_plain_vgg16_has_exactly_torchvision_names_and_shapes():
    model = vgg16(norm5=False)
    assert _shapes(model) == _torchvision_keys()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_FEATURE_PARAMS


def test_group5_norms_sit_in_the_relu_slots_and_keep_every_conv_name():
    model = vgg16()
    shapes = _shapes(model)
    norm_keys = {key: shape for key, shape in shapes.items() if key not in _torchvision_keys()}
    assert {key: shapes[key] for key in _torchvision_keys()} == _torchvision_keys()
    assert set(norm_keys) == {
        f"features.{slot}.0.{name}"
        for slot in (25, 27, 29)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    # BN comes before each group-5 ReLU (relu5_1, relu5_2, relu5_3) and nowhere else.
    for slot in (25, 27, 29):
        norm, relu = model.features[slot]
        assert isinstance(norm, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
        assert isinstance(model.features[slot - 1], nn.Conv2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert len(model.features) == 30  # ends at relu5_3: no pool5


def test_declared_features_match_outputs_at_an_odd_size():
    model = vgg16().eval()
    assert [(i.stride, i.channels) for i in model.feature_info] == [(4, 128), (8, 256), (16, 512)]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 37, 53))
    assert list(features) == model.strides
    for info in model.feature_info:
        assert features[info.stride].shape == (
            1,
            info.channels,
            37 // info.stride,
            53 // info.stride,
        )


def test_stride8_feature_is_pool3():
    model = vgg16().eval()
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        relu3_3 = model.features[:16](images)
        features = model(images)
    assert torch.equal(features[8], nn.functional.max_pool2d(relu3_3, 2))


def test_torchvision_file_loads_and_leaves_only_group5_norms_initialised(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=generator) for key, shape in _torchvision_keys().items()
    }
    state["classifier.0.weight"] = torch.randn(8, 8)  # dropped, as torchvision's classifier
    torch.save(state, tmp_path / "vgg16.pth")
    model = vgg16(pretrained=str(tmp_path / "vgg16.pth"))
    loaded = model.state_dict()
    for key in _torchvision_keys():  # every convolution of the file, as it is in the file
        assert torch.equal(loaded[key], state[key]), key
    # The group-5 norms are what a model built without a file holds (BN's own initialisation).
    initialised = vgg16().state_dict()
    norm_keys = [key for key in loaded if key not in _torchvision_keys()]
    assert len(norm_keys) == 3 * 5
    for key in norm_keys:
        assert torch.equal(loaded[key], initialised[key]), key
    assert torch.equal(model.features[25][0].weight, torch.ones(512))  # initialised, not loaded
    plain = vgg16(pretrained=str(tmp_path / "vgg16.pth"), norm5=False).state_dict()
    assert plain.keys() == _torchvision_keys().keys()
    for key, value in plain.items():
        assert torch.equal(value, state[key]), key


def test_registered_as_vgg16():
    from leanseg.models import BACKBONES

    assert BACKBONES["vgg16"] is vgg16


@pytest.mark.parametrize("norm5", [True, False])
def test_backward_reaches_every_parameter(norm5):
    model = vgg16(norm5=norm5)
    features = model(torch.randn(2, 3, 32, 32))
    sum(f.mean() for f in features.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
