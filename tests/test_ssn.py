"""SSN: iGUM / GUM sampling conventions, encoders, instance module, BN folding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig
from leanseg.models import BACKBONES, build_segmentor
from leanseg.nn.backbones.ssn_encoder import LightweightNonBottleneck1D
from leanseg.nn.fold_bn import FoldError, fold_batchnorm
from leanseg.nn.heads.igum import GuidanceBranch, guided_upsample, regular_grid
from leanseg.nn.heads.ssn_instance import (
    coordinate_grid,
    coordinates_to_instances,
    instance_centres,
    instance_loss,
    iterative_sampling,
    predict_instances,
)

# --------------------------------------------------------------------------- iGUM conventions


@pytest.mark.parametrize("size", [(32, 48), (37, 53)])
def test_zero_offsets_bilinear_is_align_corners_false_interpolation(size):
    scores = torch.randn(2, 3, 4, 6)
    offsets = torch.zeros(2, 2, 4, 6)
    expected = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(guided_upsample(scores, offsets, size, "bilinear"), expected, atol=1e-5)


def test_zero_offsets_nearest_is_nearest_interpolation_for_integer_factors():
    scores = torch.randn(1, 3, 4, 6)
    offsets = torch.zeros(1, 2, 4, 6)
    expected = F.interpolate(scores, size=(32, 48), mode="nearest")
    assert torch.equal(guided_upsample(scores, offsets, (32, 48), "nearest"), expected)


def test_offsets_are_in_coarse_pixels_x_then_y():
    # A ramp in x: value = column index. An x offset of +1 reads the next column (one coarse
    # pixel), whatever the upsampling factor; y offsets leave it unchanged.
    cols = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    shift_x = torch.zeros(1, 2, 4, 8)
    shift_x[:, 0] = 1.0
    shift_y = torch.zeros(1, 2, 4, 8)
    shift_y[:, 1] = 1.0
    base = guided_upsample(cols, torch.zeros(1, 2, 4, 8), (16, 32), "bilinear")
    moved = guided_upsample(cols, shift_x, (16, 32), "bilinear")
    inner = slice(4, 24)  # away from the border clamp
    assert torch.allclose(moved[..., inner] - base[..., inner], torch.ones(1), atol=1e-5)
    assert torch.allclose(guided_upsample(cols, shift_y, (16, 32), "bilinear"), base)


def test_regular_grid_aligns_pixel_centres():
    grid = regular_grid((4, 8), (2, 4))
    assert torch.allclose(
        grid[0, 0], torch.tensor([-0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25])
    )
    assert torch.allclose(grid[1, :, 0], torch.tensor([-0.25, 0.25, 0.75, 1.25]))


def test_guidance_offsets_bounded_by_tanh_and_start_at_zero():
    branch = GuidanceBranch(4, max_offset=1.0)
    assert branch(torch.randn(1, 4, 5, 5)).abs().max() == 0
    nn.init.normal_(branch.conv.weight, std=100.0)
    out = branch(torch.randn(1, 4, 5, 5))
    assert out.abs().max() <= 1.0
    assert out.shape == (1, 2, 5, 5)


@pytest.mark.parametrize("head", ["igum", "gum"])
def test_guided_heads_train_their_offsets(head):
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(backbone={"name": "ssn_encoder"}, head={"name": head}), num_classes=4
    )
    label = torch.randint(0, 4, (1, 32, 48))
    sum(model.losses(torch.randn(1, 3, 32, 48), {"label": label}).values()).backward()
    offsets_conv = model.head.guidance.conv if head == "igum" else model.head.to_offsets
    assert offsets_conv.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- encoders


def test_lightweight_module_matches_figure5():
    block = LightweightNonBottleneck1D(8, dilation=2)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.kernel_size) for c in convs] == [(1, 1), (3, 1), (1, 3), (1, 1)]
    assert all(c.bias is None and c.in_channels == c.out_channels == 8 for c in convs)
    assert [tuple(c.dilation) for c in convs[1:3]] == [(2, 1), (1, 2)]
    assert sum(isinstance(m, nn.PReLU) for m in block.modules()) == 4


def test_erfnet_encoder_names_and_size():
    model = BACKBONES["erfnet_encoder"]()
    names = set(model.state_dict())
    assert {"initial_block.conv.weight", "layers.1.conv3x1_1.weight", "layers.6.bn.weight"} <= names
    segmentor = build_segmentor(
        ModelConfig(backbone={"name": "erfnet_encoder"}, head={"name": "erfnet_decoder"}),
        num_classes=20,
    )
    # ERFNet has about 2.07 M parameters (Romera et al. 2018).
    assert 2.0e6 < sum(p.numel() for p in segmentor.parameters()) < 2.1e6


# --------------------------------------------------------------------------- instance module


def test_sampler_gradients_reach_offsets_not_fixed_grid():
    grid = coordinate_grid((6, 8), (24, 32)).requires_grad_(True)
    offsets = (0.5 * torch.randn(2, 2, 6, 8)).requires_grad_(True)
    out = iterative_sampling(grid, offsets, iterations=5, mode="bilinear")
    (out**2).sum().backward()
    assert grid.grad is None
    assert offsets.grad is not None
    assert torch.isfinite(offsets.grad).all() and offsets.grad.abs().sum() > 0


def test_instance_centres_are_centroids_of_instance_pixels():
    instance = torch.zeros(1, 4, 6, dtype=torch.long)
    instance[0, 0:2, 0:2] = 8001
    instance[0, 1:4, 3:6] = 9002
    instance[0, 3, 0] = 7  # Cityscapes: a class id, not an instance
    centres, mask = instance_centres(instance)
    assert mask.sum() == 4 + 9
    assert torch.allclose(centres[0, :, 0, 0], torch.tensor([0.5, 0.5]))
    assert torch.allclose(centres[0, :, 2, 4], torch.tensor([4.0, 2.0]))
    assert centres[0, :, 3, 0].abs().sum() == 0


def test_instance_loss_variants():
    predicted = torch.zeros(1, 2, 1, 2)
    centres = torch.tensor([[3.0, 0.0], [4.0, 0.5]]).view(1, 2, 1, 2)
    mask = torch.tensor([[[True, False]]])
    assert torch.isclose(instance_loss(predicted, centres, mask, "l2"), torch.tensor(5.0))
    assert torch.isclose(instance_loss(predicted, centres, mask, "l1"), torch.tensor(7.0))
    assert torch.isclose(instance_loss(predicted, centres, mask, "smooth_l1"), torch.tensor(6.0))
    none = torch.zeros_like(mask)
    assert instance_loss(predicted.requires_grad_(True), centres, none).item() == 0.0


def _flow_towards(centres_xy, labels, size):
    """Offsets (coarse pixels, clamped to 1) pointing each pixel at its blob's centre."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
    offsets = torch.zeros(1, 2, h, w)
    for index, (cx, cy) in enumerate(centres_xy, start=1):
        inside = labels == index
        offsets[0, 0][inside] = (cx - xs[inside]).clamp(-1, 1)
        offsets[0, 1][inside] = (cy - ys[inside]).clamp(-1, 1)
    return offsets


def test_iterations_spread_centre_and_give_one_id_per_instance():
    size = (12, 16)
    blobs = torch.zeros(size, dtype=torch.long)
    blobs[1:9, 1:7] = 1
    blobs[3:11, 9:15] = 2
    offsets = _flow_towards([(4, 5), (12, 7)], blobs, size)
    grid = coordinate_grid(size, size)  # stride 1: coordinates = coarse pixels
    few = iterative_sampling(grid, offsets, iterations=1, mode="nearest")
    many = iterative_sampling(grid, offsets, iterations=8, mode="nearest")
    inside = blobs == 1
    assert not torch.all(few[0, 0][inside] == 4)  # one step reaches only the centre's neighbours
    assert torch.all(many[0, 0][inside] == 4) and torch.all(many[0, 1][inside] == 5)
    scores = torch.zeros(1, 3, *size)
    scores[0, 2][blobs > 0] = 10.0  # class 2 = thing; background class 0
    scores[0, 0][blobs == 0] = 10.0
    prediction = coordinates_to_instances(many, scores, [2], cluster_size=1.0, min_area=4)
    ids = torch.unique(prediction.instance).tolist()
    assert ids == [0, 2001, 2002]
    assert torch.equal(prediction.instance[0] > 0, blobs > 0)
    assert set(prediction.scores[0]) == {2001, 2002}
    # The area threshold drops small groups.
    assert torch.unique(
        coordinates_to_instances(many, scores, [2], cluster_size=1.0, min_area=100).instance
    ).tolist() == [0]


def test_instance_head_end_to_end_odd_size():
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(
            backbone={"name": "ssn_encoder"},
            head={"name": "ssn_instance", "thing_classes": [1, 2], "iterations": 4},
        ),
        num_classes=3,
    )
    instance = torch.zeros(1, 40, 56, dtype=torch.long)
    instance[0, 4:20, 4:20] = 1001
    label = torch.zeros(1, 40, 56, dtype=torch.long)
    label[instance > 0] = 1
    losses = model.losses(torch.randn(1, 3, 40, 56), {"label": label, "instance": instance})
    assert set(losses) == {"loss_ce", "loss_instance"}
    sum(losses.values()).backward()
    assert model.head.instance_guidance[-1].conv.weight.grad.abs().sum() > 0
    model.eval()
    prediction = predict_instances(model, torch.randn(2, 3, 37, 53), iterations=3)
    assert prediction.instance.shape == (2, 37, 53) and len(prediction.scores) == 2


# --------------------------------------------------------------------------- BN folding


@pytest.mark.parametrize(
    ("backbone", "head"),
    [
        ("erfnet_encoder", "erfnet_decoder"),
        ("ssn_encoder", "igum"),
        ("ssn_encoder", "ssn_instance"),
        ("resnet18", "ladder"),
    ],
)
def test_fold_batchnorm_keeps_outputs(backbone, head):
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(backbone={"name": backbone}, head={"name": head}), num_classes=5
    )
    # Non-trivial statistics, so that folding has something to do.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    images = torch.randn(1, 3, 64, 96)
    folded = fold_batchnorm(model, images)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert after < before
    with torch.no_grad():
        assert torch.allclose(model(images), folded(images), atol=1e-4)
        other = torch.randn(1, 3, 40, 56)  # another input: folding is not input specific
        assert torch.allclose(model(other), folded(other), atol=1e-4)


def test_fold_batchnorm_refuses_conv_output_used_beyond_its_bn():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = Shared()
    model.bn.running_mean.fill_(1.0)
    with pytest.raises(FoldError):
        fold_batchnorm(model, torch.randn(1, 3, 8, 8))
