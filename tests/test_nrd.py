"""NRD head (parameter count, batched == per-cell loop), ASPP and the Table 1/3 baselines."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from leanseg.config import ModelConfig, load_config
from leanseg.models import build_segmentor, validate_model_config
from leanseg.nn.backbones.base import FeatureInfo
from leanseg.nn.context.aspp import ASPP
from leanseg.nn.heads.carafe import CARAFE
from leanseg.nn.heads.duc import DUCHead
from leanseg.nn.heads.nrd import NRDHead, expanded_forward, nrd_num_parameters
from leanseg.profiling.flops import count_flops

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "nrd"
INFO = [FeatureInfo(4, 6, "layer1"), FeatureInfo(32, 10, "layer4")]


def _features(batch: int, h: int, w: int, generator: torch.Generator) -> dict[int, torch.Tensor]:
    return {
        4: torch.randn(batch, 6, 8 * h, 8 * w, generator=generator, requires_grad=True),
        32: torch.randn(batch, 10, h, w, generator=generator, requires_grad=True),
    }


def _loop_grid_scores(head: NRDHead, features: dict[int, torch.Tensor]) -> torch.Tensor:
    """NRD section 2.2 written out literally: one 1x1-conv network per cell, cell by cell."""
    params = head.controller(features[head.in_stride])  # (B, P, h, w)
    batch, _, h, w = params.shape
    s = head.grid_size
    guidance = head.guidance_map(features, (h * s, w * s)) if head.use_guidance else None
    steps = torch.arange(s, dtype=params.dtype) / s
    coords = torch.stack([steps.view(1, s).expand(s, s), steps.view(s, 1).expand(s, s)])  # x, y
    shapes = head.mlp.layer_shapes
    rows = []
    for b in range(batch):
        row = []
        for i in range(h):
            cells = []
            for j in range(w):
                theta = params[b, :, i, j]
                weights, offset = [], 0
                for out_ch, in_ch in shapes:
                    weights.append(theta[offset : offset + out_ch * in_ch].view(out_ch, in_ch))
                    offset += out_ch * in_ch
                biases = []
                for out_ch, _ in shapes:
                    biases.append(theta[offset : offset + out_ch])
                    offset += out_ch
                assert offset == theta.numel()
                inputs = []
                if head.use_coords:
                    inputs.append(coords)
                if guidance is not None:
                    inputs.append(guidance[b, :, i * s : (i + 1) * s, j * s : (j + 1) * s])
                x = torch.cat(inputs).unsqueeze(0)  # (1, C_in, s, s)
                for k, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
                    x = F.conv2d(x, weight[:, :, None, None], bias)
                    if k < len(shapes) - 1:
                        x = F.relu(x)
                cells.append(x[0])
            row.append(torch.cat(cells, dim=2))
        rows.append(torch.cat(row, dim=1))
    return torch.stack(rows)


def test_paper_setting_has_899_dynamic_parameters():
    head = NRDHead(feature_info=INFO, num_classes=19, rep_channels=16, guidance_channels=16)
    assert head.num_dynamic_parameters == 899 == nrd_num_parameters(19)
    assert head.controller[-1].out_channels == 899


@pytest.mark.parametrize(
    ("classes", "c_r", "c_m", "coords", "guide"),
    [(19, 8, 16, True, True), (19, 32, 16, True, True), (19, 16, 8, True, True),
     (19, 16, 32, True, True), (19, 16, 16, True, False), (19, 16, 16, False, True),
     (150, 16, 16, True, True), (11, 4, 3, True, True)],
)  # fmt: skip
def test_dynamic_parameter_count_formula(classes, c_r, c_m, coords, guide):
    head = NRDHead(
        feature_info=INFO,
        num_classes=classes,
        rep_channels=c_r,
        guidance_channels=c_m,
        use_coords=coords,
        use_guidance=guide,
        controller_channels=None,
    )
    c_in = 2 * coords + c_m * guide
    expected = (c_in + 1) * c_r + (c_r + 1) * c_r + (c_r + 1) * classes
    assert (
        head.num_dynamic_parameters
        == expected
        == nrd_num_parameters(classes, c_r, c_m, coords, guide)
    )
    assert head.controller[-1].out_channels == expected


@pytest.mark.parametrize(
    ("coords", "guide", "grid"),
    [(True, True, 8), (True, False, 8), (False, True, 8), (True, True, 4)],
)
def test_batched_equals_per_cell_loop_forward_and_backward(coords, guide, grid):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = NRDHead(
        feature_info=INFO,
        num_classes=5,
        controller_channels=12,
        rep_channels=6,
        guidance_channels=4,
        guidance_mid_channels=7,
        grid_size=grid,
        use_coords=coords,
        use_guidance=guide,
    ).eval()
    features = _features(2, 3, 2, generator)
    batched = head.grid_scores(features)
    looped = _loop_grid_scores(head, features)
    assert batched.shape == looped.shape == (2, 5, 3 * grid, 2 * grid)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)

    upstream = torch.randn(batched.shape, generator=generator)
    inputs = [features[4], features[32], *head.parameters()]
    grads_batched = torch.autograd.grad((batched * upstream).sum(), inputs, allow_unused=True)
    grads_looped = torch.autograd.grad((looped * upstream).sum(), inputs, allow_unused=True)
    for g_b, g_l in zip(grads_batched, grads_looped, strict=True):
        assert (g_b is None) == (g_l is None)
        if g_b is not None:
            torch.testing.assert_close(g_b, g_l, atol=1e-5, rtol=1e-5)


def test_expanded_reference_style_forward_matches():
    generator = torch.Generator().manual_seed(1)
    head = NRDHead(feature_info=INFO, num_classes=3, controller_channels=8).eval()
    features = _features(1, 2, 3, generator)
    torch.testing.assert_close(
        expanded_forward(head, features), head.grid_scores(features), atol=1e-5, rtol=1e-5
    )


def test_dynamic_mlp_flops_are_counted():
    head = NRDHead(feature_info=INFO, num_classes=19, controller_channels=None)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head({4: x[:, :6], 32: F.avg_pool2d(x[:, :10], 8)}, (64, 96))

    flops = count_flops(Wrapper(), torch.randn(1, 10, 16, 24))
    # 2 x 3 cells of 8 x 8 grid points, 848 weights each (NRD section 2.2).
    assert flops.by_module["head.mlp"] == 16 * 24 * 848


@pytest.mark.parametrize("variant", [{}, {"use_guidance": False}, {"grid_size": 4}])
def test_segmentor_with_aspp_and_nrd_on_odd_sizes(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone={"name": "resnet18"},
        context={"name": "aspp", "out_channels": 32},
        head={"name": "nrd", "controller_channels": 16, **variant},
    )
    model = build_segmentor(cfg, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 70)).shape == (1, 4, 33, 70)


def test_aspp_declares_its_output():
    aspp = ASPP(feature_info=INFO, out_channels=8, dilations=(1, 2, 3)).eval()
    out = aspp({4: torch.randn(1, 6, 16, 24), 32: torch.randn(1, 10, 2, 3)})
    assert [(i.stride, i.channels) for i in aspp.feature_info] == [(4, 6), (32, 8)]
    assert out[32].shape == (1, 8, 2, 3) and out[4].shape == (1, 6, 16, 24)


def test_carafe_reassembly_matches_definition():
    torch.manual_seed(0)
    up = CARAFE(3, scale=2, compressed_channels=4, up_kernel=3)
    x = torch.randn(1, 3, 3, 4)
    out = up(x)
    kernels = F.pixel_shuffle(up.encoder(up.compressor(x)), 2).softmax(dim=1)  # (1, 9, 6, 8)
    padded = F.pad(x, (1, 1, 1, 1))
    expected = torch.zeros(1, 3, 6, 8)
    for i in range(6):
        for j in range(8):
            patch = padded[0, :, i // 2 : i // 2 + 3, j // 2 : j // 2 + 3].reshape(3, 9)
            expected[0, :, i, j] = patch @ kernels[0, :, i, j]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_duc_depth_to_space_full_resolution():
    head = DUCHead(feature_info=INFO, num_classes=3, out_stride=1, kernel_size=1)
    features = torch.randn(2, 10, 2, 3)
    with torch.no_grad():
        scores = head({32: features}, (64, 96))
    assert scores.shape == (2, 3, 64, 96)
    # Depth-to-space written out: the 1x1 convolution's output channel c * 32^2 + p * 32 + q at
    # feature cell (i, j) is the score of class c at pixel (32 i + p, 32 j + q), nothing
    # interpolated.
    weight = head.conv.weight[:, :, 0, 0].view(3, 32, 32, 10)  # (c, p, q, in)
    bias = head.conv.bias.view(3, 32, 32)
    with torch.no_grad():
        cells = torch.einsum("cpqk,bkij->bcipjq", weight, features)
        cells = cells + bias[None, :, None, :, None, :]
    torch.testing.assert_close(scores, cells.reshape(2, 3, 64, 96))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_nrd_configs_validate(path):
    cfg = load_config(path)
    validate_model_config(cfg.model)
