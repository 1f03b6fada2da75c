"""Dynamic neural representational decoder (NRD).

Zhang, Liu, Tian and Shen, "Dynamic Neural Representational Decoders for High-Resolution Semantic
Segmentation" (NeurIPS 2021), section 2 and Figure 3. Every location of the stride-32 encoder output
F generates, through a *controller*, the parameters θ of a tiny MLP g_θ (three 1x1 layers with ReLU
between them, inputs -> C_r -> C_r -> C). g_θ is applied to an s x s grid made of the local (x, y)
coordinate map Q = [0 : 1/s : 1) x [0 : 1/s : 1) and the C_m-channel guidance map m cropped to the
cell; the s x s outputs G of all cells tile a score map at stride 32 / s (= 4 for s = 8), which is
upsampled bilinearly to the image (P' in section 2.2).

How leanseg evaluates g_θ: all cells at once, as batched matrix products (``torch.baddbmm``) with
the batch running over the B * H' * W' cells. The generated weights keep the encoder's resolution:
``(N, C_out, C_in)`` per layer for N cells, never expanded to a per-pixel tensor. The public
reference implementation instead upsamples θ x8 to stride 4 (P floats per stride-4 pixel);
:func:`expanded_forward` does that, for the memory comparison only.

Choices where the paper is silent, stated once:

- Layout of θ (P values per cell): all weights first, layer by layer, each stored ``(C_out, C_in)``
  row-major like a 1x1 convolution weight, then all biases layer by layer (the CondInst order).
- Input channel order of g_θ: x, y (if coordinates are used), then the C_m guidance channels.
  Coordinates are ``j / s`` (x, along the width) and ``i / s`` (y), values in [0, 1) per cell.
- Controller: 3x3 conv - BN - ReLU (512 channels), then a 1x1 convolution with bias to P outputs
  (section 2.2 "Controller"), default initialisation. ``controller_channels=None`` drops the 3x3.
- Guidance ("two convolutional layers ... reduce the channels to C_m"): a 3x3 conv - BN - ReLU from
  the stride-4 features to ``guidance_mid_channels`` (48, the width of the DeepLabV3+ low-level
  projection), then a 1x1 convolution with bias to C_m and no activation, so that the guidance may
  take either sign. With these choices the decoder costs 20.5 GFLOPs at 1024x2048 (Table 1: 20.4).
- When ``in_stride / grid_size`` differs from the guidance stride, the guidance map is resized
  bilinearly to the grid resolution ``(H' s, W' s)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import NormLayer, conv_bn_relu
from leanseg.structures.labels import IGNORE_INDEX

# --------------------------------------------------------------------------- helpers


def nrd_num_parameters(
    num_classes: int,
    rep_channels: int = 16,
    guidance_channels: int = 16,
    use_coords: bool = True,
    use_guidance: bool = True,
) -> int:
    """Number of parameters P of one representational network g_θ (NRD section 2.2).

    ``#weights = C_in C_r + C_r C_r + C_r C`` and ``#biases = C_r + C_r + C`` with
    ``C_in = 2 [coords] + C_m [guidance]``; 899 for C = 19, C_r = C_m = 16 with both inputs.
    """
    in_channels = 2 * use_coords + guidance_channels * use_guidance
    weights = in_channels * rep_channels + rep_channels * rep_channels + rep_channels * num_classes
    biases = rep_channels + rep_channels + num_classes
    return weights + biases


def coordinate_grid(grid_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Local (x, y) coordinates of an s x s cell, ``(s * s, 2)`` row-major, values in [0, 1)."""
    steps = torch.arange(grid_size, device=device, dtype=dtype) / grid_size
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def cells_to_rows(x: Tensor, grid_size: int) -> Tensor:
    """``(B, C, h s, w s)`` -> ``(B h w, s s, C)``: one row block per s x s cell."""
    batch, channels, height, width = x.shape
    h, w = height // grid_size, width // grid_size
    x = x.view(batch, channels, h, grid_size, w, grid_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch * h * w, grid_size * grid_size, channels)


def rows_to_cells(x: Tensor, batch: int, h: int, w: int, grid_size: int) -> Tensor:
    """Inverse of :func:`cells_to_rows`: ``(B h w, s s, C)`` -> ``(B, C, h s, w s)``."""
    channels = x.shape[-1]
    x = x.view(batch, h, w, grid_size, grid_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, h * grid_size, w * grid_size)


# --------------------------------------------------------------------------- blocks


class DynamicMLP(nn.Module):
    """g_θ for many cells at once: weights come in as an ``(N, P)`` tensor, one row per cell.

    Has no parameters of its own. ``flops`` reports the fused multiply-adds of the batched
    matrix products, which forward hooks on convolutions cannot see (``leanseg.profiling``).

    Args:
        in_channels: C_in, inputs per grid point (2 coordinates + C_m guidance channels).
        hidden_channels: C_r, width of the two hidden layers.
        out_channels: C, the number of classes.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        # (C_out, C_in) of the three 1x1 layers (NRD Fig. 3b).
        self.layer_shapes = [
            (hidden_channels, in_channels),
            (hidden_channels, hidden_channels),
            (out_channels, hidden_channels),
        ]
        self.num_weights = sum(o * i for o, i in self.layer_shapes)
        self.num_parameters = self.num_weights + sum(o for o, _ in self.layer_shapes)

    def split(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(N, P)`` -> per layer ``(weight (N, C_out, C_in), bias (N, C_out))`` (views)."""
        num_cells = params.shape[0]
        layers = []
        weight_offset, bias_offset = 0, self.num_weights
        for out_channels, in_channels in self.layer_shapes:
            size = out_channels * in_channels
            weight = params[:, weight_offset : weight_offset + size]
            bias = params[:, bias_offset : bias_offset + out_channels]
            layers.append((weight.reshape(num_cells, out_channels, in_channels), bias))
            weight_offset += size
            bias_offset += out_channels
        return layers

    def forward(self, inputs: Tensor, params: Tensor) -> Tensor:
        """Apply each cell's network to its grid points.

        Args:
            inputs: ``(N, S, C_in)``, S = s * s grid points of N cells.
            params: ``(N, P)`` generated parameters, one row per cell.

        Returns:
            ``(N, S, C)`` class scores.
        """
        x = inputs
        layers = self.split(params)
        for index, (weight, bias) in enumerate(layers):
            # (N, S, C_in) @ (N, C_in, C_out) + (N, 1, C_out) -> (N, S, C_out)
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            if index < len(layers) - 1:
                x = F.relu(x)
        return x

    def flops(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """Fused multiply-adds: ``N * S * sum(C_out * C_in)`` (biases not counted)."""
        num_cells, num_points = inputs[0].shape[:2]
        return num_cells * num_points * self.num_weights


# --------------------------------------------------------------------------- head


class NRDHead(DenseHead):
    """Controller + guidance branch + dynamic representational networks (NRD Fig. 3).

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: C, number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: stride of F that generates θ; ``None`` takes the coarsest (32).
        low_level_stride: stride of the low-level features the guidance is computed from (4, the
            DeepLabV3+ low-level features; "stage2" in NRD Table 1).
        controller_channels: width of the controller's 3x3 conv (512); ``None`` for a single 1x1.
        rep_channels: C_r, hidden width of g_θ (NRD Table 2; 16).
        guidance_channels: C_m, channels of the guidance map m (NRD Table 2; 16).
        guidance_mid_channels: width of the first guidance convolution (paper silent; 48).
        grid_size: s, grid points per cell side (8, so the grid is at stride 4).
        use_coords: feed the coordinate maps to g_θ (NRD Table 4).
        use_guidance: feed the guidance map to g_θ (NRD Tables 1 and 4).
        norm_layer: normalisation layer factory.
    """

    onnx_unexportable = None
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        in_stride: int | None = None,
        low_level_stride: int = 4,
        controller_channels: int | None = 512,
        rep_channels: int = 16,
        guidance_channels: int = 16,
        guidance_mid_channels: int = 48,
        grid_size: int = 8,
        use_coords: bool = True,
        use_guidance: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not (use_coords or use_guidance):
            raise ValueError("g_θ needs an input: set use_coords and/or use_guidance")
        top = feature_at(feature_info, in_stride)
        self.in_stride = top.stride
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.low_level_stride = low_level_stride
        self.grid_size = grid_size
        self.use_coords = use_coords
        self.use_guidance = use_guidance

        in_channels = 2 * use_coords + guidance_channels * use_guidance
        self.mlp = DynamicMLP(in_channels, rep_channels, num_classes)
        num_params = self.mlp.num_parameters  # P
        feature_channels = top.channels
        if controller_channels:
            self.controller = nn.Sequential(
                conv_bn_relu(feature_channels, controller_channels, 3, norm_layer),
                nn.Conv2d(controller_channels, num_params, 1),
            )
        else:
            self.controller = nn.Sequential(nn.Conv2d(feature_channels, num_params, 1))
        if use_guidance:
            low = feature_at(feature_info, low_level_stride, option="low_level_stride")
            self.guidance = nn.Sequential(
                conv_bn_relu(low.channels, guidance_mid_channels, 3, norm_layer),
                nn.Conv2d(guidance_mid_channels, guidance_channels, 1),
            )
        else:
            self.guidance = None

    @property
    def num_dynamic_parameters(self) -> int:
        """P, parameters of one g_θ (899 in the paper's Cityscapes setting)."""
        return self.mlp.num_parameters

    def guidance_map(self, features: dict[int, Tensor], grid_shape: tuple[int, int]) -> Tensor:
        """Guidance m at grid resolution ``(B, C_m, H' s, W' s)`` (resized if strides differ)."""
        assert self.guidance is not None
        guidance = self.guidance(features[self.low_level_stride])
        if guidance.shape[-2:] != grid_shape:
            guidance = F.interpolate(
                guidance, size=grid_shape, mode="bilinear", align_corners=False
            )
        return guidance

    def dynamic_inputs(self, features: dict[int, Tensor], grid_shape: tuple[int, int]) -> Tensor:
        """Input map of g_θ at grid resolution: ``(B, C_in, H' s, W' s)`` (coords, guidance)."""
        top = features[self.in_stride]
        batch = top.shape[0]
        height, width = grid_shape
        maps = []
        if self.use_coords:
            coords = coordinate_grid(self.grid_size, top.device, top.dtype)  # (s s, 2)
            coords = coords.t().reshape(1, 2, self.grid_size, self.grid_size)
            reps = (height // self.grid_size, width // self.grid_size)
            maps.append(coords.repeat(batch, 1, *reps))  # (B, 2, H' s, W' s)
        if self.guidance is not None:
            maps.append(self.guidance_map(features, grid_shape))
        return torch.cat(maps, dim=1)

    def grid_scores(self, features: dict[int, Tensor]) -> Tensor:
        """The tiled outputs G of all cells: ``(B, C, H' s, W' s)`` (stride 4 for s = 8)."""
        params = self.controller(features[self.in_stride])  # (B, P, H', W')
        batch, num_params, h, w = params.shape
        s = self.grid_size
        cell_params = params.permute(0, 2, 3, 1).reshape(batch * h * w, num_params)  # (N, P)
        rows = []
        if self.use_coords:
            coords = coordinate_grid(s, params.device, params.dtype)  # (s s, 2)
            rows.append(coords.expand(batch * h * w, -1, -1))  # (N, s s, 2), no copy
        if self.guidance is not None:
            guidance = self.guidance_map(features, (h * s, w * s))  # (B, C_m, H' s, W' s)
            rows.append(cells_to_rows(guidance, s))  # (N, s s, C_m)
        inputs = torch.cat(rows, dim=2) if len(rows) > 1 else rows[0]  # (N, s s, C_in)
        scores = self.mlp(inputs, cell_params)  # (N, s s, C)
        return rows_to_cells(scores, batch, h, w, s)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        return self.grid_scores(features)


# --------------------------------------------------------------------------- reference


def expanded_forward(head: NRDHead, features: dict[int, Tensor]) -> Tensor:
    """Reference-implementation-style evaluation, for memory comparisons only.

    θ is upsampled (nearest) by s to the grid resolution, so every stride-4 pixel holds its own
    copy of P parameters, and each layer is an elementwise product summed over input channels.
    Returns the same ``(B, C, H' s, W' s)`` as :meth:`NRDHead.grid_scores`.
    """
    params = head.controller(features[head.in_stride])  # (B, P, H', W')
    s = head.grid_size
    grid_shape = (params.shape[-2] * s, params.shape[-1] * s)
    params = F.interpolate(params, scale_factor=s, mode="nearest")  # (B, P, H' s, W' s)
    x = head.dynamic_inputs(features, grid_shape)  # (B, C_in, H' s, W' s)
    batch = params.shape[0]
    weight_offset, bias_offset = 0, head.mlp.num_weights
    shapes = head.mlp.layer_shapes
    for index, (out_channels, in_channels) in enumerate(shapes):
        size = out_channels * in_channels
        weight = params[:, weight_offset : weight_offset + size]
        weight = weight.reshape(batch, out_channels, in_channels, *grid_shape)
        bias = params[:, bias_offset : bias_offset + out_channels]
        x = (weight * x.unsqueeze(1)).sum(dim=2) + bias  # (B, C_out, H' s, W' s)
        if index < len(shapes) - 1:
            x = F.relu(x)
        weight_offset += size
        bias_offset += out_channels
    return x
