"""ERFNet's encoder and the lightweight SSN encoder built from the same plan (SSN §5, Tables 2-3).

Both encoders share ERFNet's layout (Romera et al., T-ITS 2018, the SSN baseline [48]): an early
downsampling block to 16 channels (stride 2), another to 64 (stride 4), five residual modules with
dropout 0.03, a downsampling block to 128 (stride 8), and eight residual modules with dropout 0.3
and dilations 2, 4, 8, 16, 2, 4, 8, 16 (SSN §6 "Training recipes" keeps these dropout rates).

- :func:`erfnet_encoder` uses ERFNet's Non-Bottleneck-1D module: ``3x1, 1x3, 3x1 (dil), 1x3
  (dil)`` with biases, ReLU, BN after each ``1x3`` (:class:`leanseg.nn.layers.NonBottleneck1D`,
  shared with ERFNet's decoder).
- :func:`ssn_encoder` uses the **Lightweight Non-Bottleneck-1D module** of SSN Figure 5 and
  Table 3: ``1x1 -> 3x1 (dil) -> 1x3 (dil) -> 1x1``, all "channel-wise" (``w -> w``), no biases,
  PReLU, and its downsampling blocks also without biases and with PReLU.

Parameter names follow the ERFNet reference code (``initial_block``, ``layers.N.conv3x1_1``,
``bn1``, ...), so weights trained there load by name. Both return ``{2: 16ch, 4: 64ch, 8: 128ch}``.

Choices made where SSN is silent (documented here and tested in ``tests/test_ssn.py``):

- SSN does not give depth or widths of its encoder; we use ERFNet's (SSN §5: "inspired by
  [48]"; Table 3 is an ablation *of ERFNet's modules*, so the plan is ERFNet's).
- Normalisation inside the lightweight module: BN after the first ``1x1``, after the ``1x3`` and
  after the last ``1x1`` (a bias-free module needs BN to shift); PReLU after the first three
  convolutions and after the residual sum; dropout on the residual branch before the sum
  (ERFNet's placement). The dilation of ERFNet's second factorised pair is kept on the ``3x1`` /
  ``1x3`` pair (Table 3: the first, undilated pair is what the ``1x1`` convolutions replace).
- PReLU has one slope per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.layers import NonBottleneck1D, NormLayer

# ERFNet's plan: dilations of the eight stride-8 modules, dropout of the two groups.
_DILATIONS = (2, 4, 8, 16, 2, 4, 8, 16)
_DROPOUT_STRIDE4 = 0.03
_DROPOUT_STRIDE8 = 0.3

# --------------------------------------------------------------------------- blocks


class DownsamplerBlock(nn.Module):
    """Early downsampling block (ENet / ERFNet; SSN §5 "Early downsampling").

    ``concat(conv3x3 stride 2 -> out - in channels, maxpool 2x2) -> BN -> activation``.

    Args:
        in_channels: input width.
        out_channels: output width (> ``in_channels``).
        bias: whether the convolution has a bias (ERFNet yes, SSN no).
        activation: ``"relu"`` (ERFNet) or ``"prelu"`` (SSN Table 3).
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bias: bool = True,
        activation: str = "relu",
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=bias
        )
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = norm_layer(out_channels)
        self.act = _activation(activation, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class LightweightNonBottleneck1D(nn.Module):
    """Lightweight Non-Bottleneck-1D module (SSN Figure 5, last rows of Table 3).

    ``1x1 -> BN -> PReLU -> 3x1 (dil) -> PReLU -> 1x3 (dil) -> BN -> PReLU -> 1x1 -> BN ->
    dropout``, added to the input, then PReLU. No convolution has a bias.

    Args:
        channels: width ``w`` (input = output, every convolution ``w -> w``).
        dropout: dropout probability on the residual branch.
        dilation: dilation of the factorised pair.
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
        self.conv1x1_1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = norm_layer(channels)
        self.act1 = nn.PReLU(channels)
        self.conv3x1 = nn.Conv2d(
            channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1), bias=False
        )
        self.act2 = nn.PReLU(channels)
        self.conv1x3 = nn.Conv2d(
            channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation), bias=False
        )
        self.bn2 = norm_layer(channels)
        self.act3 = nn.PReLU(channels)
        self.conv1x1_2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn3 = norm_layer(channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.act_out = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1x1_1(x)))
        out = self.act2(self.conv3x1(out))
        out = self.act3(self.bn2(self.conv1x3(out)))
        out = self.dropout(self.bn3(self.conv1x1_2(out)))
        return self.act_out(out + x)


def _activation(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {name!r}; choose relu or prelu")


# --------------------------------------------------------------------------- model


class FactorizedEncoder(Backbone):
    """ERFNet-plan encoder: ``initial_block`` then ``layers``; returns strides 2, 4 and 8.

    Args:
        block: residual module class (:class:`NonBottleneck1D` or
            :class:`LightweightNonBottleneck1D`).
        widths: channels at strides 2, 4, 8.
        num_blocks: residual modules at strides 4 and 8.
        dilations: dilation of each stride-8 module (cycled).
        dropouts: dropout of the stride-4 and stride-8 modules.
        bias: convolution biases in the downsampling blocks.
        activation: activation of the downsampling blocks.
        in_channels: channels of the input images (fewer than ``widths[0]``: the first
            downsampler concatenates the max-pooled image to its convolution's output).
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        block: type[nn.Module],
        *,
        widths: Sequence[int] = (16, 64, 128),
        num_blocks: Sequence[int] = (5, 8),
        dilations: Sequence[int] = _DILATIONS,
        dropouts: Sequence[float] = (_DROPOUT_STRIDE4, _DROPOUT_STRIDE8),
        bias: bool = True,
        activation: str = "relu",
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        w2, w4, w8 = widths
        if not 1 <= in_channels < w2:
            raise ValueError(f"in_channels must be in 1..{w2 - 1}, got {in_channels}")
        self.in_channels = in_channels

        def down(cin: int, cout: int) -> DownsamplerBlock:
            return DownsamplerBlock(
                cin, cout, bias=bias, activation=activation, norm_layer=norm_layer
            )

        self.initial_block = down(in_channels, w2)
        layers: list[nn.Module] = [down(w2, w4)]
        layers += [block(w4, dropouts[0], 1, norm_layer) for _ in range(num_blocks[0])]
        layers.append(down(w4, w8))
        layers += [
            block(w8, dropouts[1], dilations[i % len(dilations)], norm_layer)
            for i in range(num_blocks[1])
        ]
        self.layers = nn.ModuleList(layers)
        # Index of the last layer at stride 4 (before the second downsampler).
        self._last_stride4 = num_blocks[0]
        self.feature_info = [
            FeatureInfo(stride=2, channels=w2, name="initial_block"),
            FeatureInfo(stride=4, channels=w4, name=f"layers.{self._last_stride4}"),
            FeatureInfo(stride=8, channels=w8, name=f"layers.{len(layers) - 1}"),
        ]

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        x = self.initial_block(images)
        features = {2: x}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index == self._last_stride4:
                features[4] = x
        features[8] = x
        return features


def erfnet_encoder(
    *, in_channels: int = 3, norm_layer: NormLayer = nn.BatchNorm2d
) -> FactorizedEncoder:
    """ERFNet encoder (Romera et al. 2018, SSN baseline [48]; SSN Table 2 first row)."""
    return FactorizedEncoder(
        NonBottleneck1D,
        bias=True,
        activation="relu",
        in_channels=in_channels,
        norm_layer=norm_layer,
    )


def ssn_encoder(
    *, in_channels: int = 3, norm_layer: NormLayer = nn.BatchNorm2d
) -> FactorizedEncoder:
    """SSN encoder: ERFNet plan with Lightweight Non-Bottleneck-1D modules (SSN §5, Table 2-3)."""
    return FactorizedEncoder(
        LightweightNonBottleneck1D,
        bias=False,
        activation="prelu",
        in_channels=in_channels,
        norm_layer=norm_layer,
    )
