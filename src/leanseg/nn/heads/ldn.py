"""The full LDN upsampling path: transition-up blocks, classifier, auxiliary soft-target losses.

Thesis chapter 4 (Figure 4.1): the coarsest backbone map F goes through spatial pyramid
pooling, the context module in front of this head (``model.context: {name: spp}``,
:class:`leanseg.nn.context.spp.SPP`; Table 4.9's ablations are the ``psp_spp`` and ``conv``
contexts); transition-up (TU) blocks (Figure 4.3) then blend the result with every finer backbone
map down to ``out_stride``; the classifier (CLA) projects to the classes and upsamples bilinearly
to the input. With a DenseNet backbone this is LDN, with a ResNet the ``ResNet18 32→4`` family of
Table 4.1; with ``out_stride`` equal to the backbone's stride there are no TU blocks
(``DN121 32↓``, ``DDN-121 8↓``). Without a context the TU blocks start from F itself. The simpler
:class:`leanseg.nn.heads.ladder.LadderHead` stays for the conv-BN-ReLU SwiftNet-like ladder.

Choices where the thesis is silent (each reproduces the model sizes of Tables 4.1, 4.2, 4.9
within 5 %, see ``benchmarks/papers/ldn_tables.py``):

- TU output widths: 256 for the first two TU blocks after the SPP, 128 for the later ones
  (``channels`` overrides them); the 1x1 after the sum halves the width of the sum.
- Units are BN-ReLU-conv (pre-activation, as in DenseNet); the classifier is BN-ReLU-conv1x1
  with bias.
- DWS (Table 4.9): the 3x3 blend becomes a depthwise 3x3 (BN-ReLU-dwconv) followed by a
  pointwise 1x1 convolution without a normalisation in between.
- Auxiliary losses (eq. 4.2-4.3): on each SPP pool (the grids a pooling context declares in
  ``pooled_channels`` and returns in ``ContextFeatures.pooled``) and after each TU block except
  the last one (whose features feed the main prediction); ``aux_loss="pyramid"`` is the chapter-5
  variant: predictions from the SPP output and every TU output except the last (strides 64, 32,
  16, 8 in LDN 64→4), no SPP-pool terms, weight 1 for the main loss and 0.4 for the mean
  auxiliary loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.checkpointing import checkpointed
from leanseg.nn.context.base import ContextFeatures
from leanseg.nn.heads.base import HeadCapabilities, PartialLabels
from leanseg.nn.layers import NormLayer, bn_relu_conv
from leanseg.nn.losses import cross_entropy, partial_cross_entropy
from leanseg.structures.labels import IGNORE_INDEX

# ----------------------------------------------------------------------------- soft targets


def class_histograms(label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """One-hot labels ``(B, C, H, W)`` as float; ignored pixels, and label-set values
    (``>= num_classes``, :class:`~leanseg.nn.heads.base.PartialLabels`), are all-zero columns."""
    valid = (label != ignore_index) & (label < num_classes)
    one_hot = F.one_hot(torch.where(valid, label, 0).long(), num_classes)  # (B, H, W, C)
    one_hot = one_hot * valid.unsqueeze(-1)
    return one_hot.permute(0, 3, 1, 2).float()


def soft_targets(one_hot: Tensor, size: tuple[int, int]) -> Tensor:
    """Class histograms of the windows of a ``size`` grid (thesis eq. 4.3), by average pooling.

    Where the label size is a multiple of ``size`` each cell is an exact ``k x k`` window;
    otherwise adaptive pooling takes the (overlapping) windows PyTorch assigns to each cell.
    Ignored pixels contribute to no class, so a cell's histogram sums to its valid fraction.
    """
    height, width = one_hot.shape[-2:]
    if height % size[0] == 0 and width % size[1] == 0:
        kernel = (height // size[0], width // size[1])
        return F.avg_pool2d(one_hot, kernel, stride=kernel)
    return F.adaptive_avg_pool2d(one_hot, size)


def soft_cross_entropy(scores: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy between predictions and soft targets (thesis eq. 4.2).

    ``-sum y log softmax(s)`` over cells and classes, divided by the total target mass, which
    is ``WH / k^2`` (the number of cells) when nothing is ignored, as in eq. 4.2; with ignored
    pixels every valid pixel keeps the same weight. All-ignored batches give 0.
    """
    log_probs = F.log_softmax(scores.float(), dim=1)
    return -(targets * log_probs).sum() / targets.sum().clamp(min=1e-6)


# ----------------------------------------------------------------------------- blocks


class TransitionUpLDN(nn.Module):
    """Transition-up of thesis Figure 4.3.

    Upsample ``U_{i-1}`` to the skip's size, project the skip to the width of ``U_{i-1}``, sum,
    reduce with 1x1 to half that width, blend with one 3x3 (or depthwise-separable) convolution.
    """

    def __init__(
        self,
        skip_channels: int,
        in_channels: int,
        out_channels: int,
        norm_layer: NormLayer,
        *,
        separable: bool = False,
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.project = bn_relu_conv(skip_channels, in_channels, 1, norm_layer)
        self.reduce = bn_relu_conv(in_channels, mid, 1, norm_layer)
        if separable:
            self.blend = nn.Sequential(
                bn_relu_conv(mid, mid, 3, norm_layer, groups=mid),
                nn.Conv2d(mid, out_channels, 1, bias=False),
            )
        else:
            self.blend = bn_relu_conv(mid, out_channels, 3, norm_layer)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.blend(self.reduce(up + self.project(skip)))


class Classifier(nn.Sequential):
    """CLA: BN-ReLU-conv1x1 (with bias) to the classes."""

    def __init__(self, in_channels: int, num_classes: int, norm_layer: NormLayer) -> None:
        super().__init__(
            norm_layer(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, num_classes, 1)
        )


# ----------------------------------------------------------------------------- head


class LDNHead(HeadCapabilities, PartialLabels, nn.Module):
    """Ladder-style upsampling + classifier with auxiliary soft-target losses.

    Args:
        feature_info: what the backbone (or context module) returns; the coarsest map starts
            the upsampling path (C, the SPP output, in the thesis models).
        num_classes: number of output classes.
        ignore_index: label value excluded from the losses.
        pooled_channels: widths of the pooled grids the context module returns beside the
            pyramid (``Context.pooled_channels``; supplied by the builder); each gets an
            auxiliary classifier with ``aux_loss="ladder"``. Empty without a pooling context.
        out_stride: stride of the finest TU output, where the classifier runs.
        channels: TU output widths from coarse to fine; ``None`` for 256, 256, 128, 128, ...
        separable: depthwise-separable 3x3 blends (Table 4.9 "DWS").
        aux_loss: ``"ladder"`` (thesis 4.6.1), ``"pyramid"`` (chapter 5) or ``"none"``.
        main_weight: weight of the main loss; ``None`` for the thesis' value of the chosen
            ``aux_loss``: 0.6 with ``"ladder"`` (4.6.1), 1.0 with ``"pyramid"`` (chapter 5)
            and with ``"none"``.
        aux_weight: weight of the mean auxiliary loss (0.4).
        checkpoint: checkpoint every TU block ("(UP)" of Table 4.11).
        norm_layer: normalisation layer factory.
    """

    onnx_unexportable = None
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        pooled_channels: Sequence[int] = (),
        out_stride: int = 4,
        channels: tuple[int, ...] | None = None,
        separable: bool = False,
        aux_loss: Literal["ladder", "pyramid", "none"] = "ladder",
        main_weight: float | None = None,
        aux_weight: float = 0.4,
        checkpoint: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        top = feature_at(feature_info)
        feature_at(feature_info, out_stride, option="out_stride")
        skips = sorted(
            (info for info in feature_info if out_stride <= info.stride < top.stride),
            key=lambda info: info.stride,
            reverse=True,
        )
        self.top_stride = top.stride
        self.skip_strides = [info.stride for info in skips]
        self.pooled_channels = tuple(pooled_channels)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.aux_loss = aux_loss
        if main_weight is None:
            main_weight = 0.6 if aux_loss == "ladder" else 1.0
        self.main_weight = main_weight
        self.aux_weight = aux_weight
        self.checkpoint = checkpoint
        n = len(skips)
        widths = list(channels) if channels is not None else [256, 256] + [128] * max(0, n - 2)
        if len(widths) < n:
            raise ValueError(f"channels lists {len(widths)} widths for {n} TU blocks")
        in_widths = [top.channels, *widths][:n]
        self.steps = nn.ModuleList(
            TransitionUpLDN(info.channels, w_in, w_out, norm_layer, separable=separable)
            for info, w_in, w_out in zip(skips, in_widths, widths[:n], strict=True)
        )
        final = widths[n - 1] if n else top.channels
        self.classifier = Classifier(final, num_classes, norm_layer)
        # Auxiliary classifiers: not used at inference (no FLOPs counted there).
        aux_in: list[int] = []
        if aux_loss == "ladder":
            aux_in = [*self.pooled_channels, *widths[: max(0, n - 1)]]
        elif aux_loss == "pyramid":
            aux_in = [top.channels, *widths[: max(0, n - 1)]]
        self.aux_classifiers = nn.ModuleList(Classifier(w, num_classes, norm_layer) for w in aux_in)

    def _upsampling_path(self, features: dict[int, Tensor]) -> list[Tensor]:
        """The coarsest map and every TU output, coarse first; the last feeds the classifier."""
        x = features[self.top_stride]
        path = [x]
        for stride, step in zip(self.skip_strides, self.steps, strict=True):
            if self.checkpoint and torch.is_grad_enabled():
                x = checkpointed(step, step, x, features[stride])
            else:
                x = step(x, features[stride])
            path.append(x)
        return path

    def _pooled(self, features: dict[int, Tensor]) -> list[Tensor]:
        """The context's pooled grids, checked against the widths this head was built for."""
        if not self.pooled_channels:
            return []
        pooled = features.pooled if isinstance(features, ContextFeatures) else []
        if [p.shape[1] for p in pooled] != list(self.pooled_channels):
            raise ValueError(
                f"the head was built for pooled grids of widths {list(self.pooled_channels)} "
                f"but the features carry {[p.shape[1] for p in pooled]}: pass it the output of "
                "the context module whose pooled_channels it was given"
            )
        return pooled

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        x = self._upsampling_path(features)[-1]
        scores = self.classifier(x)  # (B, C, H / out_stride, W / out_stride)
        return F.interpolate(scores, size=image_size, mode="bilinear", align_corners=False)

    def _has_aux_loss(self) -> bool:
        return self.aux_loss != "none" and len(self.aux_classifiers) > 0

    def loss_names(self) -> tuple[str, ...]:
        """``loss_ce``, and ``loss_aux`` (thesis 4.5, the soft-target pyramid) when it is on."""
        return ("loss_ce", "loss_aux") if self._has_aux_loss() else ("loss_ce",)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        path = self._upsampling_path(features)
        label = targets["label"]
        scores = F.interpolate(
            self.classifier(path[-1]), size=image_size, mode="bilinear", align_corners=False
        )
        if self.label_set_mask is None:
            main = cross_entropy(scores, label, self.ignore_index)
        else:  # label sets: partial labels in the main loss, ignored by the pyramid's targets
            main = partial_cross_entropy(scores, label, self.label_set_mask, self.ignore_index)
        if not self._has_aux_loss():
            return {"loss_ce": main}
        if self.aux_loss == "ladder":
            aux_inputs = [*self._pooled(features), *path[1:-1]]
        else:
            aux_inputs = path[:-1]
        one_hot = class_histograms(label, self.num_classes, self.ignore_index)
        terms = []
        for feature, classifier in zip(aux_inputs, self.aux_classifiers, strict=True):
            target = soft_targets(one_hot, tuple(feature.shape[-2:]))
            terms.append(soft_cross_entropy(classifier(feature), target))
        aux = torch.stack(terms).mean()
        return {"loss_ce": self.main_weight * main, "loss_aux": self.aux_weight * aux}
