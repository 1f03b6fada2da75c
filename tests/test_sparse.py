"""Submanifold sparse convolution vs dense convolution on a masked tensor (QGN eq. 10-11)."""

import pytest
import torch
import torch.nn.functional as F

from leanseg.nn.sparse import DENSE_FRACTION, SparseBatchNorm, SparseTensor, SubmConv2d


def _masked_input(seed=0, b=2, c=5, h=9, w=11, p=0.4):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(b, h, w, generator=g) < p
    return dense, mask


@pytest.mark.parametrize("algorithm", ["gather", "offset", "dense", "auto"])
@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_subm_conv_matches_masked_dense(kernel_size, p, algorithm):
    dense, mask = _masked_input(p=p)
    conv = SubmConv2d(5, 7, kernel_size, algorithm=algorithm).double()
    x = SparseTensor.from_dense(dense, mask)
    x.features.requires_grad_(True)
    out = conv(x)
    dense_in = (dense * mask[:, None]).requires_grad_(True)
    ref = F.conv2d(dense_in, conv.weight, conv.bias, padding=kernel_size // 2)
    ref_sites = ref.permute(0, 2, 3, 1)[mask]
    torch.testing.assert_close(out.features, ref_sites, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ref_sites)
    grads = torch.autograd.grad(out.features, [x.features, conv.weight, conv.bias], g)
    ref_grads = torch.autograd.grad(ref_sites, [dense_in, conv.weight, conv.bias], g)
    torch.testing.assert_close(grads[0], ref_grads[0].permute(0, 2, 3, 1)[mask])
    torch.testing.assert_close(grads[1], ref_grads[1])
    torch.testing.assert_close(grads[2], ref_grads[2])


@pytest.mark.parametrize("algorithm", ["gather", "offset", "dense"])
def test_gradcheck_small(algorithm):
    dense, mask = _masked_input(c=2, h=4, w=5, p=0.6)
    x = SparseTensor.from_dense(dense, mask)
    # Sites in a non-raster order, as after eq. 11 upsampling.
    order = torch.randperm(x.num_sites, generator=torch.Generator().manual_seed(3))
    x = SparseTensor(x.coords[order], x.features[order], x.spatial_shape)
    conv = SubmConv2d(2, 3, algorithm=algorithm).double()
    feats = x.features.clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)

    def run(f, w):
        return torch.func.functional_call(conv, {"weight": w}, (x.replace(f),)).features

    assert torch.autograd.gradcheck(run, (feats, weight))


def test_auto_algorithm_goes_dense_from_the_threshold():
    conv = SubmConv2d(2, 2)
    dense = torch.zeros(1, 2, 10, 10)
    flat = torch.zeros(100, dtype=torch.bool)
    n = round(DENSE_FRACTION * 100)
    flat[:n] = True
    assert conv.choose_algorithm(SparseTensor.from_dense(dense, flat.view(1, 10, 10))) == "dense"
    flat[n - 1] = False
    assert conv.choose_algorithm(SparseTensor.from_dense(dense, flat.view(1, 10, 10))) == "gather"
    with pytest.raises(ValueError, match="algorithm"):
        SubmConv2d(2, 2, algorithm="fast")


def test_upsample_eq11_and_scatter_roundtrip():
    dense, mask = _masked_input()
    x = SparseTensor.from_dense(dense, mask)
    torch.testing.assert_close(x.to_dense(), dense * mask[:, None])
    up = x.upsample().to_dense()
    ref = F.interpolate(dense * mask[:, None], scale_factor=2, mode="nearest")
    torch.testing.assert_close(up, ref)
    sub = x.select(x.features[:, 0] > 0)
    assert sub.num_sites == int((x.features[:, 0] > 0).sum())


def test_sparse_bn_handles_one_and_zero_sites():
    bn = SparseBatchNorm(4).train()
    for n in (0, 1, 3):
        x = SparseTensor(torch.zeros(n, 3, dtype=torch.long), torch.randn(n, 4), (1, 2, 2))
        out = bn(x)
        out.features.sum().backward()
        assert out.features.shape == (n, 4)
