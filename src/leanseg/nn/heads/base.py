"""What heads share: the dense-score loss, and the optional capabilities a head may declare.

A head whose output representation *is* dense class scores at the input size (bilinear, DUC,
CARAFE, DeepLabV3+, NRD, ERFNet decoder, ...) trains with the same loss, so it subclasses
:class:`DenseHead` and only writes ``forward``. Heads with their own representation (quadtrees,
pyramids, auxiliary outputs) implement ``losses`` themselves, next to the head (STYLE.md rule 3).

Beyond ``forward`` and ``losses`` (:class:`~leanseg.nn.segmentor.Head`) a head may declare two
optional capabilities, each a protocol the engine checks with ``isinstance``; a head without one
is left alone:

- :class:`CostReporting`: its compute depends on the input (QGN's active sites, QGN 3.3), so it
  names its levels and reports the cost of its last forward pass; evaluation and prediction
  report the cost per image.
- :class:`EvaluationHook`: it adapts to validation results (QGN A.2 class weighting), so the
  trainer tells it the per-class IoU after every evaluation.

What a head's *class* can do is declared on it (:class:`HeadCapabilities`), so that export and
evaluation read a declaration instead of testing for head classes they know by name:

- ``onnx_unexportable``: why the head cannot be captured as one ONNX graph with dynamic height
  and width (export refuses it with that reason), ``None`` when it exports;
- ``predicts_instances``: the head predicts instances besides class scores, so evaluation
  reports instance AP (:func:`head_predicts_instances`).

Every head of the builder table sets both in its own class body, so a reader sees them beside
the head and a test checks that none is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.losses import (
    class_balanced_cross_entropy,
    cross_entropy,
    partial_cross_entropy,
)
from leanseg.nn.pixel_sampling import labels_at_pixels, random_pixels, scores_at_pixels


class HeadCapabilities:
    """Class-level declarations of what a head can do, with the defaults of a plain dense head.

    Attributes:
        onnx_unexportable: why the head does not export to ONNX (the end of the message
            :func:`leanseg.export.refuse_unexportable` raises), ``None`` when it exports.
        predicts_instances: the head predicts instances besides class scores (``thing_classes``
            and an instance prediction, as :class:`~leanseg.nn.heads.ssn_instance.SSNInstanceHead`),
            so evaluation scores them (instance AP).

    :meth:`loss_names` declares the terms the head's ``losses`` returns: ``loss_ce`` for a plain
    dense head; a head that adds terms (an auxiliary loss, a loss per quadtree level, an
    instance loss) or replaces it says so in its own class.
    """

    onnx_unexportable: ClassVar[str | None] = None
    predicts_instances: ClassVar[bool] = False

    def loss_names(self) -> tuple[str, ...]:
        """The keys of the dict ``losses`` returns with this head's options, in no order."""
        return ("loss_ce",)


def head_predicts_instances(model_or_head: object) -> bool:
    """Whether ``model_or_head`` (a segmentor, or a head itself) declares instance predictions;
    ``False`` for a model without a head and for anything that declares nothing."""
    head = getattr(model_or_head, "head", model_or_head)
    return bool(getattr(head, "predicts_instances", False))


@runtime_checkable
class CostReporting(Protocol):
    """A head with a data-dependent cost: active sites per level of its last forward pass."""

    def cost_levels(self) -> tuple[str, ...]:
        """Names of every level the head can report, coarse to fine (``("Q5", ..., "Q0")``)."""
        ...

    def active_sites(self) -> dict[str, int]:
        """Active sites per level of the last forward pass, coarse to fine, for the levels that
        pass computed (an anytime head may stop early); empty before the first pass."""
        ...


@runtime_checkable
class EvaluationHook(Protocol):
    """A head that adapts to validation results."""

    def on_evaluation(self, iou: Sequence[float] | Tensor) -> None:
        """Called by the trainer after every validation with the per-class IoU (NaN for classes
        absent from the evaluated images)."""
        ...


class PartialLabels:
    """Mixin of heads that train on label sets (``data.union.partial_labels``, several datasets).

    The builder sets :attr:`label_set_mask` (``(C + S, C)`` bool,
    :meth:`~leanseg.data.union.UnionLabelSpace.label_set_mask`) when the union label space has
    label sets; the head's main loss is then :func:`~leanseg.nn.losses.partial_cross_entropy`.
    """

    label_set_mask: Tensor | None = None


class DenseLoss(PartialLabels):
    """Mixin of heads whose loss is the per-pixel cross-entropy of dense class scores.

    :meth:`dense_loss` is that loss; with :attr:`class_balancing` (set by ``model.class_balancing``)
    it weighs every pixel by thesis §3.4's ``min(10^3, 1 / p(c))``, ``p(c)`` the class's share of
    the batch's labelled pixels (:func:`~leanseg.nn.losses.class_balanced_cross_entropy`); with
    :attr:`hard_pixel_fraction` (set by ``model.hard_pixel_fraction``) only the hardest fraction
    of the labelled pixels trains (:func:`~leanseg.nn.losses.hardest_pixels_mean`); with label
    sets (:class:`PartialLabels`) it is the partial-label cross-entropy.
    """

    ignore_index: int
    class_balancing: bool = False
    hard_pixel_fraction: float | None = None

    def dense_loss(
        self, scores: Tensor, label: Tensor, class_weights: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy of ``(B, C, H, W)`` scores against ``(B, H, W)`` labels (or sampled
        pixels, ``(B, C, K, 1)`` against ``(B, K, 1)``); optional fixed
        ``class_weights`` (the builder combines neither them nor label sets with class
        balancing, nor label sets with class weights)."""
        if self.label_set_mask is not None:
            return partial_cross_entropy(scores, label, self.label_set_mask, self.ignore_index)
        if self.class_balancing:
            return class_balanced_cross_entropy(scores, label, self.ignore_index)
        return cross_entropy(
            scores, label, self.ignore_index, class_weights, self.hard_pixel_fraction
        )


class DenseHead(HeadCapabilities, DenseLoss, nn.Module):
    """Base of dense-score heads: class scores at the head's own stride (:meth:`coarse_scores`),
    upsampled bilinearly to the input size by ``forward``; ``losses`` is
    :meth:`DenseLoss.dense_loss` of those scores (:meth:`scores_loss`).

    Subclasses set ``self.ignore_index`` and implement ``coarse_scores(features) -> (B, C, h, w)``.
    With :attr:`loss_points` (set by ``model.loss_points``) the loss is computed at that many
    random pixels per image, the scores interpolated there from the coarse scores
    (:mod:`leanseg.nn.pixel_sampling`), instead of at every pixel of the upsampled scores.
    """

    loss_points: int | None = None

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        """``(B, C, h, w)`` class scores before the upsampling to the input size."""
        raise NotImplementedError

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        scores = self.coarse_scores(features)
        if scores.shape[-2:] == tuple(image_size):
            return scores
        return F.interpolate(scores, size=image_size, mode="bilinear", align_corners=False)

    def scores_loss(
        self,
        features: dict[int, Tensor],
        label: Tensor,
        image_size: tuple[int, int],
        class_weights: Tensor | None = None,
    ) -> Tensor:
        """:meth:`dense_loss` of the head's scores: at every pixel, or at :attr:`loss_points`
        random pixels per image (all of them when the image has no more pixels than that)."""
        height, width = image_size
        if self.loss_points is None or self.loss_points >= height * width:
            return self.dense_loss(self(features, image_size), label, class_weights)
        coarse = self.coarse_scores(features)
        pixels = random_pixels(label.shape[0], image_size, self.loss_points, label.device)
        scores = scores_at_pixels(coarse, pixels, image_size)
        return self.dense_loss(scores, labels_at_pixels(label, pixels), class_weights)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        return {"loss_ce": self.scores_loss(features, targets["label"], image_size)}
