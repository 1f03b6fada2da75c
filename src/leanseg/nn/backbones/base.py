"""What every backbone declares: the feature maps it returns, by stride.

A backbone's ``forward(images)`` returns ``{stride: tensor}`` ordered by increasing stride
(``{4: (B, C4, H/4, W/4), 8: ..., 16: ..., 32: ...}``), and ``feature_info`` lists the same strides
with their channel counts, so that context modules and heads read their input widths from the
declaration instead of hard-coding them (the detectron2 ``output_shape`` / timm ``FeatureInfo``
habit). ``tests/test_models.py`` checks every registered backbone's declaration against its output.
Context modules declare their output the same way, and :func:`feature_at` is how a context or head
picks the feature it reads from such a declaration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from leanseg.config import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics a backbone's weights expect: ``(x - mean) / std`` on 0..1 values.

    A backbone's own statistics are RGB ones (3 values); :meth:`for_channels` derives those of
    a model built for another number of input channels.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, in_channels: int) -> Normalization | None:
        """The statistics for ``in_channels`` inputs, where they follow from these RGB ones.

        3 channels: these. 1 channel (grey-scale): the averages of the three means and of the
        three stds, so that a grey image normalised with them gives each RGB channel roughly
        the value an RGB image with R = G = B would, which is what the summed first-layer
        filters of :func:`~leanseg.nn.backbones.pretrained.adapt_input_channels` expect.
        Any other count (RGB-D, multispectral): ``None``, the extra channels' statistics are
        the data's, which only the user knows.
        """
        if in_channels == len(self.mean):
            return self
        if in_channels == 1:
            return Normalization(
                mean=(sum(self.mean) / len(self.mean),), std=(sum(self.std) / len(self.std),)
            )
        return None


# torchvision's ImageNet statistics: what the ResNet, DenseNet and HRNet weights were trained with.
IMAGENET_NORMALIZATION = Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone returns."""

    stride: int
    channels: int
    # Module that produces it, in the backbone's own parameter names (e.g. ``layer3``).
    name: str


def feature_at(
    feature_info: Sequence[FeatureInfo], stride: int | None = None, *, option: str = "in_stride"
) -> FeatureInfo:
    """The declared feature at ``stride``; the coarsest one when ``stride`` is ``None``.

    Args:
        feature_info: what a backbone or context module declares.
        stride: the stride asked for.
        option: name of the argument ``stride`` came from, for the error message.

    Raises:
        ValueError: no declared feature has that stride; the message names ``option`` and lists
            the strides there are, e.g. ``in_stride 64 not among features [4, 8, 16, 32]``.
    """
    by_stride = {info.stride: info for info in feature_info}
    if stride is None:
        stride = max(by_stride)
    if stride not in by_stride:
        raise ValueError(f"{option} {stride} not among features {sorted(by_stride)}")
    return by_stride[stride]


class Backbone(nn.Module):
    """Base of all backbones: holds ``feature_info`` and answers questions about it.

    Every builder takes ``in_channels`` (3 by default): the channels of the images it reads
    (1 for grey-scale microscopy, 4 for RGB-D ...); with ``pretrained`` weights the file's RGB
    first convolution is adapted to them (``pretrained.adapt_input_channels``).
    """

    feature_info: list[FeatureInfo]
    in_channels: int = 3
    # The input normalisation of the backbone's pretrained weights; ``data.mean`` / ``data.std``
    # default to it (``leanseg.models.input_normalization``).
    normalization: Normalization = IMAGENET_NORMALIZATION

    def forward(self, images: Tensor) -> dict[int, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def strides(self) -> list[int]:
        return [info.stride for info in self.feature_info]

    @property
    def output_stride(self) -> int:
        """The coarsest stride; input sizes are padded to a multiple of it."""
        return max(self.strides)

    def channels(self, stride: int) -> int:
        for info in self.feature_info:
            if info.stride == stride:
                return info.channels
        raise KeyError(f"backbone has no stride-{stride} feature; it has {self.strides}")
