"""Sparse tensors and submanifold convolution (``leanseg.nn.sparse``, QGN eq. 9-11): what the
comparison with a masked dense convolution leaves open.

Written against the survivors of mutation testing
(``benchmarks/robustness/mutation.py --module sparse``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leanseg.nn import sparse
from leanseg.nn.sparse import (
    SparseBatchNorm,
    SparseReLU,
    SparseSequential,
    SparseTensor,
    SubmConv2d,
    neighbour_table,
)


def _input(seed=0, b=2, c=3, h=6, w=7, p=0.5):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(b, h, w, generator=g) < p
    return dense, mask


@pytest.mark.parametrize("algorithm", ["gather", "offset"])
@pytest.mark.parametrize("block_bytes", [1, 200, 1000])
def test_results_do_not_depend_on_the_row_blocks(monkeypatch, algorithm, block_bytes):
    """The gathered (n, 9C) matrix is processed in row blocks of ``BLOCK_BYTES``: blocks of one
    row, of a few rows with a remainder, or one block give the same outputs and gradients."""
    dense, mask = _input()
    x = SparseTensor.from_dense(dense, mask)
    conv = SubmConv2d(3, 4, algorithm=algorithm).double()
    feats = x.features.clone().requires_grad_(True)
    reference = conv(x.replace(feats))
    grads = torch.autograd.grad(reference.features.sum(), [feats, conv.weight])
    monkeypatch.setattr(sparse, "BLOCK_BYTES", block_bytes)
    feats2 = x.features.clone().requires_grad_(True)
    out = conv(x.replace(feats2))
    torch.testing.assert_close(out.features, reference.features)
    grads2 = torch.autograd.grad(out.features.sum(), [feats2, conv.weight])
    torch.testing.assert_close(grads2[0], grads[0])
    torch.testing.assert_close(grads2[1], grads[1])


def test_neighbour_table_marks_absent_neighbours_with_n():
    """Row ``i``, column ``k``: the row of site ``i``'s neighbour at 3x3 offset ``k`` (row-major,
    centre ``k = 4``), or ``N`` where that neighbour is not active."""
    coords = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]])
    table = neighbour_table(coords, (2, 2, 2))
    assert table.dtype == torch.int32
    n = 4
    assert table[0].tolist() == [n, n, n, n, 0, 1, n, n, 2]
    assert table[1].tolist() == [n, n, n, 0, 1, n, n, 2, n]
    assert table[2].tolist() == [0, 1, n, n, 2, n, n, n, n]
    assert table[3].tolist() == [n, n, n, n, 3, n, n, n, n]  # another image: no neighbours


def test_sites_of_a_whole_map_and_cached_tables():
    dense = torch.arange(12.0).view(1, 3, 2, 2)
    x = SparseTensor.from_dense(dense)
    assert x.num_sites == 4 and x.spatial_shape == (1, 2, 2)
    assert x.coords.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert x.features[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert x.linear_index().tolist() == [0, 1, 2, 3]
    assert x.neighbours() is x.neighbours() and x.linear_index() is x.linear_index()
    y = x.replace(x.features * 2)
    assert y.neighbours() is x.neighbours() and y.linear_index() is x.linear_index()
    assert torch.equal(y.to_dense(), dense * 2)


def test_linear_index_runs_over_batch_rows_and_columns():
    coords = torch.tensor([[1, 2, 3], [0, 1, 0]])
    x = SparseTensor(coords, torch.zeros(2, 1), (2, 3, 5))
    assert x.linear_index().tolist() == [(1 * 3 + 2) * 5 + 3, 5]


def test_select_takes_indices_too():
    dense, mask = _input()
    x = SparseTensor.from_dense(dense, mask)
    sub = x.select(torch.tensor([2, 0]))
    assert sub.coords.tolist() == x.coords[[2, 0]].tolist()
    assert torch.equal(sub.features, x.features[[2, 0]]) and sub.spatial_shape == x.spatial_shape


def test_upsampled_children_come_in_raster_order():
    """QGN eq. 11: site ``i`` spawns rows ``4i .. 4i+3`` at (2y, 2x), (2y, 2x+1), (2y+1, 2x),
    (2y+1, 2x+1), each with the parent's features."""
    x = SparseTensor(torch.tensor([[1, 2, 3]]), torch.tensor([[5.0, 6.0]]), (2, 4, 5))
    up = x.upsample()
    assert up.spatial_shape == (2, 8, 10)
    assert up.coords.tolist() == [[1, 4, 6], [1, 4, 7], [1, 5, 6], [1, 5, 7]]
    assert up.features.tolist() == [[5.0, 6.0]] * 4


def test_conv_refuses_other_kernels_and_builds_like_conv2d():
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3, got 5"):
        SubmConv2d(2, 2, kernel_size=5)
    with pytest.raises(ValueError, match=r"algorithm must be one of .*, got 'fast'"):
        SubmConv2d(2, 2, algorithm="fast")
    conv = SubmConv2d(4, 6)
    assert conv.weight.shape == (6, 4, 3, 3) and conv.bias.shape == (6,)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4, 6, 3)
    assert SubmConv2d(4, 6, bias=False).bias is None
    assert dict(conv.state_dict()).keys() == dict(torch.nn.Conv2d(4, 6, 3).state_dict()).keys()


def test_conv_weights_start_kaiming_normal_with_fan_out():
    """``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: std sqrt(2 / (Cout * 9))."""
    torch.manual_seed(0)
    conv = SubmConv2d(64, 128)
    expected = (2 / (128 * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(conv.weight.mean().item()) < 0.1 * expected


@pytest.mark.parametrize("algorithm", ["gather", "offset", "dense"])
def test_conv_without_bias_is_the_masked_dense_conv(algorithm):
    dense, mask = _input(p=0.6)
    conv = SubmConv2d(3, 2, bias=False, algorithm=algorithm).double()
    out = conv(SparseTensor.from_dense(dense, mask))
    ref = F.conv2d(dense * mask[:, None], conv.weight, padding=1)
    torch.testing.assert_close(out.features, ref.permute(0, 2, 3, 1)[mask])


def test_explicit_algorithms_are_run_whatever_the_share_of_sites():
    full = SparseTensor.from_dense(torch.zeros(1, 2, 3, 3))
    assert SubmConv2d(2, 2, algorithm="gather").choose_algorithm(full) == "gather"
    assert SubmConv2d(2, 2, algorithm="offset").choose_algorithm(full) == "offset"
    assert SubmConv2d(2, 2).choose_algorithm(full) == "dense"


def test_flops_count_sites_or_the_whole_grid():
    """Multiply-adds: sites x Cin x Cout x k^2, over the whole grid when conv2d ran."""
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[0, :2, :3] = True  # 6 of 40 sites
    x = SparseTensor.from_dense(torch.zeros(2, 3, 4, 5), mask)
    conv = SubmConv2d(3, 7)
    assert conv.flops((x,), conv(x)) == 6 * 3 * 7 * 9
    dense = SubmConv2d(3, 7, algorithm="dense")
    assert dense.flops((x,), dense(x)) == 40 * 3 * 7 * 9
    pointwise = SubmConv2d(3, 7, kernel_size=1, algorithm="dense")
    assert pointwise.flops((x,), pointwise(x)) == 6 * 3 * 7


def test_batch_norm_in_training_normalises_over_the_sites():
    bn = SparseBatchNorm(2).train()
    feats = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])
    out = bn(SparseTensor(torch.zeros(3, 3, dtype=torch.long), feats, (1, 2, 2))).features
    expected = (feats - feats.mean(0)) / torch.sqrt(feats.var(0, unbiased=False) + bn.eps)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(bn.running_mean, 0.1 * feats.mean(0))


def test_batch_norm_of_one_site_uses_and_keeps_the_running_statistics():
    """Fewer than two sites in training: normalised with the running statistics, which stay as
    they are (no update from one site), and the affine parameters still get gradients."""
    bn = SparseBatchNorm(2).train()
    bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -0.5]))
    feats = torch.tensor([[3.0, 0.0]])
    out = bn(SparseTensor(torch.zeros(1, 3, dtype=torch.long), feats, (1, 2, 2))).features
    expected = (feats - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    torch.testing.assert_close(out, expected + bn.bias)
    assert bn.running_mean.tolist() == [1.0, -1.0] and bn.running_var.tolist() == [4.0, 0.25]
    out.sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad.tolist() == [1.0, 1.0]
    bn.eval()
    out_eval = bn(SparseTensor(torch.zeros(1, 3, dtype=torch.long), feats, (1, 2, 2))).features
    torch.testing.assert_close(out_eval, out.detach())


def test_relu_and_sequential_keep_the_sites():
    x = SparseTensor(torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([[-1.0], [2.0]]), (1, 2, 2))
    out = SparseSequential(SparseReLU(), SparseReLU())(x)
    assert out.features.tolist() == [[0.0], [2.0]] and torch.equal(out.coords, x.coords)


@pytest.mark.parametrize("algorithm", ["gather", "offset"])
def test_gradients_flow_to_whichever_input_requires_them(algorithm):
    """A frozen layer still passes the gradient to its input, and a layer on an input that needs
    none still gets its weight gradient (the custom backward returns None for the other)."""
    dense, mask = _input(p=0.7)
    x = SparseTensor.from_dense(dense, mask)
    conv = SubmConv2d(3, 2, algorithm=algorithm).double()
    ref_in = (dense * mask[:, None]).requires_grad_(True)
    ref = F.conv2d(ref_in, conv.weight, conv.bias, padding=1).permute(0, 2, 3, 1)[mask]
    ref_grads = torch.autograd.grad(ref.sum(), [ref_in, conv.weight])
    conv.requires_grad_(False)
    feats = x.features.clone().requires_grad_(True)
    conv(x.replace(feats)).features.sum().backward()
    torch.testing.assert_close(feats.grad, ref_grads[0].permute(0, 2, 3, 1)[mask])
    conv.requires_grad_(True)
    conv(x).features.sum().backward()
    torch.testing.assert_close(conv.weight.grad, ref_grads[1])


@pytest.mark.parametrize("algorithm", ["gather", "offset"])
def test_row_blocks_write_their_own_rows_without_warnings(monkeypatch, algorithm):
    """Each row block is written into its own rows of the output (no resizing of ``out=``
    views, which PyTorch warns is going away)."""
    import warnings

    monkeypatch.setattr(sparse, "BLOCK_BYTES", 100)
    dense, mask = _input(p=0.8)
    x = SparseTensor.from_dense(dense, mask)
    conv = SubmConv2d(3, 4, algorithm=algorithm).double()
    feats = x.features.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x.replace(feats)).features.sum().backward()


@pytest.mark.parametrize(
    ("algorithm", "p", "last_step"),
    [
        ("gather", 0.3, "_SubmConv3x3Backward"),
        ("offset", 0.3, "_SubmConv3x3OffsetsBackward"),
        ("dense", 0.3, "IndexSelectBackward0"),  # gather the sites of conv2d's output
        ("auto", 0.3, "_SubmConv3x3Backward"),
        ("auto", 1.0, "IndexSelectBackward0"),
    ],
)
def test_the_chosen_algorithm_is_the_one_that_runs(algorithm, p, last_step):
    """The three algorithms give the same values (tests above), so the knob is checked by what
    ran: the autograd step that made the output (the benchmarks compare their speed)."""
    dense, mask = _input(p=p)
    conv = SubmConv2d(3, 2, bias=False, algorithm=algorithm).double()
    out = conv(SparseTensor.from_dense(dense, mask))  # the weight needs a gradient
    assert type(out.features.grad_fn).__name__ == last_step


def test_batch_norm_uses_batch_statistics_from_two_sites_and_its_own_eps():
    bn = SparseBatchNorm(1, eps=0.5).train()
    two = SparseTensor(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[1.0], [3.0]]), (1, 2, 2))
    expected = torch.tensor([[-1.0], [1.0]]) / (1 + 0.5) ** 0.5  # biased variance 1, eps 0.5
    torch.testing.assert_close(bn(two).features, expected)
    one = SparseTensor(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[2.0]]), (1, 2, 2))
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(0.5)
    torch.testing.assert_close(bn(one).features, torch.tensor([[1.0]]))  # (2 - 1) / sqrt(1)
