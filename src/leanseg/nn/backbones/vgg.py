"""VGG-16 (configuration D) backbone with torchvision parameter names, as thesis §3.2.2 uses it.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015), configuration D: thirteen 3x3 convolutions with biases in five groups, a 2x2 max-pool
after each of the first four groups. The layout of ``features`` is torchvision's
``models.vgg16().features`` index by index (``features.0`` conv1_1, ``features.2`` conv1_2, ...,
``features.28`` conv5_3), so torchvision's ImageNet file (``vgg16-397923af.pth``) loads as it is;
its ``classifier.*`` keys are dropped.

Thesis §3.2.2 changes two things, both kept here:

- The extractor ends at ``relu5_3`` (13 weight layers): there is no ``pool5`` and no classifier.
- ``norm5`` (default on): a batch normalisation before each non-linearity of group 5
  (``relu5_1``, ``relu5_2``, ``relu5_3``). It sits in the slot of the parameter-free ReLU it
  precedes, which becomes ``Sequential(norm, ReLU)``: its parameters are
  ``features.25.0.*``, ``features.27.0.*`` and ``features.29.0.*`` and every convolution keeps its
  torchvision name. Those three keep their initialisation when ImageNet weights are loaded.
  (Thesis §3.4 trains them "without learnable parameters": pass
  ``norm_layer=functools.partial(nn.BatchNorm2d, affine=False)`` for that.)

Features, one per stride (choice where the thesis is silent beyond ``pool3``): each of strides
4 and 8 is the pooled map that enters the next group (``pool2``, 128 channels; ``pool3``, 256
channels, the skip of §3.2.2), and stride 16 is ``relu5_3`` (512 channels; its receptive field is
the thesis's w_rf = 185 pixels of eq. 3.1). ``relu4_3`` shares stride 8 with ``pool3`` and is not
returned. Inputs of any size work; max-pooling floors, so sizes that are multiples of 16 map
exactly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone, FeatureInfo
from leanseg.nn.backbones.pretrained import load_pretrained
from leanseg.nn.layers import NormLayer

# Configuration D: output widths of the convolutions, "M" a 2x2 max-pool (torchvision's "D").
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip
# The pooled maps returned as features: index of the pool in the layout above -> name.
_POOL_FEATURES = {5: "pool2", 9: "pool3"}


class VGG(Backbone):
    """VGG feature extractor returning ``{4: pool2, 8: pool3, 16: relu5_3}`` (VGG-16 widths).

    Args:
        layout: convolution widths and ``"M"`` pools, as :data:`VGG16_LAYOUT`.
        norm5: batch normalisation before the non-linearities of the last group (thesis §3.2.2).
        in_channels: channels of the input images.
        norm_layer: normalisation layer factory for ``norm5``.
    """

    def __init__(
        self,
        layout: tuple[int | str, ...] = VGG16_LAYOUT,
        *,
        norm5: bool = True,
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = in_channels
        last_pool = max(i for i, item in enumerate(layout) if item == "M")
        self.features = nn.Sequential()
        self._returned: dict[int, int] = {}  # index in ``features`` -> stride
        infos: list[FeatureInfo] = []
        norm_slots: list[int] = []
        channels, stride = in_channels, 1  # ``channels``: width of the map so far
        for position, item in enumerate(layout):
            index = len(self.features)
            if item == "M":
                self.features.append(nn.MaxPool2d(2, stride=2))
                stride *= 2
                if position in _POOL_FEATURES:
                    self._returned[index] = stride
                    infos.append(FeatureInfo(stride, channels, f"features.{index}"))
                continue
            self.features.append(nn.Conv2d(channels, item, 3, padding=1))
            if norm5 and position > last_pool:
                norm_slots.append(len(self.features))
                self.features.append(nn.Sequential(norm_layer(item), nn.ReLU(inplace=True)))
            else:
                self.features.append(nn.ReLU(inplace=True))
            channels = item
        last = len(self.features) - 1
        self._returned[last] = stride
        infos.append(FeatureInfo(stride, channels, f"features.{last}"))
        self.feature_info = infos
        # Parameter names the ImageNet file lacks: the group-5 normalisations (module docstring).
        self.norm5_prefixes = tuple(f"features.{i}." for i in norm_slots)
        self._initialise()

    def _initialise(self) -> None:
        # torchvision's VGG initialisation: He (fan-out) for convolutions, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        outputs: dict[int, Tensor] = {}
        x = images
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self._returned:
                outputs[self._returned[index]] = x
        return outputs


def _build(pretrained: str | None, **kwargs: Any) -> VGG:
    model = VGG(VGG16_LAYOUT, **kwargs)
    if pretrained:
        load_pretrained(
            model, pretrained, allow_missing=model.norm5_prefixes, first_conv="features.0.weight"
        )
    return model


def vgg16(
    *,
    pretrained: str | None = None,
    norm5: bool = True,
    in_channels: int = 3,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> VGG:
    """VGG-16 up to ``relu5_3`` with BN in group 5 (thesis §3.2.2; 14.7 M parameters).

    ``pretrained`` is a torchvision ``vgg16`` state-dict file; ``norm5=False`` gives the plain
    ImageNet network (every key of that file then loads, none is left initialised).
    """
    return _build(pretrained, norm5=norm5, in_channels=in_channels, norm_layer=norm_layer)
