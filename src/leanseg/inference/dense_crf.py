"""Fully connected CRF post-processing with Gaussian edge potentials (thesis §3.4, its ref. [31]).

The thesis post-processes the scale-selection network's class probabilities with the fully
connected CRF of Krähenbühl and Koltun: unary potentials are ``-log p``, pairwise potentials are
a Potts compatibility times a weighted sum of two Gaussian kernels,

    k(i, j) = w1 exp(-|p_i - p_j|^2 / 2θα^2 - |I_i - I_j|^2 / 2θβ^2)     (appearance)
            + w2 exp(-|p_i - p_j|^2 / 2θγ^2)                               (smoothness)

with ``p`` pixel positions and ``I`` RGB colours, and inference is 10 iterations of mean field.
One mean-field update with the Potts model is ``Q = softmax(log p + Σ_m w_m K_m Q)``: the
message of a class from the other pixels raises that class (the Potts penalty of disagreeing
with them is constant over the classes of a pixel and cancels in the softmax).

How the two filters are computed, torch only (no compiled extension; choices where the papers
are silent are marked):

- Smoothness: an exact separable Gaussian convolution (truncated at 3θγ).
- Appearance: a 5-D bilateral filter over (x/θα, y/θα, r/θβ, g/θβ, b/θβ) on the permutohedral
  lattice of Adams, Baek and Davis (2010), as in Krähenbühl and Koltun's implementation: every
  pixel is splatted onto the d + 1 = 6 vertices of its enclosing simplex with barycentric
  weights, the occupied vertices are blurred with (1/4, 1/2, 1/4) along each of the 6 lattice
  directions, and values are sliced back with the same weights. Vectorised over pixels
  (``torch.unique`` hashes the vertices, ``searchsorted`` finds neighbours, slicing is one
  sparse matrix product).
- Normalisation (choice, as the reference implementation): each kernel is applied as
  ``D^-1/2 K D^-1/2`` with ``D`` the kernel's row sums (the filter of a map of ones), so the
  weights w1, w2 mean the same at any image size and the lattice's overall scale cancels. The
  sums include the pixel itself.

The thesis fixes w2 = 3, θγ = 3 and grid-searches w1 ∈ {5, 10}, θα ∈ {50..90}, θβ ∈ {3..9} on
Cityscapes; :class:`~leanseg.config.CRFConfig`'s defaults are the middle of that grid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from leanseg.config import CRFConfig

# Probabilities are floored here before the log, so a class the network rules out entirely
# can still be reached through its neighbours' messages.
_MIN_PROBABILITY = 1e-8


class DenseCRF:
    """Mean-field inference in the fully connected CRF (thesis §3.4).

    Args:
        params: weights, standard deviations and iterations (:class:`~leanseg.config.CRFConfig`,
            whose defaults are the middle of the thesis' grid).
        image_statistics: ``(mean, std)`` with which the model's input images were normalised
            (``(x / 255 - mean) / std``); needed by :meth:`refine_batch` to recover colours.
    """

    def __init__(
        self,
        params: CRFConfig | None = None,
        *,
        image_statistics: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        self.params = params or CRFConfig()
        self.image_statistics = image_statistics

    def __call__(self, probabilities: Tensor, image: Tensor) -> Tensor:
        """Refined class probabilities.

        Args:
            probabilities: ``float (C, H, W)`` per-pixel class probabilities (the unaries are
                their negative logs).
            image: ``(3, H, W)`` RGB in 0-255 (any dtype), the colours of the appearance kernel.

        Returns:
            ``float32 (C, H, W)`` probabilities after ``params.iterations`` mean-field updates.
        """
        params = self.params
        num_classes, height, width = probabilities.shape
        if tuple(image.shape) != (3, height, width):
            raise ValueError(
                f"the image is {tuple(image.shape)}, the probabilities need (3, {height}, {width})"
            )
        log_unary = probabilities.float().clamp_min(_MIN_PROBABILITY).log()  # -U, (C, H, W)
        q = torch.softmax(log_unary, dim=0)
        if params.iterations == 0:
            return q
        appearance = PermutohedralFilter(
            appearance_features(image, params.appearance_xy, params.appearance_rgb)
        )
        smoothness = GaussianSmoothing(params.smoothness_xy, height, width, probabilities.device)
        for _ in range(params.iterations):
            flat = q.reshape(num_classes, -1).T  # (H*W, C)
            message = params.appearance_weight * appearance(flat).T.reshape_as(q)
            message = message + params.smoothness_weight * smoothness(q)
            q = torch.softmax(log_unary + message, dim=0)
        return q

    def refine_batch(self, probabilities: Tensor, images: Tensor) -> Tensor:
        """:meth:`__call__` on each image of a batch: ``(B, C, H, W)`` probabilities and the
        ``(B, 3, H, W)`` normalised images the model saw."""
        if self.image_statistics is None:
            raise ValueError("DenseCRF.refine_batch needs image_statistics (mean, std)")
        mean, std = (
            torch.tensor(v, dtype=torch.float32, device=images.device).view(3, 1, 1)
            for v in self.image_statistics
        )
        rgb = ((images.float() * std + mean) * 255.0).clamp(0, 255)
        return torch.stack([self(p, image) for p, image in zip(probabilities, rgb, strict=True)])


def appearance_features(image: Tensor, xy_std: float, rgb_std: float) -> Tensor:
    """``(H*W, 5)`` features (x/θα, y/θα, r/θβ, g/θβ, b/θβ) of every pixel, row-major."""
    _, height, width = image.shape
    rows = torch.arange(height, dtype=torch.float32, device=image.device)
    cols = torch.arange(width, dtype=torch.float32, device=image.device)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    position = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2) / xy_std
    colour = image.float().reshape(3, -1).T / rgb_std
    return torch.cat([position, colour], dim=1)


class GaussianSmoothing:
    """Exact, symmetrically normalised Gaussian filter over pixel positions (the smoothness
    kernel): separable convolution truncated at 3σ, zero outside the image."""

    def __init__(self, std: float, height: int, width: int, device: torch.device) -> None:
        radius = max(1, math.ceil(3 * std))
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
        self.kernel = torch.exp(-(taps**2) / (2 * std**2))
        self.radius = radius
        ones = torch.ones(1, height, width, device=device)
        self.norm = self._filter(ones).clamp_min(1e-20).rsqrt()  # D^-1/2, (1, H, W)

    def _filter(self, maps: Tensor) -> Tensor:
        channels = maps.shape[0]
        x = maps.unsqueeze(0)  # (1, C, H, W)
        horizontal = self.kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        vertical = self.kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
        x = F.conv2d(x, horizontal, padding=(0, self.radius), groups=channels)
        x = F.conv2d(x, vertical, padding=(self.radius, 0), groups=channels)
        return x.squeeze(0)

    def __call__(self, maps: Tensor) -> Tensor:
        """``D^-1/2 K D^-1/2`` applied to ``(C, H, W)`` maps."""
        return self.norm * self._filter(maps * self.norm)


class PermutohedralFilter:
    """Gaussian filtering of values at points in d-D feature space (unit standard deviation)
    on the permutohedral lattice (Adams, Baek and Davis 2010), symmetrically normalised.

    Building it places the points on the lattice (the work that depends on the features
    only); each call filters a new ``(N, C)`` array of values at the same points.
    """

    def __init__(self, features: Tensor) -> None:
        num_points, d = features.shape
        self.num_points = num_points
        vertices, self.weights = _simplex_vertices(features.float())  # (d+1, N, d), (N, d+1)
        keys, self.range_min, self.radix = _linear_keys(vertices, margin=d + 1)
        self.lattice_keys, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
        self.vertex_index = inverse.view(d + 1, num_points)  # (d+1, N) rows of the lattice
        self.neighbours = self._neighbour_indices(d)
        # Slicing is a sparse N x (K+1) matrix of the barycentric weights, d+1 per row, laid
        # out point by point (so built without sorting); splatting its transpose, one scatter.
        self._splat_rows = self.vertex_index.T.reshape(-1)  # (N*(d+1),) point-major
        self.slice = _point_major_csr(self._splat_rows, self.weights, self.lattice_keys.numel() + 1)
        ones = torch.ones(num_points, 1, device=features.device)
        self.norm = self._filter(ones).clamp_min(1e-20).rsqrt()  # (N, 1)

    def _neighbour_indices(self, d: int) -> list[tuple[Tensor, Tensor]]:
        """For each of the d + 1 lattice directions, the rows of each vertex's two neighbours
        along it (-1 where the neighbour holds no point)."""
        size = self.lattice_keys.numel()
        coords = _coords_of_keys(self.lattice_keys, self.range_min, self.radix)  # (K, d)
        out = []
        for direction in range(d + 1):
            # Moving along lattice direction j adds (d+1)e_j - 1 to the (d+1)-D coordinates;
            # only the first d are stored, so direction d shifts all of them by -1.
            step = torch.full((d,), -1, dtype=torch.long, device=coords.device)
            if direction < d:
                step[direction] = d
            pair = []
            for sign in (1, -1):
                key = _keys_of_coords(coords + sign * step, self.range_min, self.radix)
                row = torch.searchsorted(self.lattice_keys, key).clamp_max(size - 1)
                found = self.lattice_keys[row] == key
                pair.append(torch.where(found, row, torch.full_like(row, -1)))
            out.append((pair[0], pair[1]))
        return out

    def _filter(self, values: Tensor) -> Tensor:
        """Splat, blur, slice: ``(N, C)`` -> ``(N, C)`` (unnormalised)."""
        weighted = (self.weights[:, :, None] * values[:, None, :]).flatten(0, 1)  # (N*(d+1), C)
        lattice = values.new_zeros(self.lattice_keys.numel() + 1, values.shape[1])
        lattice.index_add_(0, self._splat_rows, weighted)  # the last row, no vertex's, stays 0
        for forward, backward in self.neighbours:
            # (1/4, 1/2, 1/4) along one direction; index -1 reads the zero row.
            blurred = 0.5 * lattice[:-1] + 0.25 * (lattice[forward] + lattice[backward])
            lattice = torch.cat([blurred, lattice[-1:]])
        return self.slice @ lattice

    def __call__(self, values: Tensor) -> Tensor:
        """``D^-1/2 K D^-1/2`` applied to ``(N, C)`` values at the points."""
        return self.norm * self._filter(values * self.norm)


def _point_major_csr(columns: Tensor, weights: Tensor, num_columns: int) -> Tensor:
    """The ``(N, num_columns)`` CSR matrix whose row n holds ``weights[n]`` at
    ``columns[n*(d+1) : (n+1)*(d+1)]``."""
    num_points, per_row = weights.shape
    crow = torch.arange(0, num_points * per_row + 1, per_row, device=weights.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            crow, columns, weights.reshape(-1), (num_points, num_columns), check_invariants=False
        )


def _simplex_vertices(features: Tensor) -> tuple[Tensor, Tensor]:
    """The lattice vertices around each point and its barycentric weights.

    Adams et al. (2010) §3: the d-D point is scaled and embedded in the hyperplane
    ``H_d = {x in R^(d+1): Σx = 0}``, the nearest remainder-0 lattice point is found by
    rounding each coordinate to a multiple of d + 1 and fixing the sum, the coordinates' order
    of differences (their rank) names the enclosing simplex, whose vertex r is the remainder-0
    point plus the canonical offset of remainder r.

    Returns:
        ``(d+1, N, d)`` integer coordinates of the vertices (the (d+1)-th is implied by the
        zero sum) and ``(N, d+1)`` barycentric weights.
    """
    num_points, d = features.shape
    device = features.device
    # Scale so that lattice blurring is a Gaussian of unit standard deviation in feature
    # space: sqrt(2/3)(d+1), divided per axis by sqrt((i+1)(i+2)) of the embedding.
    index = torch.arange(1, d + 1, dtype=torch.float32, device=device)
    scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt(index * (index + 1))
    scaled = features * scale  # (N, d)
    # Embedding E: elevated[i] = Σ_{j>=i} scaled[j] - i * scaled[i-1] (elevated[0] = Σ scaled).
    suffix = torch.flip(torch.cumsum(torch.flip(scaled, [1]), 1), [1])  # Σ_{j>=i} scaled[j]
    elevated = torch.zeros(num_points, d + 1, device=device)
    elevated[:, 0] = suffix[:, 0]
    elevated[:, 1:] = torch.cat([suffix[:, 1:], scaled.new_zeros(num_points, 1)], 1) - (
        index * scaled
    )
    # Nearest remainder-0 point (all coordinates multiples of d+1).
    down = torch.floor(elevated / (d + 1)) * (d + 1)
    up = down + (d + 1)
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    excess = torch.round(rem0.sum(1) / (d + 1)).long()  # (N,) how far off the hyperplane
    # rank[i]: how many coordinates have a larger difference (ties: the earlier one first).
    difference = elevated - rem0
    larger = difference[:, None, :] > difference[:, :, None]  # (N, i, j): d_j > d_i
    tied_before = (difference[:, None, :] == difference[:, :, None]) & torch.ones(
        d + 1, d + 1, dtype=torch.bool, device=device
    ).tril(-1)  # d_j == d_i with j < i
    rank = (larger | tied_before).sum(-1)  # (N, d+1)
    # Put the point back on the plane: move the `excess` largest-rank (smallest difference)
    # coordinates down by d+1 (or the smallest-rank up, when the excess is negative).
    excess_col = excess.unsqueeze(1)
    too_high = (excess_col > 0) & (rank >= d + 1 - excess_col)
    too_low = (excess_col < 0) & (rank < -excess_col)
    rem0 = rem0 - (d + 1) * too_high + (d + 1) * too_low
    rank = rank + excess_col - (d + 1) * too_high + (d + 1) * too_low
    difference = elevated - rem0
    # Barycentric weights: each coordinate's difference / (d+1) moves weight between the
    # vertices its rank separates.
    delta = difference / (d + 1)
    barycentric = torch.zeros(num_points, d + 2, device=device)
    barycentric.scatter_add_(1, d - rank, delta)
    barycentric.scatter_add_(1, d + 1 - rank, -delta)
    barycentric[:, 0] += 1.0 + barycentric[:, d + 1]
    weights = barycentric[:, : d + 1]
    # Vertex r: rem0 + canonical offset, r at coordinates of rank <= d - r, r - (d+1) after.
    remainders = torch.arange(d + 1, device=device).view(-1, 1, 1)  # (d+1, 1, 1)
    rank_d = rank[:, :d].unsqueeze(0)  # (1, N, d)
    offset = torch.where(rank_d <= d - remainders, remainders, remainders - (d + 1))
    vertices = rem0[:, :d].long().unsqueeze(0) + offset  # (d+1, N, d)
    return vertices, weights


def _linear_keys(vertices: Tensor, margin: int) -> tuple[Tensor, Tensor, Tensor]:
    """One int64 per vertex (mixed radix over the coordinate ranges, widened by ``margin`` so
    that neighbours have keys too), with the range minimum and the radix to invert it."""
    flat = vertices.reshape(-1, vertices.shape[-1])
    range_min = flat.min(0).values - margin
    radix = flat.max(0).values + margin - range_min + 1
    if math.prod(float(v) for v in radix.tolist()) >= 2.0**62:
        raise ValueError(
            "the CRF's appearance features span too wide a lattice; use larger standard "
            "deviations (appearance_xy, appearance_rgb)"
        )
    return _keys_of_coords(vertices, range_min, radix), range_min, radix


def _keys_of_coords(coords: Tensor, range_min: Tensor, radix: Tensor) -> Tensor:
    shifted = coords - range_min
    key = torch.zeros(shifted.shape[:-1], dtype=torch.long, device=coords.device)
    for axis in range(coords.shape[-1]):
        key = key * radix[axis] + shifted[..., axis]
    return key


def _coords_of_keys(keys: Tensor, range_min: Tensor, radix: Tensor) -> Tensor:
    coords = []
    rest = keys
    for axis in reversed(range(radix.numel())):
        coords.append(rest % radix[axis])
        rest = torch.div(rest, radix[axis], rounding_mode="floor")
    return torch.stack(coords[::-1], dim=-1) + range_min
