"""Small building blocks shared by backbones, context modules and heads.

Each block here is used by more than one model family, so it lives in one place instead of being
borrowed from one family's file by another: the two unit orders (conv-BN-ReLU and the
pre-activation BN-ReLU-conv of DenseNet and the LDN upsampling path), the depthwise-separable
unit of DeepLabV3+, and ERFNet's Non-Bottleneck-1D module (ERFNet's encoder and decoder).
Blocks return ``nn.Sequential`` with numbered children, so their parameter names are
``N.weight`` wherever they are used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

# A normalisation layer factory: called with a channel count, e.g. ``nn.BatchNorm2d``.
NormLayer = Callable[[int], nn.Module]


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    norm_layer: NormLayer = nn.BatchNorm2d,
    *,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Convolution (no bias, 'same' padding) - normalisation - ReLU, as ``Sequential`` 0, 1, 2."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


def bn_relu_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    norm_layer: NormLayer = nn.BatchNorm2d,
    *,
    groups: int = 1,
) -> nn.Sequential:
    """Normalisation - ReLU - convolution (no bias, 'same' padding), as ``Sequential`` 0, 1, 2.

    The pre-activation unit of DenseNet (thesis 2.7.1) and of the LDN upsampling path and SPP;
    ``groups=in_channels`` gives a depthwise convolution.
    """
    return nn.Sequential(
        norm_layer(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
    )


def separableconv_bn_relu(
    in_channels: int,
    out_channels: int,
    norm_layer: NormLayer = nn.BatchNorm2d,
    *,
    dilation: int = 1,
) -> nn.Sequential:
    """Depthwise 3x3 (dilated) - BN - ReLU, then pointwise 1x1 - BN - ReLU (DeepLabV3+ sec. 3.2)."""
    return nn.Sequential(
        conv_bn_relu(
            in_channels, in_channels, 3, norm_layer, dilation=dilation, groups=in_channels
        ),
        conv_bn_relu(in_channels, out_channels, 1, norm_layer),
    )


class NonBottleneck1D(nn.Module):
    """ERFNet's Non-Bottleneck-1D residual module (Romera et al. 2018; baseline of SSN Table 3).

    ``3x1, 1x3 -> BN, 3x1 (dil), 1x3 (dil) -> BN`` with biases and ReLU, dropout on the residual
    branch, added to the input, then ReLU. Parameter names follow the ERFNet reference code.

    Args:
        channels: width (input = output).
        dropout: dropout probability on the residual branch.
        dilation: dilation of the second factorised pair.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = norm_layer(channels)
        self.conv3x1_2 = nn.Conv2d(
            channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1)
        )
        self.conv1x3_2 = nn.Conv2d(
            channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation)
        )
        self.bn2 = norm_layer(channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # In-place ReLUs: each writes over a fresh intermediate instead of allocating another
        # full-size tensor (ERFNet spent 15 % of a CPU forward in out-of-place ReLUs, issue 16).
        out = F.relu(self.conv3x1_1(x), inplace=True)
        out = F.relu(self.bn1(self.conv1x3_1(out)), inplace=True)
        out = F.relu(self.conv3x1_2(out), inplace=True)
        out = self.bn2(self.conv1x3_2(out))
        return F.relu(self.dropout(out) + x, inplace=True)
