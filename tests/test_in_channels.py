"""Input channels other than RGB, and the batch keys ``losses`` reads (issue 28, item 5).

Every registered backbone is built for 1 and 4 input channels and run; the adaptation of a
pretrained RGB first convolution is checked numerically; configs get per-channel statistics of
the right length or a clear error; ``losses`` names a missing target key.
"""

import numpy as np
import pytest
import torch
from torch import nn

from leanseg.config import ConfigError
from leanseg.data.transforms import ToTensor
from leanseg.inference.speed import example_images
from leanseg.models import BACKBONES, create_model, run_config_from_dict
from leanseg.nn.backbones.base import IMAGENET_NORMALIZATION
from leanseg.nn.backbones.pretrained import adapt_input_channels
from leanseg.nn.scale_selection.model import scale_invariant
from leanseg.nn.segmentor import MissingTargetError
from leanseg.profiling.benchmark import benchmark_model

# The key of the convolution that reads the image, per backbone family with ImageNet weights.
FIRST_CONV = {
    "resnet18": "conv1.weight",
    "densenet121": "features.conv0.weight",
    "hrnet_w18": "conv1.weight",
    "efficientnet_lite0": "_conv_stem.weight",
    "vgg16": "features.0.weight",
}


@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_reads_other_channel_counts(backbone, in_channels):
    model = BACKBONES[backbone](in_channels=in_channels).eval()
    assert model.in_channels == in_channels
    with torch.no_grad():
        features = model(torch.randn(1, in_channels, 32, 64))
    assert list(features) == model.strides
    for info in model.feature_info:
        assert features[info.stride].shape[:2] == (1, info.channels)


def test_resnet_stem_features_declare_the_input_channels():
    model = BACKBONES["resnet18"](in_channels=4, stem_features=True).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 4, 32, 32))
    assert model.feature_info[0].channels == 4 == features[1].shape[1]


def test_in_channels_below_one_is_refused():
    with pytest.raises(ValueError, match="in_channels"):
        BACKBONES["resnet18"](in_channels=0)


def _rgb_conv(seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 5, 3, padding=1, bias=False)


def test_one_channel_filters_answer_grey_as_rgb_filters_answer_r_eq_g_eq_b():
    rgb = _rgb_conv()
    grey = nn.Conv2d(1, 5, 3, padding=1, bias=False)
    grey.weight.data = adapt_input_channels(rgb.weight.data, 1)
    image = torch.randn(2, 1, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(grey(image), rgb(image.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(grey.weight.data, rgb.weight.data.sum(dim=1, keepdim=True))


def test_more_channels_repeat_the_rgb_filters_scaled_by_3_over_c():
    weight = _rgb_conv().weight.data
    four = adapt_input_channels(weight, 4)
    assert four.shape == (5, 4, 3, 3)
    for channel, source in enumerate((0, 1, 2, 0)):
        torch.testing.assert_close(four[:, channel], weight[:, source] * 3 / 4)
    # A multiple of 3 is exact: two stacked copies of an RGB image answer as the image.
    six = nn.Conv2d(6, 5, 3, padding=1, bias=False)
    six.weight.data = adapt_input_channels(weight, 6)
    image = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(six(torch.cat([image, image], dim=1)), _rgb_conv()(image))
    assert adapt_input_channels(weight, 3) is weight


def test_adaptation_keeps_the_dtype_and_refuses_non_rgb_filters():
    weight = _rgb_conv().weight.data.half()
    assert adapt_input_channels(weight, 1).dtype == torch.float16
    with pytest.raises(ValueError, match="RGB filters"):
        adapt_input_channels(torch.zeros(5, 4, 3, 3), 1)


@pytest.mark.parametrize("backbone", sorted(FIRST_CONV))
def test_pretrained_rgb_weights_load_into_other_channel_counts(backbone, tmp_path):
    path = tmp_path / f"{backbone}.pth"
    # Random values everywhere, BN statistics included (a fresh model's are zeros and ones).
    generator = torch.Generator().manual_seed(0)
    rgb_state = {
        k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v + 7
        for k, v in BACKBONES[backbone]().state_dict().items()
    }
    torch.save(rgb_state, path)
    key = FIRST_CONV[backbone]
    for in_channels in (1, 4):
        state = BACKBONES[backbone](pretrained=str(path), in_channels=in_channels).state_dict()
        expected = adapt_input_channels(rgb_state[key], in_channels)
        torch.testing.assert_close(state[key], expected)
        # Every other weight is the file's, unchanged.
        assert state.keys() == rgb_state.keys()
        for other in rgb_state.keys() - {key}:
            assert torch.equal(state[other], rgb_state[other]), (in_channels, other)


def test_create_model_in_channels_builds_and_trains():
    model = create_model("bilinear", "resnet18", num_classes=3, in_channels=1)
    assert model.in_channels == 1 == model.backbone.in_channels
    images = torch.randn(2, 1, 32, 32)
    label = torch.randint(0, 3, (2, 32, 32))
    losses = model.losses(images, {"label": label})
    sum(losses.values()).backward()
    assert model(images).shape == (2, 3, 32, 32)


def _raw_config(in_channels: int, **data):
    return {
        "model": {
            "backbone": {"name": "resnet18", "in_channels": in_channels},
            "head": {"name": "bilinear"},
        },
        "data": {"dataset": "synthetic", **data},
    }


def test_one_channel_config_defaults_to_the_averaged_rgb_statistics():
    cfg = run_config_from_dict(_raw_config(1))
    assert cfg.data.mean == pytest.approx((sum(IMAGENET_NORMALIZATION.mean) / 3,))
    assert cfg.data.std == pytest.approx((sum(IMAGENET_NORMALIZATION.std) / 3,))


def test_four_channel_config_asks_for_statistics_naming_data_mean():
    with pytest.raises(ConfigError, match=r"data\.mean: model\.backbone\.in_channels is 4"):
        run_config_from_dict(_raw_config(4))
    cfg = run_config_from_dict(_raw_config(4, mean=[0.5, 0.5, 0.5, 0.2], std=[0.2] * 4))
    assert len(cfg.data.mean) == len(cfg.data.std) == 4


def test_statistics_of_the_wrong_length_are_refused():
    with pytest.raises(ConfigError, match=r"data\.std: 3 values .*\.in_channels 1"):
        run_config_from_dict(_raw_config(1, mean=[0.5], std=[0.2, 0.2, 0.2]))


def test_to_tensor_normalises_grey_and_four_channel_images():
    grey = ToTensor([0.5], [0.25])({"image": np.full((4, 6), 255, np.uint8)})["image"]
    assert grey.shape == (1, 4, 6) and torch.allclose(grey, torch.tensor(2.0))
    # Each channel with its own mean and std: (x / 255 - mean) / std, in the image's order.
    pixels = np.broadcast_to(np.array([0, 51, 102, 255], np.uint8), (4, 6, 4))
    mean, std = [0.0, 0.1, 0.2, 0.5], [1.0, 0.5, 0.25, 0.5]
    rgbd = ToTensor(mean, std)({"image": pixels})["image"]
    assert rgbd.shape == (4, 4, 6)
    for channel, value in enumerate([0.0, 0.2, 0.8, 1.0]):  # e.g. (102/255 - 0.2) / 0.25
        torch.testing.assert_close(rgbd[channel], torch.full((4, 6), value))


def test_example_inputs_of_bench_and_speed_checks_follow_in_channels():
    model = create_model("bilinear", "resnet18", num_classes=3, in_channels=4).eval()
    assert example_images(model, "cpu").shape[1] == 4
    result = benchmark_model(model, (64, 64), warmup=0, repeats=1)
    assert result.input_shape == [1, 4, 64, 64]


def test_onnx_export_of_a_one_channel_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from leanseg.export import export_onnx

    model = create_model("bilinear", "resnet18", num_classes=3, in_channels=1).eval()
    grey = IMAGENET_NORMALIZATION.for_channels(1)
    result = export_onnx(model, tmp_path / "grey.onnx", normalization=grey)
    assert all(check.shape[1] == 1 for check in result.checks)
    assert result.metadata["leanseg.input"].startswith("images (B, 1, H, W)")


def test_losses_without_label_name_the_key_and_the_keys_given():
    model = create_model("bilinear", "resnet18", num_classes=3)
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(MissingTargetError, match=r"'label'.*int64.*keys: none"):
        model.losses(images, {})
    with pytest.raises(KeyError, match=r"'label'.*keys: 'labels'"):
        model.losses(images, {"labels": torch.zeros(1, 32, 32, dtype=torch.long)})
    assert model.required_targets == ("label",)


def test_depth_scale_selection_names_its_missing_disparity():
    model = scale_invariant(num_classes=3, backbone=BACKBONES["resnet18"](), hidden_channels=8)
    assert model.required_targets == ("label", "disparity", "stereo_baseline")
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    with pytest.raises(MissingTargetError, match=r"'disparity'.*'stereo_baseline'.*keys: 'label'"):
        model.losses(torch.randn(1, 3, 32, 32), {"label": label})


def test_images_with_other_channels_than_the_backbone_reads_are_named():
    model = create_model("bilinear", "resnet18", num_classes=3, in_channels=1).eval()
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\).*\(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def test_a_head_option_named_in_channels_goes_in_head_options():
    model = create_model(
        "qgn",
        "resnet18",
        num_classes=3,
        in_channels=1,
        backbone_options={"stem_features": True},
        head_options={"in_channels": 16, "decoder_channels": [8] * 5, "decoder_units": [1] * 5},
    )
    assert model.in_channels == 1
    assert model.head.project[0].out_channels == 16  # QGN's projection width
