"""HRNetV2-W18/W32/W48 backbones with the HRNet ImageNet checkpoint parameter names.

Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition" (TPAMI 2019),
the backbone of S&F Table 1 (W48) and Table 2a (W32). The layout follows the ImageNet checkpoints
(``conv1``/``bn1``/``conv2``/``bn2`` stem, ``layer1`` of 4 bottlenecks, ``transition{1,2,3}``,
``stage{2,3,4}`` of 1/4/3 multi-resolution modules with ``branches`` and ``fuse_layers``), so a
checkpoint in that naming (``../shared/reference/timm_hrnet_w*.json``) loads without renaming; its
classification-only ``incre_modules``, ``downsamp_modules``, ``final_layer`` and ``classifier``
are dropped.

Output: the HRNetV2 representation, the four branches bilinearly upsampled to stride 4 and
concatenated (``15 * width`` channels), returned as ``{4: tensor}``. Upsampling inside the fuse
layers is bilinear to the exact target size (the checkpoints hold no parameters for it), which
also serves inputs that are not multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.backbones.pretrained import load_pretrained
from leanseg.nn.backbones.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3
from leanseg.nn.layers import NormLayer

CLASSIFICATION_PREFIXES = (
    "incre_modules.",
    "downsamp_modules.",
    "final_layer.",
    "classifier.",
)


def _conv_bn(
    in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer, relu: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [conv3x3(in_channels, out_channels, stride), norm_layer(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every branch fused into every output.

    ``fuse_layers[i][j]`` brings branch ``j`` to branch ``i``: identity for ``j == i``, 1x1 conv-BN
    then upsampling for ``j > i``, ``i - j`` strided 3x3 convs for ``j < i``
    (the last without ReLU).
    """

    def __init__(self, channels: list[int], num_blocks: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c, norm_layer=norm_layer) for _ in range(num_blocks)))
            for c in channels
        )
        fuse_layers = []
        for i, out_c in enumerate(channels):
            row: list[nn.Module] = []
            for j, in_c in enumerate(channels):
                if j > i:
                    row.append(nn.Sequential(conv1x1(in_c, out_c), norm_layer(out_c)))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [_conv_bn(in_c, in_c, 2, norm_layer, True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(in_c, out_c, 2, norm_layer, False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:
                    y = F.interpolate(
                        y, size=xs[i].shape[-2:], mode="bilinear", align_corners=False
                    )
                total = total + y
            out.append(F.relu(total))
        return out


class HRNet(Backbone):
    """HRNetV2 feature extractor returning ``{4: concat of the 4 upsampled branches}``.

    Args:
        width: channels of the highest-resolution branch (18, 32 or 48); branches have
            ``width * (1, 2, 4, 8)``.
        in_channels: channels of the input images.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self, width: int, *, in_channels: int = 3, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        downsample = nn.Sequential(conv1x1(64, 256), norm_layer(256))
        self.layer1 = nn.Sequential(
            Bottleneck(64, 64, downsample=downsample, norm_layer=norm_layer),
            *(Bottleneck(256, 64, norm_layer=norm_layer) for _ in range(3)),
        )
        widths = [width * 2**i for i in range(4)]
        self.transition1 = nn.ModuleList(
            [
                _conv_bn(256, widths[0], 1, norm_layer, True),
                nn.Sequential(_conv_bn(256, widths[1], 2, norm_layer, True)),
            ]
        )
        self.stage2 = self._stage(widths[:2], 1, norm_layer)
        self.transition2 = self._transition(widths[:3], norm_layer)
        self.stage3 = self._stage(widths[:3], 4, norm_layer)
        self.transition3 = self._transition(widths, norm_layer)
        self.stage4 = self._stage(widths, 3, norm_layer)
        self.feature_info = [FeatureInfo(4, sum(widths), "stage4")]

    @staticmethod
    def _stage(channels: list[int], num_modules: int, norm_layer: NormLayer) -> nn.Sequential:
        return nn.Sequential(
            *(HighResolutionModule(channels, 4, norm_layer) for _ in range(num_modules))
        )

    @staticmethod
    def _transition(channels: list[int], norm_layer: NormLayer) -> nn.ModuleList:
        """Existing branches pass through; a new branch is a strided conv of the coarsest one."""
        layers: list[nn.Module] = [nn.Identity() for _ in channels[:-1]]
        layers.append(nn.Sequential(_conv_bn(channels[-2], channels[-1], 2, norm_layer, True)))
        return nn.ModuleList(layers)

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.layer1(self.relu(self.bn2(self.conv2(x))))
        xs = [t(x) for t in self.transition1]
        xs = self.stage2(xs)
        xs = [t(x) for t, x in zip(self.transition2, [*xs, xs[-1]], strict=True)]
        xs = self.stage3(xs)
        xs = [t(x) for t, x in zip(self.transition3, [*xs, xs[-1]], strict=True)]
        xs = self.stage4(xs)
        size = xs[0].shape[-2:]
        upsampled = [
            F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]
        ]
        return {4: torch.cat([xs[0], *upsampled], dim=1)}  # (B, 15 * width, H/4, W/4)


def _hrnet(width: int, pretrained: str | None, in_channels: int, norm_layer: NormLayer) -> HRNet:
    model = HRNet(width, in_channels=in_channels, norm_layer=norm_layer)
    if pretrained:
        load_pretrained(
            model, pretrained, drop_prefixes=CLASSIFICATION_PREFIXES, first_conv="conv1.weight"
        )
    return model


def hrnet_w18(
    *,
    pretrained: str | None = None,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> HRNet:
    """HRNetV2-W18 (270 output channels at stride 4)."""
    return _hrnet(18, pretrained, in_channels, norm_layer)


def hrnet_w32(
    *,
    pretrained: str | None = None,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> HRNet:
    """HRNetV2-W32 (480 channels), the backbone of S&F Table 2a."""
    return _hrnet(32, pretrained, in_channels, norm_layer)


def hrnet_w48(
    *,
    pretrained: str | None = None,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> HRNet:
    """HRNetV2-W48 (720 channels), the backbone of S&F Table 1."""
    return _hrnet(48, pretrained, in_channels, norm_layer)
