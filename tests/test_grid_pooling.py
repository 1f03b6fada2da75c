"""The pyramid-pooling contexts keep their outputs while pooling in an exportable way.

The reference below is the SPP / PSP-SPP forward as first written (``F.adaptive_avg_pool2d``
and Python's ``round`` for the square-cell columns); the modules must match it within 1e-6 at
odd sizes, including maps smaller than the finest grid and aspect ratios whose column count
falls on a half (round half to even).
"""

import pytest
import torch
import torch.nn.functional as F

from leanseg.models import BACKBONES, CONTEXTS
from leanseg.nn.context.spp import PSPSPP, SPP, pool_to_grid, square_grid

# (H, W) of F: odd, smaller than the 8-row grid, wide and tall, rows * W / H = k + 0.5.
MAP_SIZES = [(1, 1), (3, 5), (5, 3), (2, 5), (4, 9), (7, 11), (9, 23), (13, 6), (17, 31)]


def _reference_spp(module: SPP, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    size = x.shape[-2:]
    x = module.project(x)
    pooled, branches = [], [x]
    for rows, level in zip(module.grids, module.levels, strict=True):
        grid = (rows, max(1, round(rows * size[1] / size[0]))) if module.square_cells else rows
        p = level(F.adaptive_avg_pool2d(x, grid))
        pooled.append(p)
        branches.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
    return module.blend(torch.cat(branches, dim=1)), pooled


def _reference_psp(module: PSPSPP, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    size = x.shape[-2:]
    pooled = [
        level(F.adaptive_avg_pool2d(x, b))
        for b, level in zip(module.bins, module.levels, strict=True)
    ]
    up = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled]
    return module.blend(torch.cat([x, *up], dim=1)), pooled


def _randomise_bn(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        (
            "spp",
            {"bottleneck_channels": 32, "level_channels": 8, "out_channels": 16},
            _reference_spp,
        ),
        ("spp", {"bottleneck_channels": 32, "square_cells": False}, _reference_spp),
        ("psp_spp", {"out_channels": 16}, _reference_psp),
        ("psp_spp", {"unit": "conv_bn_relu", "fuse_kernel": 3}, _reference_psp),
    ],
)
def test_contexts_match_adaptive_pooling_reference(name, options, reference):
    torch.manual_seed(0)
    info = BACKBONES["resnet18"]().feature_info
    module = CONTEXTS[name](feature_info=info, **options)
    _randomise_bn(module)
    module.eval()  # train-mode BN over 2 pooled values would amplify 1-ulp sum differences
    for h, w in MAP_SIZES:
        x = torch.randn(2, info[-1].channels, h, w)
        features = {i.stride: torch.zeros(1) for i in info[:-1]} | {info[-1].stride: x}
        with torch.no_grad():
            out = module(features)
            expected, expected_pooled = reference(module, x)
        torch.testing.assert_close(out[module.in_stride], expected, rtol=0, atol=1e-6)
        for got, want in zip(out.pooled, expected_pooled, strict=True):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize(("h", "w"), MAP_SIZES)
def test_pool_to_grid_matches_adaptive_avg_pool2d_values_and_gradients(rows, h, w):
    _, cols = square_grid(rows, h, w)
    x = torch.randn(2, 3, h, w, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    got = pool_to_grid(x, rows, cols)
    want = F.adaptive_avg_pool2d(y, (rows, cols))
    # Means of up to 64 values summed in another order: float rounding of a few 1e-6.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    grad = torch.randn(2, 3, rows, cols)
    (got * grad).sum().backward()
    (want * grad).sum().backward()
    # A grid finer than the map sums up to 64 cell gradients per pixel, in another order than
    # torch's: up to 64 float32 roundings (64 x 1.2e-7 = 7.6e-6 relative).
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-6)


def test_square_grid_follows_traced_sizes():
    for h, w in MAP_SIZES:
        rows, cols = square_grid(4, torch.tensor(h), torch.tensor(w))
        assert (rows, int(cols)) == square_grid(4, h, w)


@pytest.mark.parametrize(("h", "w"), MAP_SIZES)
def test_square_grid_columns_round_half_to_even_and_stay_positive(h, w):
    for rows in (1, 2, 4, 8):
        assert square_grid(rows, h, w) == (rows, max(1, round(rows * w / h)))
