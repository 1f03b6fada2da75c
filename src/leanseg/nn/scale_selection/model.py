"""The scale-selection model of thesis chapter 3 and its Table 3.1 baselines.

``image -> pyramid + shared extractor (§3.2.1-3.2.2) -> representation -> back-end classifier
(§3.2.4) -> class scores at the input size``. The representation is what the four rows of
thesis Table 3.1 differ in, the ``selection`` of :class:`ScaleSelectionSegmentor`:

- ``"single"``: level 0 only, no multiplexer - Single3+5 with ``feature_strides=(8, 16)``
  (pool3 and relu5_3), Single5 with ``(16,)`` (relu5_3 alone, on the same stride-8 grid).
- ``"fixed"``: the levels ``fixed_levels`` concatenated everywhere - FixedScales (0, 3, 7).
- ``"depth"``: the multiplexer picks M levels per pixel from disparity - ScaleInvariant.

Only the levels a selection reads are extracted (one level for Single, M for FixedScales, N for
ScaleInvariant). The builders at the bottom make each row with the thesis's settings; the
extractor is VGG-16 with BN in group 5 by default and may be any leanseg backbone.

Choices where the thesis is silent: the class scores on the stride-8 grid are upsampled
bilinearly to the input size (the input is not padded; the grid covers it, see
:mod:`.pyramid`); the 7x7 and first 1x1 convolutions have no bias (BN follows) and the last
1x1 has one; ``hidden_channels`` (thesis: 1024) may be made smaller for small machines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone
from leanseg.nn.backbones.vgg import vgg16
from leanseg.nn.layers import NormLayer, conv_bn_relu
from leanseg.nn.losses import class_balanced_cross_entropy, cross_entropy
from leanseg.nn.scale_selection.multiplexer import ScaleMultiplexer, disparity_on_grid
from leanseg.nn.scale_selection.pyramid import PyramidExtractor
from leanseg.nn.segmentor import check_targets
from leanseg.structures.labels import IGNORE_INDEX

SELECTIONS = ("single", "fixed", "depth")


class BackEndClassifier(nn.Module):
    """Back-end classifier of thesis §3.2.4.

    A 7x7 and a 1x1 convolution with ``hidden_channels`` maps, each followed by BN and ReLU, then
    a 1x1 convolution to the class scores.

    Args:
        in_channels: width of the (concatenated) representation.
        num_classes: output classes.
        hidden_channels: maps of the first two layers (thesis: 1024).
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden_channels: int = 1024,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv7x7 = conv_bn_relu(in_channels, hidden_channels, 7, norm_layer)
        self.conv1x1 = conv_bn_relu(hidden_channels, hidden_channels, 1, norm_layer)
        self.classifier = nn.Conv2d(hidden_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.conv1x1(self.conv7x7(x)))


class ScaleSelectionSegmentor(nn.Module):
    """Pyramid extractor, representation by ``selection``, back-end classifier (thesis ch. 3).

    ``forward(images, disparity, stereo_baseline)`` returns class scores ``(B, C, H, W)`` at the
    input size; ``disparity`` and ``stereo_baseline`` are only read by ``selection="depth"``.
    ``losses(images, targets)`` reads ``targets["label"]`` and, for ``"depth"``,
    ``targets["disparity"]`` and ``targets["stereo_baseline"]``.

    The model declares :class:`~leanseg.nn.segmentor.ExtraInputs`: ``extra_inputs`` is
    ``("disparity", "stereo_baseline")`` for ``"depth"`` and ``()`` otherwise, so the trainer and
    evaluator pass those sample entries (resized and flipped with the image at test time).

    Args:
        backbone: the shared extractor (thesis: VGG-16 with BN in group 5, :func:`vgg16`).
        num_classes: output classes.
        selection: ``"single"``, ``"fixed"`` or ``"depth"`` (module docstring).
        feature_strides: backbone features concatenated per level (thesis: ``(8, 16)``).
        out_stride: stride of the common grid; defaults to the finest feature stride.
        alpha: pyramid subsampling factor (thesis §3.2.1: 1.3).
        num_levels: N, pyramid levels (thesis: 8).
        fixed_levels: levels of ``"fixed"`` (thesis FixedScales: 0, 3, 7).
        reference_scales: ``W_R`` in metres for ``"depth"`` (thesis §3.2.3: 1, 4, 7).
        receptive_field: ``w_rf`` in pixels of eq. 3.1 (thesis: 185 for VGG-16 conv5_3).
        fallback_levels: levels of pixels without valid disparity; ``None``: level 0 for each
            reference scale (see :mod:`.multiplexer`).
        hidden_channels: width of the back-end classifier (thesis §3.2.4: 1024).
        class_balancing: weight the loss per class by ``min(max_class_weight, 1 / p(c))``
            (thesis §3.4); otherwise plain cross-entropy.
        max_class_weight: the cap of those weights (thesis: 10^3).
        ignore_index: label value the loss ignores.
        norm_layer: normalisation layer factory of the back-end classifier.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        selection: str = "depth",
        feature_strides: Sequence[int] = (8, 16),
        out_stride: int | None = None,
        alpha: float = 1.3,
        num_levels: int = 8,
        fixed_levels: Sequence[int] = (0, 3, 7),
        reference_scales: Sequence[float] = (1.0, 4.0, 7.0),
        receptive_field: float = 185.0,
        fallback_levels: Sequence[int] | None = None,
        hidden_channels: int = 1024,
        class_balancing: bool = True,
        max_class_weight: float = 1e3,
        ignore_index: int = IGNORE_INDEX,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if selection not in SELECTIONS:
            raise ValueError(f"selection {selection!r} unknown; choose one of: {SELECTIONS}")
        if selection == "fixed" and any(not 0 <= level < num_levels for level in fixed_levels):
            raise ValueError(f"fixed_levels {list(fixed_levels)} outside 0..{num_levels - 1}")
        self.pyramid = PyramidExtractor(
            backbone,
            feature_strides=feature_strides,
            out_stride=out_stride,
            alpha=alpha,
            num_levels=num_levels,
        )
        self.multiplexer = ScaleMultiplexer(
            num_levels=num_levels,
            alpha=alpha,
            reference_scales=reference_scales,
            receptive_field=receptive_field,
            fallback_levels=fallback_levels,
        )
        self.selection = selection
        self.fixed_levels = tuple(fixed_levels)
        num_selected = {
            "single": 1,
            "fixed": len(self.fixed_levels),
            "depth": self.multiplexer.num_scales,
        }[selection]
        self.classifier = BackEndClassifier(
            num_selected * self.pyramid.out_channels,
            num_classes,
            hidden_channels=hidden_channels,
            norm_layer=norm_layer,
        )
        self.num_classes = num_classes
        # ExtraInputs: the sample entries forward needs besides the image.
        self.extra_inputs: tuple[str, ...] = (
            ("disparity", "stereo_baseline") if selection == "depth" else ()
        )
        self.class_balancing = class_balancing
        self.max_class_weight = max_class_weight
        self.ignore_index = ignore_index

    @property
    def size_divisor(self) -> int:
        """The stride of the feature grid: any input size runs (the pyramid pads each level
        itself), and the grid's cell is what a training crop needs at least two of."""
        return self.pyramid.out_stride

    @property
    def backbone(self) -> Backbone:
        """The shared extractor (what ``train.backbone_lr_mult`` applies to)."""
        return self.pyramid.backbone

    @property
    def in_channels(self) -> int:
        """Channels of the images the model reads (the extractor's ``in_channels``)."""
        return self.backbone.in_channels

    @property
    def required_targets(self) -> tuple[str, ...]:
        """The keys of ``targets`` that :meth:`losses` reads: the label, and the extra inputs."""
        return ("label", *self.extra_inputs)

    def selected_levels(
        self, disparity: Tensor, stereo_baseline: Tensor | float, image_size: tuple[int, int]
    ) -> Tensor:
        """The multiplexer's routing ``(B, M, h, w)`` on the feature grid (thesis Fig. 3.2).

        Args:
            disparity: ``(B, H, W)`` or ``(B, 1, H, W)`` in pixels of the input image.
            stereo_baseline: metres, a number or ``(B,)``.
            image_size: ``(H, W)`` of the input image.
        """
        grid = self.pyramid.grid_size(image_size)
        on_grid = disparity_on_grid(disparity, self.pyramid.out_stride, grid)
        return self.multiplexer.route(on_grid, stereo_baseline)

    def representation(
        self,
        images: Tensor,
        disparity: Tensor | None = None,
        stereo_baseline: Tensor | float | None = None,
    ) -> Tensor:
        """The classifier's input ``(B, M * C, h, w)`` on the feature grid."""
        if self.selection == "single":
            return self.pyramid(images, [0])[:, 0]
        if self.selection == "fixed":
            return self.pyramid(images, self.fixed_levels).flatten(1, 2)
        if disparity is None or stereo_baseline is None:
            raise ValueError(
                "selection 'depth' (ScaleInvariant) needs the disparity map and the stereo "
                "baseline of each image"
            )
        levels = self.selected_levels(disparity, stereo_baseline, tuple(images.shape[-2:]))
        return self.multiplexer(self.pyramid(images), levels)

    def forward(
        self,
        images: Tensor,
        disparity: Tensor | None = None,
        stereo_baseline: Tensor | float | None = None,
    ) -> Tensor:
        """Class scores ``(B, num_classes, H, W)`` for images ``(B, in_channels, H, W)``.

        Args:
            images: normalised images.
            disparity: ``(B, H, W)`` disparity in pixels of ``images`` (``"depth"`` only).
            stereo_baseline: stereo baseline in metres, a number or ``(B,)`` (``"depth"`` only).
        """
        height, width = images.shape[-2:]
        scores = self.classifier(self.representation(images, disparity, stereo_baseline))
        stride = self.pyramid.out_stride
        size = (scores.shape[-2] * stride, scores.shape[-1] * stride)
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        return scores[..., :height, :width]

    def losses(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss_ce": ...}``, class-balanced as thesis §3.4 unless ``class_balancing`` is off.

        ``targets``: ``"label"`` ``(B, H, W)``; for ``"depth"`` also ``"disparity"`` ``(B, H, W)``
        and ``"stereo_baseline"`` ``(B,)``.

        Raises:
            MissingTargetError: a key of :attr:`required_targets` is not in ``targets``.
        """
        check_targets(targets, self.required_targets, reader=f"{type(self).__name__}.losses")
        scores = self(images, targets.get("disparity"), targets.get("stereo_baseline"))
        label = targets["label"]
        if self.class_balancing:
            loss = class_balanced_cross_entropy(
                scores, label, self.ignore_index, self.max_class_weight
            )
        else:
            loss = cross_entropy(scores, label, self.ignore_index)
        return {"loss_ce": loss}


def _build(
    selection: str,
    num_classes: int,
    backbone: Backbone | None,
    pretrained: str | None,
    **kwargs: object,
) -> ScaleSelectionSegmentor:
    if backbone is None:
        backbone = vgg16(pretrained=pretrained)
    elif pretrained:
        raise ValueError("pass either a backbone or pretrained (VGG-16 weights), not both")
    return ScaleSelectionSegmentor(backbone, num_classes=num_classes, selection=selection, **kwargs)


# The builders' options are typed with tuples (not Sequence) so that configs can set them
# (``leanseg.models`` checks config values against these annotations).


def single5(
    *,
    num_classes: int,
    backbone: Backbone | None = None,
    pretrained: str | None = None,
    hidden_channels: int = 1024,
    class_balancing: bool = True,
    max_class_weight: float = 1e3,
    ignore_index: int = IGNORE_INDEX,
) -> ScaleSelectionSegmentor:
    """Single5 of thesis Table 3.1: relu5_3 of the full-resolution image only.

    relu5_3 (stride 16) is upsampled to the stride-8 grid so that only the missing pool3 skip
    tells it from Single3+5. ``backbone`` defaults to VGG-16 with BN in group 5
    (``pretrained``: a torchvision ``vgg16`` weight file).
    """
    return _build(
        "single",
        num_classes,
        backbone,
        pretrained,
        feature_strides=(16,),
        out_stride=8,
        hidden_channels=hidden_channels,
        class_balancing=class_balancing,
        max_class_weight=max_class_weight,
        ignore_index=ignore_index,
    )


def single3_5(
    *,
    num_classes: int,
    backbone: Backbone | None = None,
    pretrained: str | None = None,
    hidden_channels: int = 1024,
    class_balancing: bool = True,
    max_class_weight: float = 1e3,
    ignore_index: int = IGNORE_INDEX,
) -> ScaleSelectionSegmentor:
    """Single3+5 of thesis Table 3.1: pool3 and relu5_3 of the full-resolution image."""
    return _build(
        "single",
        num_classes,
        backbone,
        pretrained,
        feature_strides=(8, 16),
        hidden_channels=hidden_channels,
        class_balancing=class_balancing,
        max_class_weight=max_class_weight,
        ignore_index=ignore_index,
    )


def fixed_scales(
    *,
    num_classes: int,
    backbone: Backbone | None = None,
    pretrained: str | None = None,
    fixed_levels: tuple[int, ...] = (0, 3, 7),
    alpha: float = 1.3,
    num_levels: int = 8,
    hidden_channels: int = 1024,
    class_balancing: bool = True,
    max_class_weight: float = 1e3,
    ignore_index: int = IGNORE_INDEX,
) -> ScaleSelectionSegmentor:
    """FixedScales of thesis Table 3.1: levels 0, 3 and 7 concatenated at every pixel."""
    return _build(
        "fixed",
        num_classes,
        backbone,
        pretrained,
        fixed_levels=fixed_levels,
        alpha=alpha,
        num_levels=num_levels,
        hidden_channels=hidden_channels,
        class_balancing=class_balancing,
        max_class_weight=max_class_weight,
        ignore_index=ignore_index,
    )


def scale_invariant(
    *,
    num_classes: int,
    backbone: Backbone | None = None,
    pretrained: str | None = None,
    alpha: float = 1.3,
    num_levels: int = 8,
    reference_scales: tuple[float, ...] = (1.0, 4.0, 7.0),
    receptive_field: float = 185.0,
    fallback_levels: tuple[int, ...] | None = None,
    hidden_channels: int = 1024,
    class_balancing: bool = True,
    max_class_weight: float = 1e3,
    ignore_index: int = IGNORE_INDEX,
) -> ScaleSelectionSegmentor:
    """ScaleInvariant of thesis Table 3.1 (Fig. 3.1): depth-guided levels, W_R = 1, 4, 7 m."""
    return _build(
        "depth",
        num_classes,
        backbone,
        pretrained,
        alpha=alpha,
        num_levels=num_levels,
        reference_scales=reference_scales,
        receptive_field=receptive_field,
        fallback_levels=fallback_levels,
        hidden_channels=hidden_channels,
        class_balancing=class_balancing,
        max_class_weight=max_class_weight,
        ignore_index=ignore_index,
    )


# Table 3.1 row -> builder.
VARIANTS: dict[str, Callable[..., ScaleSelectionSegmentor]] = {
    "single5": single5,
    "single3+5": single3_5,
    "fixed_scales": fixed_scales,
    "scale_invariant": scale_invariant,
}
