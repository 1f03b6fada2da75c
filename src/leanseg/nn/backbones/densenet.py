"""DenseNet-121/169/161 backbones with torchvision parameter names and the LDN customisations.

Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017), DenseNet-BC: every unit
is BN-ReLU-conv1x1 (to ``bn_size * growth_rate`` maps) then BN-ReLU-conv3x3 (``growth_rate``
maps) over the concatenation of all earlier maps of its block (thesis 2.7.1, Figure 2.6).

Customisations of thesis chapter 4:

- **Split dense blocks** (thesis 4.4.1, Figure 4.1): DB3 is cut into DB3a and DB3b with a
  strided 2x2 average pool (D) between them; ``split_db3`` is the number of units in DB3a
  (default: none; half the block gives the ``64→4`` model). ``split_db4`` splits DB4 the same
  way (``128→4``). Parameter names do not change, so ImageNet weights load as they are.
- **Dilated variants** (thesis 4.6.2): ``output_stride=16`` removes the pool of transition 3
  and dilates DB4 by 2 (``LDDN-121 16→4``); ``output_stride=8`` also removes the pool of
  transition 2 and dilates DB3 by 2 and DB4 by 4 (``DDN-121 8↓``, ``LDDN-121 8→4``).
- **Stride-2 skip** (``db1_stride=2``, the ``32→2`` model): the stem max-pool is moved behind
  DB1, so DB1 runs at stride 2 and offers a stride-2 skip; the thesis does not describe how its
  32→2 model obtains stride-2 features. This choice is the one that reproduces the doubled FLOP
  count of thesis Table 4.1 (154.5 vs 75.4 GFLOP).
- **Gradient checkpointing** (thesis 4.5, Table 4.11) via :mod:`leanseg.nn.checkpointing`, see
  :data:`CHECKPOINTING`; recomputation never updates batch-norm running statistics a second
  time.

Features are returned by stride: the output of each dense block (fragment) before its
transition, e.g. ``{4: DB1, 8: DB2, 16: DB3a, 32: DB3b, 64: DB4}`` for the 64→4 model. The
coarsest map is passed through ``norm5`` and ReLU (the ImageNet model's final activation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.backbones.pretrained import load_pretrained
from leanseg.nn.checkpointing import checkpointed
from leanseg.nn.layers import NormLayer

# Table 4.11 label -> (unit segments, also checkpoint stem/transitions/upsampling).
# Unit segments: "" none, "3x3", "cat1x1", "cat1x1|3x3" (two segments), "unit" (one segment),
# "block" (each dense block fragment is one segment).
CHECKPOINTING: dict[str, tuple[str, bool]] = {
    "none": ("", False),
    "(3x3)": ("3x3", False),
    "(cat 1x1)": ("cat1x1", False),
    "(cat 1x1)(3x3)": ("cat1x1|3x3", False),
    "(block)(stem)(TD)(UP)": ("block", True),
    "(cat 1x1 3x3)": ("unit", False),
    "(cat 1x1 3x3)(stem)(TD)(UP)": ("unit", True),
}


class _DenseLayer(nn.Module):
    """One DenseNet-BC unit: BN-ReLU-conv1x1, BN-ReLU-conv3x3 over the concatenated inputs."""

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        dilation: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = norm_layer(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            bn_size * growth_rate,
            growth_rate,
            3,
            padding=dilation,
            dilation=dilation,
            bias=False,
        )
        # One of the unit-segment modes of CHECKPOINTING; set by the backbone.
        self.checkpointing = ""

    def _cat_1x1(self, *inputs: Tensor) -> Tensor:
        x = torch.cat(inputs, dim=1)
        return self.conv1(F.relu(self.norm1(x)))

    def _3x3(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.norm2(x)))

    def _unit(self, *inputs: Tensor) -> Tensor:
        return self._3x3(self._cat_1x1(*inputs))

    def forward(self, inputs: list[Tensor]) -> Tensor:
        mode = self.checkpointing
        if mode == "unit":
            return checkpointed(self._unit, self, *inputs)
        if mode in ("cat1x1", "cat1x1|3x3"):
            bottleneck = checkpointed(self._cat_1x1, self, *inputs)
        else:
            bottleneck = self._cat_1x1(*inputs)
        if mode in ("3x3", "cat1x1|3x3"):
            return checkpointed(self._3x3, self, bottleneck)
        return self._3x3(bottleneck)


class _DenseBlock(nn.Module):
    """Units named ``denselayer1..n`` (torchvision names); runs any contiguous range of them."""

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        dilation: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            layer = _DenseLayer(
                in_channels + i * growth_rate, growth_rate, bn_size, dilation, norm_layer
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def run(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Units ``start..stop-1`` on input ``x``; returns the concatenation of x and their maps."""
        features = [x]
        for i in range(start, stop):
            features.append(getattr(self, f"denselayer{i + 1}")(features))
        return torch.cat(features, dim=1)


class _Transition(nn.Module):
    """Transition-down (TD): BN-ReLU-conv1x1 halving the width, then 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, norm_layer: NormLayer):
        super().__init__()
        self.norm = norm_layer(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(Backbone):
    """DenseNet-BC feature extractor with split blocks, dilation and checkpointing.

    Args:
        growth_rate: ``k`` (32, or 48 for DenseNet-161).
        block_config: units per dense block.
        num_init_features: width of the stem convolution.
        bn_size: bottleneck factor (``4k`` maps before the 3x3 convolution).
        split_db3: units in DB3a; DB3b follows a strided average pool (thesis 4.4.1).
        split_db4: units in DB4a; DB4b follows a strided average pool (the 128→4 model).
        output_stride: 32 (no dilation), 16 (DB4 dilated by 2) or 8 (DB3 by 2, DB4 by 4).
        db1_stride: 4 (torchvision), or 2: the stem max-pool moves behind DB1 (32→2 model).
        checkpointing: a key of :data:`CHECKPOINTING` (thesis Table 4.11).
        in_channels: channels of the input images.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        split_db3: int | None = None,
        split_db4: int | None = None,
        output_stride: int = 32,
        db1_stride: int = 4,
        checkpointing: str = "none",
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self._check_arguments(
            in_channels=in_channels,
            output_stride=output_stride,
            splits=(split_db3, split_db4),
            block_config=block_config,
            db1_stride=db1_stride,
            checkpointing=checkpointing,
        )
        self.splits = {3: split_db3, 4: split_db4}
        self.in_channels = in_channels
        self.db1_stride = db1_stride
        infos = self._build_features(
            growth_rate, block_config, num_init_features, bn_size, output_stride, norm_layer
        )
        # A dilated block shares its stride with the previous one: the deeper map wins.
        self._all_infos = infos
        self.feature_info = list({info.stride: info for info in infos}.values())
        self.checkpointing = checkpointing
        unit_mode, self._outer = CHECKPOINTING[checkpointing]
        for module in self.modules():
            if isinstance(module, _DenseLayer):
                module.checkpointing = "" if unit_mode == "block" else unit_mode
        self._block_segments = unit_mode == "block"
        self._initialise()

    @staticmethod
    def _check_arguments(
        *,
        in_channels: int,
        output_stride: int,
        splits: tuple[int | None, int | None],
        block_config: tuple[int, int, int, int],
        db1_stride: int,
        checkpointing: str,
    ) -> None:
        """Refuse arguments out of range; ``splits``: ``split_db3``, ``split_db4``.

        Raises:
            ValueError: naming the argument.
        """
        split_db3, split_db4 = splits
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if output_stride != 32 and (split_db3 or split_db4):
            raise ValueError("split blocks and dilation (output_stride < 32) do not combine")
        if db1_stride not in (2, 4):
            raise ValueError(f"db1_stride must be 2 or 4, got {db1_stride}")
        if checkpointing not in CHECKPOINTING:
            raise ValueError(
                f"checkpointing {checkpointing!r} unknown; choose one of: "
                + ", ".join(CHECKPOINTING)
            )
        for name, split, n in (
            ("split_db3", split_db3, block_config[2]),
            ("split_db4", split_db4, block_config[3]),
        ):
            if split is not None and not 0 < split < n:
                raise ValueError(f"{name} must be in 1..{n - 1}, got {split}")

    def _build_features(
        self,
        growth_rate: int,
        block_config: tuple[int, int, int, int],
        num_init_features: int,
        bn_size: int,
        output_stride: int,
        norm_layer: NormLayer,
    ) -> list[FeatureInfo]:
        """``self.features`` under torchvision's names (stem, dense blocks, transitions,
        ``norm5``); returns every map's info, split blocks' first halves included."""
        dilation = {3: 2 if output_stride == 8 else 1, 4: {8: 4, 16: 2, 32: 1}[output_stride]}
        pool = {2: output_stride != 8, 3: output_stride == 32}
        self.features = nn.Sequential()
        self.features.add_module(
            "conv0",
            nn.Conv2d(self.in_channels, num_init_features, 7, stride=2, padding=3, bias=False),
        )
        self.features.add_module("norm0", norm_layer(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        channels = num_init_features
        infos: list[FeatureInfo] = []
        stride = self.db1_stride
        for i, num_layers in enumerate(block_config, start=1):
            block = _DenseBlock(
                num_layers, channels, growth_rate, bn_size, dilation.get(i, 1), norm_layer
            )
            self.features.add_module(f"denseblock{i}", block)
            split = self.splits.get(i)
            if split is not None:
                infos.append(FeatureInfo(stride, channels + split * growth_rate, f"denseblock{i}a"))
                stride *= 2
            channels += num_layers * growth_rate
            infos.append(FeatureInfo(stride, channels, f"denseblock{i}"))
            if i < len(block_config):
                keep = pool.get(i, True)
                self.features.add_module(
                    f"transition{i}", _Transition(channels, channels // 2, keep, norm_layer)
                )
                channels //= 2
                stride = stride * 2 if keep else stride
                if i == 1 and self.db1_stride == 2:
                    stride *= 2
        self.features.add_module("norm5", norm_layer(channels))
        return infos

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _segment(self, module: nn.Module, function: Callable[..., Tensor], x: Tensor) -> Tensor:
        return checkpointed(function, module, x) if self._outer else function(x)

    def _stem(self, x: Tensor) -> Tensor:
        f = self.features
        x = f.relu0(f.norm0(f.conv0(x)))
        return f.pool0(x) if self.db1_stride == 4 else x

    def _block(self, index: int, x: Tensor, start: int, stop: int) -> Tensor:
        block: _DenseBlock = getattr(self.features, f"denseblock{index}")
        if self._block_segments:
            return checkpointed(lambda t: block.run(t, start, stop), block, x)
        return block.run(x, start, stop)

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        f = self.features
        x = self._segment(self, self._stem, images)
        outputs: list[Tensor] = []
        for i in range(1, 5):
            block: _DenseBlock = getattr(f, f"denseblock{i}")
            split = self.splits.get(i)
            if split is not None:
                x = self._block(i, x, 0, split)
                outputs.append(x)
                x = F.avg_pool2d(x, 2, stride=2)  # D of Figure 4.1
                x = self._block(i, x, split, block.num_layers)
            else:
                x = self._block(i, x, 0, block.num_layers)
            if i < 4:
                outputs.append(x)
                transition = getattr(f, f"transition{i}")
                x = self._segment(transition, transition, x)
                if i == 1 and self.db1_stride == 2:
                    x = f.pool0(x)
        outputs.append(F.relu(f.norm5(x)))
        return {info.stride: out for info, out in zip(self._all_infos, outputs, strict=True)}


_CONFIGS: dict[str, dict[str, Any]] = {
    "densenet121": {"growth_rate": 32, "block_config": (6, 12, 24, 16), "num_init_features": 64},
    "densenet169": {"growth_rate": 32, "block_config": (6, 12, 32, 32), "num_init_features": 64},
    "densenet161": {"growth_rate": 48, "block_config": (6, 12, 36, 24), "num_init_features": 96},
}


def _build(name: str, pretrained: str | None, **kwargs: Any) -> DenseNet:
    model = DenseNet(**_CONFIGS[name], **kwargs)
    if pretrained:
        load_pretrained(model, pretrained, first_conv="features.conv0.weight")
    return model


def densenet121(
    *,
    pretrained: str | None = None,
    split_db3: int | None = None,
    split_db4: int | None = None,
    output_stride: int = 32,
    db1_stride: int = 4,
    checkpointing: str = "none",
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> DenseNet:
    """DenseNet-121 (6.95 M backbone parameters); ``split_db3=12`` gives LDN121 64→4."""
    return _build(
        "densenet121",
        pretrained,
        split_db3=split_db3,
        split_db4=split_db4,
        output_stride=output_stride,
        db1_stride=db1_stride,
        checkpointing=checkpointing,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )


def densenet169(
    *,
    pretrained: str | None = None,
    split_db3: int | None = None,
    split_db4: int | None = None,
    output_stride: int = 32,
    db1_stride: int = 4,
    checkpointing: str = "none",
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> DenseNet:
    """DenseNet-169 (12.5 M backbone parameters)."""
    return _build(
        "densenet169",
        pretrained,
        split_db3=split_db3,
        split_db4=split_db4,
        output_stride=output_stride,
        db1_stride=db1_stride,
        checkpointing=checkpointing,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )


def densenet161(
    *,
    pretrained: str | None = None,
    split_db3: int | None = None,
    split_db4: int | None = None,
    output_stride: int = 32,
    db1_stride: int = 4,
    checkpointing: str = "none",
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> DenseNet:
    """DenseNet-161 (growth rate 48; 26.5 M backbone parameters)."""
    return _build(
        "densenet161",
        pretrained,
        split_db3=split_db3,
        split_db4=split_db4,
        output_stride=output_stride,
        db1_stride=db1_stride,
        checkpointing=checkpointing,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )
