"""ResNet-18/34/50/101 backbones with torchvision parameter names.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016). As in torchvision, the
stride of a bottleneck block sits on its 3x3 convolution ("ResNet V1.5"). Two options that
segmentation papers use:

- ``deep_stem``: the 7x7 stem convolution replaced by three 3x3 convolutions (32, 32, 64
  channels; the first with stride 2), as in QGN supplementary A.1 and "ResNet-C" of Bag of Tricks.
  Its output width stays 64 so every other torchvision weight still loads; the stem itself keeps
  its random initialisation when torchvision weights are loaded.
- ``output_stride`` 16 or 8: the last stages keep their resolution and dilate instead (DeepLab).
  The feature dict is keyed by stride, so only the deepest stage of each stride is returned.
- ``stem_features``: also return the stem output at stride 2 (``{2: conv1-bn1-relu}``, 64
  channels, before the max-pool) and the input image itself as the stride-1 "feature"
  (``{1: images}``, ``in_channels`` channels), for decoders that add an encoder skip at every
  stride (QGN's skips into ``Q1`` and ``Q0``: Table 7's Block0 and the input). Off by default,
  so heads that read every returned stride see the classic 4..32 pyramid.
- ``in_channels``: image channels (3). Loaded weights get their 7x7 ``conv1`` adapted
  (``pretrained.adapt_input_channels``); a deep stem keeps its random initialisation anyway.
"""

from __future__ import annotations

from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.backbones.pretrained import load_pretrained
from leanseg.nn.layers import NormLayer


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projected) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride, dilation)
        self.bn1 = norm_layer(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels, dilation=dilation)
        self.bn2 = norm_layer(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, V1.5), 1x1 expand ×4; ResNet-50/101."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = norm_layer(channels)
        self.conv2 = conv3x3(channels, channels, stride, dilation)
        self.bn2 = norm_layer(channels)
        self.conv3 = conv1x1(channels, channels * self.expansion)
        self.bn3 = norm_layer(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(Backbone):
    """ResNet feature extractor returning ``{4: layer1, 8: layer2, 16: layer3, 32: layer4}``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks per stage.
        deep_stem: three 3x3 convolutions instead of the 7x7 stem (see module docstring).
        output_stride: 32 (classification layout), 16 or 8 (dilated last stages).
        stem_features: also return ``{1: images, 2: stem output}`` (see module docstring).
        in_channels: channels of the input images.
        norm_layer: normalisation layer factory (``nn.BatchNorm2d``, ``nn.SyncBatchNorm``...).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        deep_stem: bool = False,
        output_stride: int = 32,
        stem_features: bool = False,
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = in_channels
        self.deep_stem = deep_stem
        if deep_stem:
            self.conv1 = nn.Sequential(
                conv3x3(in_channels, 32, stride=2),
                norm_layer(32),
                nn.ReLU(inplace=True),
                conv3x3(32, 32),
                norm_layer(32),
                nn.ReLU(inplace=True),
                conv3x3(32, 64),
            )
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self._stage_channels = 64
        self._dilation = 1
        self._norm_layer = norm_layer
        # Stages 3 and 4 trade stride for dilation when a finer output stride is asked for.
        dilate3 = output_stride == 8
        dilate4 = output_stride in (8, 16)
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2, dilate=dilate3)
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2, dilate=dilate4)

        strides = {"layer1": 4, "layer2": 8, "layer3": 16 if not dilate3 else 8}
        strides["layer4"] = min(32, output_stride)
        by_stride: dict[int, FeatureInfo] = {}
        for name, stride in strides.items():
            channels = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}[name]
            by_stride[stride] = FeatureInfo(stride, channels * block.expansion, name)
        if stem_features:
            by_stride[1] = FeatureInfo(1, in_channels, "input")
            by_stride[2] = FeatureInfo(2, 64, "conv1")
        self.stem_features = stem_features
        self.feature_info = [by_stride[s] for s in sorted(by_stride)]
        self._initialise()

    def _make_stage(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        channels: int,
        num_blocks: int,
        stride: int,
        dilate: bool = False,
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_channels = channels * block.expansion
        downsample = None
        if stride != 1 or self._stage_channels != out_channels:
            downsample = nn.Sequential(
                conv1x1(self._stage_channels, out_channels, stride), self._norm_layer(out_channels)
            )
        blocks = [
            block(
                self._stage_channels,
                channels,
                stride,
                previous_dilation,
                downsample,
                self._norm_layer,
            )
        ]
        self._stage_channels = out_channels
        blocks += [
            block(out_channels, channels, dilation=self._dilation, norm_layer=self._norm_layer)
            for _ in range(1, num_blocks)
        ]
        return nn.Sequential(*blocks)

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.SyncBatchNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero-init the last BN of each residual branch so every block starts as identity;
        # this makes training from scratch (the synthetic demo) noticeably more stable.
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        stem = self.relu(self.bn1(self.conv1(images)))
        outputs: dict[int, Tensor] = {1: images, 2: stem} if self.stem_features else {}
        x = self.maxpool(stem)
        stage_stride = {info.name: info.stride for info in self.feature_info}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name in stage_stride:
                outputs[stage_stride[name]] = x
        return outputs


def _build(
    block: type[BasicBlock] | type[Bottleneck],
    layers: tuple[int, int, int, int],
    pretrained: str | None,
    deep_stem: bool,
    output_stride: int,
    stem_features: bool,
    in_channels: int,
    norm_layer: NormLayer,
) -> ResNet:
    model = ResNet(
        block,
        layers,
        deep_stem=deep_stem,
        output_stride=output_stride,
        stem_features=stem_features,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )
    if pretrained:
        # With a deep stem, the 7x7 ``conv1.weight`` of the file has no place in the model.
        stem = ("conv1.",) if deep_stem else ()
        load_pretrained(model, pretrained, allow_missing=stem, first_conv="conv1.weight")
    return model


def resnet18(
    *,
    pretrained: str | None = None,
    deep_stem: bool = False,
    output_stride: int = 32,
    stem_features: bool = False,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-18 (11.2 M backbone parameters without ``fc``)."""
    return _build(
        BasicBlock,
        (2, 2, 2, 2),
        pretrained,
        deep_stem,
        output_stride,
        stem_features,
        in_channels,
        norm_layer,
    )


def resnet34(
    *,
    pretrained: str | None = None,
    deep_stem: bool = False,
    output_stride: int = 32,
    stem_features: bool = False,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-34."""
    return _build(
        BasicBlock,
        (3, 4, 6, 3),
        pretrained,
        deep_stem,
        output_stride,
        stem_features,
        in_channels,
        norm_layer,
    )


def resnet50(
    *,
    pretrained: str | None = None,
    deep_stem: bool = False,
    output_stride: int = 32,
    stem_features: bool = False,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-50 (V1.5: stride on the 3x3 convolution)."""
    return _build(
        Bottleneck,
        (3, 4, 6, 3),
        pretrained,
        deep_stem,
        output_stride,
        stem_features,
        in_channels,
        norm_layer,
    )


def resnet101(
    *,
    pretrained: str | None = None,
    deep_stem: bool = False,
    output_stride: int = 32,
    stem_features: bool = False,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-101 (V1.5)."""
    return _build(
        Bottleneck,
        (3, 4, 23, 3),
        pretrained,
        deep_stem,
        output_stride,
        stem_features,
        in_channels,
        norm_layer,
    )
