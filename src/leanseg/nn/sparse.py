"""Sparse tensors and submanifold sparse convolution in pure PyTorch (QGN eq. 9-11).

A :class:`SparseTensor` holds the active sites of a ``(B, C, H, W)`` activation as integer
coordinates ``(N, 3)`` = ``(batch, y, x)`` and a feature matrix ``(N, C)`` (QGN eq. 9). Submanifold
convolutions (QGN eq. 10) compute outputs at the active sites only, reading zeros where a
neighbour is not active, so they equal a dense convolution of the zero-masked input evaluated at
the active sites.

Implementation (CPU-friendly):

- A neighbour table ``(N, 9)`` is built once per set of sites from a padded int32 index grid and
  cached on the tensor; every 3x3 conv on that level reuses it. Absent neighbours point at row
  ``N``, an appended zero row.
- Forward gathers the 3x3 neighbourhood into an ``(n, 9C)`` block and does one matrix multiply,
  in row blocks of a few MiB. The custom autograd Function saves only the inputs and the table;
  backward is gathers + matmuls too: the neighbour relation is symmetric (``nbr[i, k] == j`` iff
  ``nbr[j, 8-k] == i``), so the input gradient is a 3x3 "conv" of the output gradient with the
  flipped, transposed kernel, and ``dW`` recomputes the gathered block instead of saving it.
- Two other algorithms compute the same function (``SubmConv2d(algorithm=...)``): ``"offset"``
  multiplies, per kernel offset, only the (site, neighbour) pairs that exist and adds them with
  ``index_add_`` — less work when sites have few active neighbours; ``"dense"`` scatters the
  sites into a zero ``(B, C, H, W)`` tensor, runs ``conv2d`` and gathers the active outputs —
  fastest when most sites are active. ``"auto"`` (default) takes ``"dense"`` from
  :data:`DENSE_FRACTION` (80 %) active sites up and ``"gather"`` below
  (``benchmarks/papers/qgn_sparse_conv.py --algorithms`` measures the three).

The index grid is int32 of size ``B x (H+2) x (W+2)``: 4 bytes per pixel, never a float
activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_BYTES = 4 * 2**20  # row blocks of the gathered (n, 9C) matrix, ~4 MiB each
# From this share of active sites on, "auto" runs a dense conv2d. Measured on 2 CPU threads
# (3x3, 64->64, 512x1024; docs/notes/issue-4.md): at 75 % active both take the same time and
# gather saves fewer bytes for backward, at 90 % conv2d is ~10 % faster.
DENSE_FRACTION = 0.8
ALGORITHMS = ("auto", "gather", "offset", "dense")
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # row-major 3x3 kernel order


@dataclass
class SparseTensor:
    """Active sites of a ``(B, C, H, W)`` activation (QGN eq. 9).

    Attributes:
        coords: int64 ``(N, 3)``: ``(batch, y, x)`` of each active site.
        features: ``(N, C)``.
        spatial_shape: ``(B, H, W)`` of the grid the sites live on.
    """

    coords: Tensor
    features: Tensor
    spatial_shape: tuple[int, int, int]
    _neighbours: Tensor | None = field(default=None, repr=False)
    _linear: Tensor | None = field(default=None, repr=False)

    @property
    def num_sites(self) -> int:
        return int(self.coords.shape[0])

    def replace(self, features: Tensor) -> SparseTensor:
        """Same sites (and cached neighbour table and linear index), new features."""
        return SparseTensor(
            self.coords, features, self.spatial_shape, self._neighbours, self._linear
        )

    def neighbours(self) -> Tensor:
        """int32 ``(N, 9)`` row indices of the 3x3 neighbours; ``N`` marks an absent one."""
        if self._neighbours is None:
            self._neighbours = neighbour_table(self.coords, self.spatial_shape)
        return self._neighbours

    def linear_index(self) -> Tensor:
        """int64 ``(N,)`` positions of the sites in a flattened ``(B, H, W)`` grid (cached, so
        every dense-algorithm conv on this level shares one index tensor)."""
        if self._linear is None:
            self._linear = _linear_index(self.coords, self.spatial_shape)
        return self._linear

    @classmethod
    def from_dense(cls, dense: Tensor, mask: Tensor | None = None) -> SparseTensor:
        """Sites of ``dense`` ``(B, C, H, W)`` where ``mask`` ``(B, H, W)`` is true (None: all)."""
        b, _, h, w = dense.shape
        if mask is None:
            mask = torch.ones((b, h, w), dtype=torch.bool, device=dense.device)
        coords = mask.nonzero()
        return cls(coords, gather_dense(dense, coords), (b, h, w))

    def to_dense(self) -> Tensor:
        """Scatter to ``(B, C, H, W)`` with zeros at inactive sites."""
        b, h, w = self.spatial_shape
        c = self.features.shape[1]
        flat = self.features.new_zeros((b * h * w, c))
        # index_put saves only the indices for backward (index_copy would also keep a copy).
        flat = flat.index_put((self.linear_index(),), self.features)
        return flat.view(b, h, w, c).permute(0, 3, 1, 2)

    def select(self, keep: Tensor) -> SparseTensor:
        """The subset of sites where ``keep`` ``(N,)`` (bool or indices) selects."""
        return SparseTensor(self.coords[keep], self.features[keep], self.spatial_shape)

    def upsample(self) -> SparseTensor:
        """QGN eq. 11: every site spawns its four children at twice the resolution.

        Children of site ``i`` are rows ``4i .. 4i+3`` in the order (0,0), (0,1), (1,0), (1,1).
        """
        b, h, w = self.spatial_shape
        offsets = self.coords.new_tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]])
        parent = self.coords * self.coords.new_tensor([1, 2, 2])
        coords = (parent.unsqueeze(1) + offsets).reshape(-1, 3)
        features = self.features.repeat_interleave(4, dim=0)
        return SparseTensor(coords, features, (b, 2 * h, 2 * w))


def _linear_index(coords: Tensor, shape: tuple[int, int, int]) -> Tensor:
    _, h, w = shape
    return (coords[:, 0] * h + coords[:, 1]) * w + coords[:, 2]


def gather_dense(dense: Tensor, coords: Tensor) -> Tensor:
    """Features ``(N, C)`` of a dense ``(B, C, H, W)`` tensor at ``coords`` ``(N, 3)``."""
    b, c, h, w = dense.shape
    flat = dense.permute(0, 2, 3, 1).reshape(b * h * w, c)
    return flat.index_select(0, _linear_index(coords, (b, h, w)))


def neighbour_table(coords: Tensor, spatial_shape: tuple[int, int, int]) -> Tensor:
    """``(N, 9)`` neighbour rows from a padded int32 index grid; ``N`` where absent."""
    b, h, w = spatial_shape
    n = coords.shape[0]
    grid = torch.full((b, h + 2, w + 2), n, dtype=torch.int32, device=coords.device)
    grid[coords[:, 0], coords[:, 1] + 1, coords[:, 2] + 1] = torch.arange(
        n, dtype=torch.int32, device=coords.device
    )
    columns = [
        grid[coords[:, 0], coords[:, 1] + 1 + dy, coords[:, 2] + 1 + dx] for dy, dx in _OFFSETS
    ]
    return torch.stack(columns, dim=1)  # int32: 36 bytes per site


def _rows_per_block(width: int, itemsize: int) -> int:
    return max(1, BLOCK_BYTES // max(1, width * itemsize))


def _gather_matmul(features: Tensor, nbr: Tensor, weight: Tensor) -> Tensor:
    """``out[i] = concat_k features[nbr[i, k]] @ weight`` with a zero row appended; row blocks."""
    padded = torch.cat([features, features.new_zeros((1, features.shape[1]))], dim=0)
    n = nbr.shape[0]
    out = features.new_empty((n, weight.shape[1]))
    step = _rows_per_block(weight.shape[0], features.element_size())
    for start in range(0, n, step):  # loop over row blocks, not pixels
        rows = nbr[start : start + step]
        block = padded.index_select(0, rows.reshape(-1)).view(rows.shape[0], -1)  # (n, 9C)
        torch.mm(block, weight, out=out[start : start + step])
    return out


def _flipped_transposed(weight: Tensor, cin: int) -> Tensor:
    """``(9*Cin, Cout)`` kernel -> ``(9*Cout, Cin)`` with offsets reversed: the input gradient's."""
    cout = weight.shape[1]
    return weight.view(9, cin, cout).flip(0).transpose(1, 2).reshape(9 * cout, cin)


class _SubmConv3x3(torch.autograd.Function):
    """Submanifold 3x3 conv: features ``(N, Cin)``, weight ``(9*Cin, Cout)``, table ``(N, 9)``."""

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, nbr: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(features, weight, nbr)
        return _gather_matmul(features, nbr, weight)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        features, weight, nbr = ctx.saved_tensors
        cin = features.shape[1]
        grad_in = grad_w = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            # Symmetric neighbours: grad_in[j] = sum_k grad_out[nbr[j, 8-k]] @ W_k^T.
            grad_in = _gather_matmul(grad_out, nbr, _flipped_transposed(weight, cin))
        if ctx.needs_input_grad[1]:
            padded = torch.cat([features, features.new_zeros((1, cin))], dim=0)
            grad_w = weight.new_zeros(weight.shape)
            step = _rows_per_block(weight.shape[0], features.element_size())
            for start in range(0, nbr.shape[0], step):
                rows = nbr[start : start + step]
                block = padded.index_select(0, rows.reshape(-1)).view(rows.shape[0], -1)
                grad_w.addmm_(block.t(), grad_out[start : start + step])
        return grad_in, grad_w, None


def _offset_pairs(nbr: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per kernel offset ``k``: rows ``i`` and neighbour rows ``nbr[i, k]`` of existing pairs."""
    absent = nbr.shape[0]
    pairs = []
    for k in range(9):  # loop over the 9 kernel offsets
        rows = (nbr[:, k] != absent).nonzero().squeeze(1)
        pairs.append((rows, nbr[rows, k].long()))
    return pairs


def _offset_matmul(features: Tensor, pairs: list, weight: Tensor) -> Tensor:
    """``out[i] = sum_k features[nbr[i, k]] @ W_k`` over existing pairs only (``index_add_``)."""
    cin = features.shape[1]
    kernels = weight.view(9, cin, weight.shape[1])
    out = features @ kernels[4]  # the centre offset: every site is its own neighbour
    for k, (rows, cols) in enumerate(pairs):
        if k != 4 and rows.numel():
            out.index_add_(0, rows, features.index_select(0, cols) @ kernels[k])
    return out


class _SubmConv3x3Offsets(torch.autograd.Function):
    """The ``"offset"`` algorithm of :class:`_SubmConv3x3`: same function, pairs per offset."""

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, nbr: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(features, weight, nbr)
        return _offset_matmul(features, _offset_pairs(nbr), weight)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        features, weight, nbr = ctx.saved_tensors
        cin, cout = features.shape[1], weight.shape[1]
        pairs = _offset_pairs(nbr)
        grad_in = grad_w = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            # Pair (i, j) at offset k is pair (j, i) at offset 8-k: the same pairs serve dX.
            grad_in = _offset_matmul(grad_out, pairs, _flipped_transposed(weight, cin))
        if ctx.needs_input_grad[1]:
            grad_w = weight.new_zeros((9, cin, cout))
            for k, (rows, cols) in enumerate(pairs):
                if rows.numel():
                    grad_w[k] = features.index_select(0, cols).t() @ grad_out.index_select(0, rows)
            grad_w = grad_w.view(9 * cin, cout)
        return grad_in, grad_w, None


class SubmConv2d(nn.Module):
    """Submanifold sparse convolution, kernel 3 or 1, stride 1 (QGN eq. 10).

    The weight is stored like ``nn.Conv2d``'s, ``(Cout, Cin, k, k)``, so dense and sparse layers
    exchange state dicts and a dense masked twin can be built for tests. ``algorithm`` picks how a
    3x3 kernel is computed (module docstring); every choice gives the same outputs and gradients.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        algorithm: str = "auto",
    ) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3, got {kernel_size}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.kernel_size == 1:
            out = F.linear(x.features, self.weight.view(self.out_channels, self.in_channels))
        elif self.choose_algorithm(x) == "dense":
            dense = F.conv2d(x.to_dense(), self.weight, padding=1)  # channels-last, no copy
            out = dense.permute(0, 2, 3, 1).reshape(-1, self.out_channels)
            out = out.index_select(0, x.linear_index())
        else:
            # (Cout, Cin, 3, 3) -> (9*Cin, Cout), rows ordered (offset, cin) as in the gather.
            weight = self.weight.permute(2, 3, 1, 0).reshape(
                9 * self.in_channels, self.out_channels
            )
            function = _SubmConv3x3Offsets if self.algorithm == "offset" else _SubmConv3x3
            out = function.apply(x.features, weight, x.neighbours())
        if self.bias is not None:
            out = out + self.bias
        return x.replace(out)

    def choose_algorithm(self, x: SparseTensor) -> str:
        """The algorithm this layer runs on ``x`` (``"auto"`` resolved by the share of sites)."""
        if self.algorithm != "auto":
            return self.algorithm
        b, h, w = x.spatial_shape
        return "dense" if x.num_sites >= DENSE_FRACTION * b * h * w else "gather"

    def flops(self, inputs: tuple, output: SparseTensor) -> int:
        """Fused multiply-adds done: at the active sites, or over the whole grid when the
        ``"dense"`` algorithm ran (the bench's counting convention)."""
        sites = output.num_sites
        if self.kernel_size == 3 and self.choose_algorithm(inputs[0]) == "dense":
            b, h, w = output.spatial_shape
            sites = b * h * w
        return sites * self.in_channels * self.out_channels * self.kernel_size**2


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active sites' features.

    With fewer than two active sites in training (possible with GTC / PC propagation) the
    running statistics are used, so the affine parameters still get gradients.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        feats = x.features
        if self.training and feats.shape[0] > 1:
            return x.replace(super().forward(feats))
        return x.replace(
            F.batch_norm(
                feats,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        )


class SparseReLU(nn.Module):
    """ReLU of the active sites' features."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.features))


class SparseSequential(nn.Sequential):
    """``nn.Sequential`` over :class:`SparseTensor` modules."""
