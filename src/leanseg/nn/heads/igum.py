"""Guided upsampling: the improved GUM (iGUM) of SSN §3.1 and the original GUM it improves on.

Both heads predict class scores at the coarse resolution ``N x M`` of the features and upsample
them to the image by *sampling* them at a regular grid moved by a guidance offsets table (SSN
eq. 1). They differ in where the table is predicted:

- :class:`IGUMHead` (SSN §3.1): a second 2-channel branch on the same coarse features predicts the
  table at ``N x M``; it is upsampled bilinearly to the image size before sampling. Scores and
  offsets cost two tiny convolutions, so the head replaces a decoder entirely (SSN §5, Table 1).
- :class:`GUMHead` (Mazzini, BMVC 2018, the SSN reference [39]): a guidance branch on a
  fine feature map predicts one offset vector per *output* pixel (``2 x fN x fM``).

Choices made where the paper is silent (each covered by a test in ``tests/test_ssn.py``):

- **Grid convention.** Pixel ``i`` of the output (index along one axis, size ``F``) is the
  continuous coordinate ``x_i^s = (i + 0.5) * n / F - 0.5`` of the input (size ``n``): pixel
  centres align, as ``F.interpolate(..., align_corners=False)``. With zero offsets bilinear iGUM
  equals ``F.interpolate(mode="bilinear", align_corners=False)`` and nearest iGUM equals
  ``F.interpolate(mode="nearest")`` for integer factors.
- **Offset units.** Offsets are in pixels of the *coarse* score map (``p_i`` in eq. 1 is added to
  ``x_i^s`` in input-pixel units), channel 0 is x (width), channel 1 is y (height). They are
  limited to ``[-max_offset, max_offset]`` by ``max_offset * tanh`` (SSN §4 "Two practical
  tips" limit them to [-1, 1]; ``max_offset=1`` is the paper's setting), so one coarse pixel at
  most: enough to move an argmax boundary anywhere between two coarse samples (SSN Figure 3).
- **Borders.** Samples falling outside the map take the nearest border value
  (``padding_mode="border"``), so offsets never pull in zeros.
- **Nearest rounding.** Eq. 1 rounds with ``floor(x + 0.5)``; ``grid_sample`` rounds half to even.
  They differ only at exact ``.5`` positions, which the grid never produces for zero offsets.
- **What is sampled.** The raw class scores (logits), not softmax probabilities: the argmax of
  nearest sampling is identical, bilinear sampling of logits keeps the cross-entropy well scaled,
  and it saves a softmax at full resolution.
- **Initialisation.** The last guidance convolution starts at zero, so an untrained head is plain
  bilinear (or nearest) upsampling and learns to move boundaries from there.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseLoss, HeadCapabilities
from leanseg.nn.layers import NormLayer, conv_bn_relu
from leanseg.structures.labels import IGNORE_INDEX

SampleMode = Literal["bilinear", "nearest"]

# --------------------------------------------------------------------------- sampling helpers


def regular_grid(
    size: tuple[int, int],
    source_size: tuple[int, int],
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sampling coordinates ``(x_i^s, y_i^s)`` of eq. 1 for an output of ``size``.

    Args:
        size: ``(H, W)`` of the output.
        source_size: ``(h, w)`` of the map being sampled.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``(2, H, W)``: x then y, in pixels of the source map, pixel centres aligned
        (``align_corners=False`` convention; see the module docstring).
    """
    height, width = size
    src_h, src_w = source_size
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (src_h / height) - 0.5
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (src_w / width) - 0.5
    return torch.stack(
        (xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width))
    )


def sample_at(source: Tensor, coords: Tensor, mode: SampleMode = "bilinear") -> Tensor:
    """Sample ``source`` at pixel coordinates (SSN eq. 1 with ``coords = x^s + p``).

    Args:
        source: ``(B, C, h, w)`` map to sample.
        coords: ``(B, 2, H, W)`` x, y positions in pixels of ``source`` (pixel centres at
            integers); outside positions take the border value.
        mode: ``"bilinear"`` (differentiable w.r.t. ``coords``) or ``"nearest"``.

    Returns:
        ``(B, C, H, W)``.
    """
    src_h, src_w = source.shape[-2:]
    # Pixel coordinates -> grid_sample's [-1, 1] range with align_corners=False. Each axis is
    # scaled by a Python number, not by a tensor built from the sizes, so that an ONNX export
    # keeps the scale a function of the input size instead of a constant of the traced one.
    x = (coords[:, :1] + 0.5) * (2.0 / src_w) - 1.0  # (B, 1, H, W)
    y = (coords[:, 1:] + 0.5) * (2.0 / src_h) - 1.0
    grid = torch.cat((x, y), dim=1).permute(0, 2, 3, 1)  # (B, H, W, 2)
    if grid.dtype != source.dtype:
        grid = grid.to(source.dtype)
    return F.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=False)


def guided_upsample(
    scores: Tensor,
    offsets: Tensor,
    size: tuple[int, int],
    mode: SampleMode = "bilinear",
) -> Tensor:
    """Upsample ``scores`` to ``size`` along a guidance offsets table (SSN eq. 1, §3.1).

    A low-resolution table (iGUM) is first upsampled bilinearly to ``size``; a table already at
    ``size`` (GUM) is used as is.

    Args:
        scores: ``(B, C, h, w)`` coarse class scores ``U``.
        offsets: ``(B, 2, h', w')`` offsets ``(p, q)`` in pixels of ``scores`` (x then y).
        size: ``(H, W)`` of the output ``V``.
        mode: sampling kernel, ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(B, C, H, W)``.
    """
    if offsets.shape[-2:] != torch.Size(size):
        offsets = F.interpolate(offsets, size=size, mode="bilinear", align_corners=False)
    grid = regular_grid(size, tuple(scores.shape[-2:]), device=offsets.device, dtype=offsets.dtype)
    return sample_at(scores, grid.unsqueeze(0) + offsets, mode)


class GuidanceBranch(nn.Module):
    """Predicts a 2-channel offsets table bounded by ``max_offset * tanh`` (SSN §4 tips).

    Args:
        in_channels: width of the input features.
        kernel_size: kernel of the (single) convolution; 3 lets each offset see its neighbours,
            which is what locating a boundary between two coarse pixels needs.
        max_offset: bound of the offsets, in pixels of the sampled map.
    """

    def __init__(self, in_channels: int, *, kernel_size: int = 3, max_offset: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, kernel_size, padding=kernel_size // 2)
        self.max_offset = max_offset
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.max_offset * torch.tanh(self.conv(features))  # (B, 2, h, w)


# --------------------------------------------------------------------------- heads


class IGUMHead(HeadCapabilities, DenseLoss, nn.Module):
    """Improved Guided Upsampling Module as the whole decoder (SSN §3.1, §5, Tables 1-2).

    Two branches on the coarsest (or ``in_stride``) features: a 1x1 classifier to ``C x N x M``
    scores and a :class:`GuidanceBranch` to a ``2 x N x M`` offsets table; the table is upsampled
    bilinearly to the image and the scores sampled along it (:func:`guided_upsample`).

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: which feature map both branches read; ``None`` takes the coarsest.
        mode: sampling kernel used by ``forward``; SSN samples scores bilinearly.
        max_offset: offset bound in coarse pixels (1 in the paper, SSN §4).
        guidance_kernel: kernel size of the guidance convolution.
        dropout: dropout probability before the classifier.
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
        mode: SampleMode = "bilinear",
        max_offset: float = 1.0,
        guidance_kernel: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        self.in_stride = info.stride
        self.ignore_index = ignore_index
        self.mode = mode
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(info.channels, num_classes, 1)
        self.guidance = GuidanceBranch(
            info.channels, kernel_size=guidance_kernel, max_offset=max_offset
        )

    def coarse(self, features: dict[int, Tensor]) -> tuple[Tensor, Tensor]:
        """Scores ``(B, C, N, M)`` and guidance offsets ``(B, 2, N, M)``."""
        x = features[self.in_stride]
        return self.classifier(self.dropout(x)), self.guidance(x)

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        scores, offsets = self.coarse(features)
        return guided_upsample(scores, offsets, image_size, self.mode)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        scores, offsets = self.coarse(features)
        # Training always samples bilinearly: nearest is not differentiable w.r.t. the offsets.
        upsampled = guided_upsample(scores, offsets, image_size, "bilinear")
        return {"loss_ce": self.dense_loss(upsampled, targets["label"])}


class GUMHead(HeadCapabilities, DenseLoss, nn.Module):
    """The original Guided Upsampling Module (SSN ref. [39], eq. 1): full-resolution offsets.

    Scores come from a 1x1 classifier on the coarsest features; a guidance module on a fine
    feature map (``guidance_stride``, default the finest the backbone returns) predicts the
    offsets table ``2 x fN x fM`` directly at the image resolution: 3x3 conv-BN-ReLU, then a
    transposed convolution with kernel = stride = ``guidance_stride`` that emits one offset vector
    per output pixel, bounded by ``max_offset * tanh``. (BMVC 2018 builds its guidance module from
    the early layers of the encoder; the exact layers differ per network, this is our choice.)

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: stride of the features the classifier reads; ``None`` takes the coarsest.
        guidance_stride: stride of the features the guidance module reads; ``None`` the finest.
        guidance_channels: width of the guidance module.
        mode: sampling kernel used by ``forward``.
        max_offset: offset bound in pixels of the coarse score map.
        dropout: dropout probability before the classifier.
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
        guidance_stride: int | None = None,
        guidance_channels: int = 16,
        mode: SampleMode = "bilinear",
        max_offset: float = 1.0,
        dropout: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        if guidance_stride is None:
            guidance_stride = min(i.stride for i in feature_info)
        fine = feature_at(feature_info, guidance_stride, option="guidance_stride")
        self.in_stride = info.stride
        self.guidance_stride = fine.stride
        self.ignore_index = ignore_index
        self.mode = mode
        self.max_offset = max_offset
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(info.channels, num_classes, 1)
        self.guidance = conv_bn_relu(fine.channels, guidance_channels, 3, norm_layer)
        stride = fine.stride
        self.to_offsets = nn.ConvTranspose2d(guidance_channels, 2, stride, stride=stride)
        nn.init.zeros_(self.to_offsets.weight)
        nn.init.zeros_(self.to_offsets.bias)

    def offsets(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Full-resolution offsets table ``(B, 2, H, W)`` in coarse-score pixels."""
        table = self.to_offsets(self.guidance(features[self.guidance_stride]))
        table = table[..., : image_size[0], : image_size[1]]
        if table.shape[-2:] != torch.Size(image_size):  # strides that do not divide the image
            table = F.interpolate(table, size=image_size, mode="bilinear", align_corners=False)
        return self.max_offset * torch.tanh(table)

    def _upsample(
        self, features: dict[int, Tensor], image_size: tuple[int, int], mode: SampleMode
    ) -> Tensor:
        scores = self.classifier(self.dropout(features[self.in_stride]))
        return guided_upsample(scores, self.offsets(features, image_size), image_size, mode)

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        return self._upsample(features, image_size, self.mode)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        upsampled = self._upsample(features, image_size, "bilinear")
        return {"loss_ce": self.dense_loss(upsampled, targets["label"])}
