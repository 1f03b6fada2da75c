"""Depth-guided scale selection (thesis ch. 3): pyramid, multiplexer (eq. 3.1-3.2), model, loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.backbones.efficientnet_lite import efficientnet_lite0
from leanseg.nn.losses import class_balanced_cross_entropy, class_balanced_weights
from leanseg.nn.scale_selection import (
    VARIANTS,
    PyramidExtractor,
    ScaleMultiplexer,
    ScaleSelectionSegmentor,
    disparity_on_grid,
    pyramid_sizes,
)

ALPHA, BASELINE, W_RF = 1.3, 0.2, 185.0


class TinyBackbone(Backbone):
    """Two strided convolutions: 4 channels at stride 8, 6 at stride 16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv8 = nn.Conv2d(3, 4, 8, stride=8)
        self.conv16 = nn.Conv2d(4, 6, 2, stride=2)
        self.feature_info = [FeatureInfo(8, 4, "conv8"), FeatureInfo(16, 6, "conv16")]

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        x8 = torch.tanh(self.conv8(images))
        return {8: x8, 16: torch.tanh(self.conv16(x8))}


def _disparity_for(s: float, reference_scale: float) -> float:
    """The disparity whose eq. 3.1 factor for ``reference_scale`` is ``s``."""
    return s * BASELINE * W_RF / reference_scale


# ---------------------------------------------------------------- multiplexer routing (eq. 3.2)


def test_routing_on_a_hand_made_disparity_map_equals_eq_3_2():
    multiplexer = ScaleMultiplexer(
        num_levels=8, alpha=ALPHA, reference_scales=(1.0,), receptive_field=W_RF
    )
    # factor s -> level by eq. 3.2; alpha^2 = 1.69, alpha^3 = 2.197 (midpoint 1.9435).
    cases = {
        0.01: 0,  # s < 1: level 0
        0.99: 0,
        1.0: 0,
        1.2: 1,  # |1.3 - 1.2| < |1 - 1.2|
        1.9: 2,
        2.0: 3,
        ALPHA**5: 5,
        ALPHA**7: 7,
        1000.0: 7,  # beyond alpha^(N-1): clamped to N-1
    }
    disparity = torch.tensor([[_disparity_for(s, 1.0) for s in cases]]).view(1, 1, -1)
    levels = multiplexer.route(disparity, BASELINE)
    assert levels.shape == (1, 1, 1, len(cases))
    assert levels.flatten().tolist() == list(cases.values())


def test_routing_per_reference_scale_and_per_image_baseline():
    multiplexer = ScaleMultiplexer(reference_scales=(1.0, 4.0, 7.0), receptive_field=W_RF)
    # One pixel, d = 20 px: s = 20 * W_R / (b * 185) for b = 0.2 m and b = 0.5 m.
    disparity = torch.full((2, 1, 1), 20.0)
    levels = multiplexer.route(disparity, torch.tensor([0.2, 0.5]))
    for image, baseline in enumerate((0.2, 0.5)):
        for m, reference in enumerate((1.0, 4.0, 7.0)):
            s = 20.0 * reference / (baseline * W_RF)
            expected = min(range(8), key=lambda level, s=s: abs(ALPHA**level - s))
            assert levels[image, m, 0, 0].item() == expected
    # 4 m at b = 0.2: s = 2.16 -> level 3; 1 m: s = 0.54 < 1 -> level 0; 7 m: s = 3.78 -> 5.
    assert levels[0, :, 0, 0].tolist() == [0, 3, 5]


@pytest.mark.parametrize("fallback", [None, (0, 3, 7)])
def test_invalid_disparity_gets_the_fallback_levels(fallback):
    multiplexer = ScaleMultiplexer(fallback_levels=fallback, receptive_field=W_RF)
    disparity = torch.tensor([[[0.0, -3.0, float("nan"), float("inf"), 60.0]]])
    levels = multiplexer.route(disparity, BASELINE)  # (1, 3, 1, 5)
    expected_invalid = [0, 0, 0] if fallback is None else list(fallback)
    for x in range(4):
        assert levels[0, :, 0, x].tolist() == expected_invalid
    assert levels[0, :, 0, 4].tolist() != expected_invalid  # 60 px is valid: s = 1.6, 6.5, 11.4


def test_bad_fallback_levels_are_refused():
    with pytest.raises(ValueError, match="one level per reference scale"):
        ScaleMultiplexer(fallback_levels=(0, 1))
    with pytest.raises(ValueError, match="outside 0..7"):
        ScaleMultiplexer(fallback_levels=(0, 1, 8))


def test_disparity_on_grid_is_the_mean_of_valid_pixels_per_cell():
    disparity = torch.zeros(1, 5, 6)  # 2x2 cells on a 3x3 grid, the last row and column padded
    disparity[0, 0, 0], disparity[0, 1, 1] = 10.0, 20.0  # cell (0, 0): two valid of four
    disparity[0, 0, 2:4] = float("nan")  # cell (0, 1): no valid pixel
    disparity[0, 4, 4] = 7.0  # cell (2, 2): one valid pixel among padding
    grid = disparity_on_grid(disparity, 2, (3, 3))
    assert grid.shape == (1, 3, 3)
    assert grid[0, 0, 0].item() == 15.0
    assert torch.isnan(grid[0, 0, 1]) and torch.isnan(grid[0, 1, 1])
    assert grid[0, 2, 2].item() == 7.0


# ---------------------------------------------------------------- gathering and its gradient


def test_gather_takes_each_pixels_selected_level_and_routes_gradient_only_there():
    torch.manual_seed(0)
    stack = torch.randn(2, 5, 3, 4, 6, requires_grad=True)  # (B, N, C, h, w)
    levels = torch.randint(0, 4, (2, 2, 4, 6))
    levels[:, :, :, 0] = 4  # level 4 only in column 0; level 1 nowhere
    levels[levels == 1] = 2
    out = ScaleMultiplexer(num_levels=5, reference_scales=(1.0, 4.0))(stack, levels)
    assert out.shape == (2, 2 * 3, 4, 6)
    for b, m, y, x in [(0, 0, 0, 0), (1, 1, 3, 5), (0, 1, 2, 3)]:
        level = levels[b, m, y, x]
        assert torch.equal(out[b, m * 3 : (m + 1) * 3, y, x], stack[b, level, :, y, x])
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    grad = stack.grad
    expected = torch.zeros_like(stack)
    for m in range(2):  # reference: scatter each scale's weights onto its selected level
        one_hot = F.one_hot(levels[:, m], 5).permute(0, 3, 1, 2)[:, :, None]  # (B, N, 1, h, w)
        expected += one_hot * weights[:, m * 3 : (m + 1) * 3][:, None]
    assert torch.allclose(grad, expected)
    assert torch.count_nonzero(grad[:, 1]) == 0  # never selected: no gradient at all
    assert torch.count_nonzero(grad[:, 4, :, :, 1:]) == 0  # only where selected


def _tiny_model(selection: str, **kwargs) -> ScaleSelectionSegmentor:
    torch.manual_seed(0)
    return ScaleSelectionSegmentor(
        TinyBackbone(), num_classes=3, selection=selection, hidden_channels=8, **kwargs
    )


def test_extractor_gradient_comes_only_from_selected_levels():
    """Eval mode (fixed BN): with every pixel selecting level 0 the depth model equals a
    FixedScales model reading level 0 three times, in output and in extractor gradient. (That the
    pyramid's unselected levels get exactly zero gradient is the next test's.)"""
    images = torch.randn(1, 3, 45, 61)
    far = torch.full((1, 45, 61), 0.5)  # s < 1 for every reference scale: level 0 everywhere
    depth = _tiny_model("depth").eval()
    fixed = _tiny_model("fixed", fixed_levels=(0, 0, 0)).eval()
    fixed.load_state_dict(depth.state_dict())
    out_depth = depth(images, far, BASELINE)
    out_fixed = fixed(images)
    assert torch.allclose(out_depth, out_fixed)
    out_depth.square().sum().backward()
    out_fixed.square().sum().backward()
    for (name, p_depth), p_fixed in zip(
        depth.pyramid.backbone.named_parameters(), fixed.pyramid.backbone.parameters(), strict=True
    ):
        assert torch.allclose(p_depth.grad, p_fixed.grad, rtol=1e-4, atol=1e-5), name


def test_unselected_levels_of_the_pyramid_get_zero_gradient():
    model = _tiny_model("depth").eval()
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["stack"] = output

    model.pyramid.register_forward_hook(keep)
    images = torch.randn(1, 3, 48, 64)
    disparity = torch.full((1, 48, 64), _disparity_for(ALPHA**2, 4.0))  # 4 m -> level 2
    disparity[:, :, 32:] = 0.0  # invalid: fallback level 0
    levels = model.selected_levels(disparity, BASELINE, (48, 64))
    selected = set(levels.unique().tolist())
    model(images, disparity, BASELINE).sum().backward()
    grad = captured["stack"].grad  # (1, 8, C, 6, 8)
    for level in range(8):
        touched = torch.count_nonzero(grad[:, level]) > 0
        assert touched == (level in selected), (level, selected)
    assert 2 in selected and 0 in selected and len(selected) < 8


# ---------------------------------------------------------------- pyramid


def test_pyramid_sizes_follow_alpha():
    sizes = pyramid_sizes(1024, 2048, alpha=1.3, num_levels=8)
    assert sizes[0] == (1024, 2048) and sizes[1] == (788, 1575)
    assert sizes[7] == (round(1024 / 1.3**7), round(2048 / 1.3**7)) == (163, 326)
    assert pyramid_sizes(5, 5, alpha=2.0, num_levels=5)[-1] == (1, 1)


def test_pyramid_stacks_all_levels_on_level0_grid_and_keeps_them_aligned():
    class CellMeans(Backbone):
        """Features = the image averaged over 8x8 and 16x16 cells (no parameters)."""

        feature_info = [FeatureInfo(8, 3, "pool8"), FeatureInfo(16, 3, "pool16")]

        def forward(self, images):
            return {8: F.avg_pool2d(images, 8), 16: F.avg_pool2d(images, 16)}

    height, width = 93, 131
    ramp = torch.linspace(0, 1, width).expand(1, 3, height, width)  # horizontal ramp
    pyramid = PyramidExtractor(CellMeans(), feature_strides=(8, 16), alpha=ALPHA, num_levels=8)
    stack = pyramid(ramp)
    grid = (math.ceil(height / 8), math.ceil(width / 8))
    assert stack.shape == (1, 8, 6, *grid)
    # Every level sees the same ramp; a cell of level l spans 8 * alpha^l input pixels, so its
    # value differs from level 0's by less than one such cell of the ramp (slope 1 / width).
    # Compared where level 0's cell centre lies in a cell of level l without padding.
    sizes = pyramid_sizes(height, width, alpha=ALPHA, num_levels=8)
    for level in range(1, 8):
        level_h, level_w = sizes[level]
        rows = (torch.arange(grid[0]) + 0.5) * 8 * level_h / height < (level_h // 8) * 8
        cols = (torch.arange(grid[1]) + 0.5) * 8 * level_w / width < (level_w // 8) * 8
        rows &= torch.arange(grid[0]) < height // 8  # level 0's own padded row and column
        cols &= torch.arange(grid[1]) < width // 8
        assert rows.any() and cols.any()
        diff = (stack[0, level, 0] - stack[0, 0, 0])[rows][:, cols].abs().max().item()
        tolerance = 8 * ALPHA**level / width
        assert diff <= tolerance, (level, diff, tolerance)


def test_pyramid_refuses_strides_the_backbone_does_not_declare():
    with pytest.raises(ValueError, match="feature_strides 4 not among features"):
        PyramidExtractor(TinyBackbone(), feature_strides=(4, 8))
    with pytest.raises(ValueError, match="out_stride 16 must divide"):
        PyramidExtractor(TinyBackbone(), feature_strides=(8,), out_stride=16)


# ---------------------------------------------------------------- the Table 3.1 variants


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_returns_input_size_scores_for_odd_sizes_and_trains(variant):
    torch.manual_seed(0)
    model = VARIANTS[variant](num_classes=5, hidden_channels=8)  # VGG-16 extractor
    images = torch.randn(2, 3, 37, 53)
    disparity = torch.rand(2, 37, 53) * 80
    disparity[0, :10] = 0.0
    baseline = torch.tensor([0.2, 0.5])
    model.eval()
    with torch.no_grad():
        assert model(images, disparity, baseline).shape == (2, 5, 37, 53)
    model.train()
    label = torch.randint(0, 5, (2, 37, 53))
    label[1, :4] = 255
    targets = {"label": label, "disparity": disparity, "stereo_baseline": baseline}
    loss = model.losses(images, targets)["loss_ce"]
    loss.backward()
    assert torch.isfinite(loss)
    assert model.classifier.conv7x7[0].weight.grad is not None
    assert model.pyramid.backbone.features[0].weight.grad.abs().sum() > 0


def test_variants_read_the_thesis_representations():
    widths = {
        name: VARIANTS[name](num_classes=2, hidden_channels=4).classifier.conv7x7[0].in_channels
        for name in VARIANTS
    }
    # relu5_3 512, pool3 256 (thesis 3.2.2); FixedScales and ScaleInvariant read 3 of them.
    assert widths == {
        "single5": 512,
        "single3+5": 768,
        "fixed_scales": 3 * 768,
        "scale_invariant": 3 * 768,
    }


def test_efficientnet_lite_features_serve_as_extractor():
    model = VARIANTS["scale_invariant"](
        num_classes=4, backbone=efficientnet_lite0(), hidden_channels=8
    ).eval()
    with torch.no_grad():
        scores = model(torch.randn(1, 3, 41, 59), torch.rand(1, 41, 59) * 50, 0.21)
    assert scores.shape == (1, 4, 41, 59)


def test_depth_selection_without_disparity_is_refused():
    model = _tiny_model("depth")
    with pytest.raises(ValueError, match="needs the disparity map"):
        model(torch.randn(1, 3, 32, 32))


# ---------------------------------------------------------------- class balancing (thesis 3.4)


def test_class_balanced_weights_on_a_hand_made_batch():
    # 2001 labelled pixels: class 0 x 1600, class 1 x 400, class 2 x 1, class 3 absent.
    label = torch.cat(
        [torch.zeros(1600), torch.ones(400), torch.full((1,), 2), torch.full((99,), 255)]
    ).long()
    label = label.view(2, 1, 1050)
    weights = class_balanced_weights(label, num_classes=4)
    total = 2001
    assert torch.allclose(weights[:2], torch.tensor([total / 1600, total / 400]))
    assert weights[2].item() == 1000.0  # 1 / p = 2001, capped at 10^3
    assert weights[3].item() == 0.0  # absent from the batch
    assert class_balanced_weights(label, 4, max_weight=10.0)[2].item() == 10.0


def test_class_balanced_cross_entropy_weights_each_pixel_by_its_class():
    torch.manual_seed(0)
    scores = torch.randn(1, 3, 2, 3, requires_grad=True)
    label = torch.tensor([[[0, 0, 0], [0, 1, 255]]])  # p = 4/5, 1/5
    loss = class_balanced_cross_entropy(scores, label)
    per_pixel = F.cross_entropy(scores, label, ignore_index=255, reduction="none")
    weight = torch.tensor([[[5 / 4, 5 / 4, 5 / 4], [5 / 4, 5.0, 0.0]]])
    assert torch.allclose(loss, (per_pixel * weight).sum() / 5)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    nothing = class_balanced_cross_entropy(scores, torch.full((1, 2, 3), 255))
    assert nothing.item() == 0.0
