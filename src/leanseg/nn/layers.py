"""Small building blocks shared by backbones, context modules and heads."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

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
