"""Quadtree Generating Network head: sparse transposed-ResNet decoder (QGN 3.2-3.3, Table 7).

The head turns the stride-32 encoder output into a quadtree prediction ``Q5 .. Q0``: a ``k+1``-way
prediction (``k`` classes + composite, :func:`~leanseg.structures.quadtree.composite_channel`) at
every active site of every level. Level 5 is dense (all stride-32 sites). Going from level ``l`` to
``l-1`` the *propagation scheme* (QGN 3.3) picks which sites spawn their four children (QGN eq. 11):

- ``"all"``: every site;
- ``"gtc"``: sites whose ground-truth T-pyramid cell is composite (needs labels: training via
  :meth:`QGNHead.losses`, or evaluation via :meth:`QGNHead.predict_quadtree` with ``label``);
- ``"pc"``: sites whose predicted class is composite.

Block ``Trans_l`` (QGN Table 7: Trans4 512->256 x6 units, Trans3 256->128 x4, Trans2 128->64 x3,
Trans1 64->64 x3, Trans0 64->64 x3 = 38 conv layers) = 2x nearest upsampling of the propagated
sites -> plus a 1x1 skip from the encoder feature of that stride (where the backbone has one) ->
sparse residual units -> 1x1 prediction layer for ``Q_l``.

Choices where the paper is silent (also in ``docs/notes/issue-4.md``):

- By default block ``Trans_l`` runs its residual units on the propagated sites of level ``l+1``
  and then upsamples (QGN 3: "several sparse convolutions followed by an upsampling"); with
  ``units_before_upsample=False`` they run at level ``l`` after the upsampling and skip (4x the
  cost, finer Q0). The 512-wide input of Trans4 is a 1x1 conv-BN-ReLU projection of the encoder
  output. With PSPNet's pyramid pooling in front (QGN Table 4, the ADE20K model) the context
  module ``psp_spp`` already outputs 512 maps and ``in_channels: null`` drops the projection.
- A skip is a 1x1 conv and BatchNorm (the paper names only the connection): encoder
  features are not normalised for the decoder (EfficientNet-Lite's linear bottlenecks are far
  larger than ResNet's post-ReLU maps), and a plain 1x1 conv let each level add its unscaled
  skip to the running sum, so the finer levels' logits grew level by level and learned worse
  than the coarse ones (issue 26; ``benchmarks/results/qgn_skips_400iters_*_fix.json``).
- Skips at every level where the backbone returns a feature of that stride. The ResNet option
  ``stem_features: true`` (set in every ``configs/qgn`` file) adds the stride-2 stem output
  (Table 7's Block0, 64 channels) for ``Q1`` and the input image (3 channels) for ``Q0``: the
  only encoder signals at those strides, and without them eq. 11's upsampling would leave
  ``Q1``/``Q0`` constant over each 2x2 block (QGN 3.2, "Skip connections"). A backbone without
  them still works; those levels then simply get no skip.
- Residual unit = the ResNet basic block (3x3-BN-ReLU-3x3-BN + identity or 1x1-BN shortcut).
- Fixed weighting (QGN eq. 7): ``beta_l = gamma ** l`` (``beta_0 = 1``; each coarser level gets
  ``gamma`` times the next finer one's weight). Adaptive (QGN eq. 8): ``beta_l`` is the running
  mean of ``L_l`` with ``delta`` (starting at 1), used detached, as the equation states. Eq. 8
  says it follows [16] (AdaLoss), whose weights are the *reciprocal* of each loss's running
  mean; the two readings weigh the coarse levels against the fine ones oppositely, so
  ``loss_weighting="adaloss"`` offers the reciprocal (same running mean, same ``delta``).
- T-pyramid targets use the ``"wildcard"`` ignore merge by default (ignore never forces
  propagation); cells whose target is ignore are left out of eq. 4's mean.
- Anytime knobs: ``min_level`` (stop after that level; the rest is nearest-upsampled) and
  ``max_sites`` (at most this many sites propagated per level, those with the highest composite
  probability first).
- Class weighting (QGN A.2, ``class_weighting="median"``): after every evaluation of
  ``leanseg train`` (``train.eval_interval``, on ``eval.max_images`` images of the val split: our
  stand-in for the paper's 100 held-out images every 5,000 iterations) classes whose IoU is below
  the median IoU get weight 2 in eq. 4, the others 1; classes with no IoU (absent from the
  evaluated images) and the composite class keep weight 1. Eq. 4 stays a sum over sites divided by
  the number of sites, so a weight of 2 doubles those sites' loss, as A.2 says.

The head declares both optional head capabilities (:mod:`leanseg.nn.heads.base`): it reports its
cost (:class:`~leanseg.nn.heads.base.CostReporting`, levels ``"Q5" .. "Q0"``) and adapts its class
weights to evaluations (:class:`~leanseg.nn.heads.base.EvaluationHook`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import HeadCapabilities
from leanseg.nn.layers import conv_bn_relu
from leanseg.nn.sparse import (
    SparseBatchNorm,
    SparseReLU,
    SparseSequential,
    SparseTensor,
    SubmConv2d,
    gather_dense,
)
from leanseg.structures.labels import IGNORE_INDEX
from leanseg.structures.quadtree import COMPOSITE, composite_channel, t_pyramid

Scheme = Literal["all", "gtc", "pc"]
LossWeighting = Literal["fixed", "adaptive", "adaloss"]
IgnoreMerge = Literal["wildcard", "keep"]
ClassWeighting = Literal["none", "median"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)


class SparseResidualUnit(nn.Module):
    """ResNet basic block on active sites: 3x3-BN-ReLU-3x3-BN + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = SparseSequential(
            SubmConv2d(in_channels, out_channels, 3, bias=False),
            SparseBatchNorm(out_channels),
            SparseReLU(),
            SubmConv2d(out_channels, out_channels, 3, bias=False),
            SparseBatchNorm(out_channels),
        )
        self.shortcut = (
            SparseSequential(
                SubmConv2d(in_channels, out_channels, 1, bias=False), SparseBatchNorm(out_channels)
            )
            if in_channels != out_channels
            else None
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return x.replace(F.relu(self.body(x).features + identity.features))


@dataclass
class QuadtreePrediction:
    """What :meth:`QGNHead.predict_quadtree` returns.

    Attributes:
        logits: per level (index = level) the ``k+1``-way logits at its active sites.
        active_sites: per level the number of active sites (the predicted cost).
        scores: dense ``(B, k, H, W)`` log-probabilities of the ``k`` classes, leaves accumulated
            (QGN 3.2); ``None`` when not requested.
    """

    logits: dict[int, SparseTensor]
    active_sites: dict[int, int]
    scores: Tensor | None = None


class QGNHead(HeadCapabilities, nn.Module):
    """QGN decoder and prediction layers (QGN Fig. 2, Table 7, eq. 4-8, 11).

    Reports its cost per level (:meth:`cost_levels`, :meth:`active_sites`) and takes evaluation
    results (:meth:`on_evaluation`), the two optional capabilities of
    :mod:`leanseg.nn.heads.base`.

    Args:
        feature_info: what the backbone (or context module) returns; the coarsest stride is the
            root level (``log2(stride)``, 5 for stride 32).
        num_classes: number of real classes ``k``; predictions have ``k+1`` channels.
        ignore_index: label value left out of the loss.
        in_channels: width of the 1x1 conv-BN-ReLU projection feeding Trans4 (512 in Table 7);
            ``None`` feeds the coarsest map as it is (after a context module that already
            outputs the decoder's width, e.g. PSPNet pooling for QGN Table 4).
        decoder_channels: output width of each block, coarse to fine (Table 7).
        decoder_units: residual units per block (Table 7).
        train_scheme: propagation scheme of :meth:`losses`.
        eval_scheme: propagation scheme of :meth:`forward` (``"gtc"`` needs labels, so only
            :meth:`predict_quadtree` with ``label`` accepts it).
        loss_weighting: ``"fixed"`` (eq. 7), ``"adaptive"`` (eq. 8 as printed: the weight is
            the running mean of the level's loss) or ``"adaloss"`` (the reciprocal of that
            running mean: the AdaLoss rule of the paper eq. 8 cites, [16], which puts every
            level's loss on the same scale; see the module docstring).
        gamma: ratio of a level's weight to the next finer one's (eq. 7).
        delta: running-average factor of adaptive weighting (eq. 8), both readings.
        ignore_merge: how ignore merges in the target T-pyramid (``"wildcard"`` or ``"keep"``).
        min_level: anytime knob, finest level computed at inference (0 = full quadtree).
        max_sites: anytime knob, cap on propagated sites per level at inference.
        units_before_upsample: run block ``Trans_l``'s residual units on the propagated sites of
            level ``l+1`` before upsampling (QGN 3: "several sparse convolutions followed by an
            upsampling"; matches Table 2's FLOPs) instead of at level ``l`` after it.
        class_weighting: ``"none"`` or ``"median"`` (QGN A.2, see the module docstring).
        predict_init_std: standard deviation of the normal initialisation of every level's
            prediction layer (bias zero), so that the first losses sit near ``log(k+1)``, as a
            segmentation classifier usually starts (MMSegmentation's decode heads: 0.01). The
            paper does not state its initialisation. ``None`` keeps the sparse convolution's
            Kaiming initialisation, whose logits start several units apart (a first loss of
            4-8 per level on CamVid, ``log(12) = 2.5``): what the QGN rows trained before this
            option used.
    """

    onnx_unexportable = (
        "its decoder evaluates a data-dependent set of sparse sites per image (QGN 3.3), which "
        "a trace would freeze to the sites of the example input; run it in PyTorch"
    )
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        in_channels: int | None = 512,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 64),
        decoder_units: tuple[int, ...] = (6, 4, 3, 3, 3),
        train_scheme: Scheme = "all",
        eval_scheme: Scheme = "all",
        loss_weighting: LossWeighting = "fixed",
        gamma: float = 1.0,
        delta: float = 0.99,
        ignore_merge: IgnoreMerge = "wildcard",
        min_level: int = 0,
        max_sites: int | None = None,
        units_before_upsample: bool = True,
        class_weighting: ClassWeighting = "none",
        predict_init_std: float | None = 0.01,
    ) -> None:
        super().__init__()
        top = feature_at(feature_info)
        self.top = self._root_level(top.stride, decoder_channels, decoder_units)
        for name, value, options in (
            ("train_scheme", train_scheme, Scheme),
            ("eval_scheme", eval_scheme, Scheme),
            ("loss_weighting", loss_weighting, LossWeighting),
            ("ignore_merge", ignore_merge, IgnoreMerge),
            ("class_weighting", class_weighting, ClassWeighting),
        ):
            if value not in get_args(options):
                raise ValueError(f"{name} must be one of {get_args(options)}, got {value!r}")
        self.class_weighting = class_weighting
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.train_scheme = train_scheme
        self.eval_scheme = eval_scheme
        self.loss_weighting = loss_weighting
        self.gamma = gamma
        self.delta = delta
        self.ignore_merge = ignore_merge
        self.min_level = min_level
        self.max_sites = max_sites
        self.units_before_upsample = units_before_upsample
        self._active_sites: dict[int, int] = {}  # of the last decoder pass, by level
        if in_channels is None:
            in_channels = top.channels
            self.project: nn.Module = nn.Identity()
        else:
            self.project = conv_bn_relu(top.channels, in_channels)
        self._build_decoder(feature_info, in_channels, decoder_channels, decoder_units)
        if predict_init_std is not None:
            if predict_init_std <= 0:
                raise ValueError(f"predict_init_std must be positive, got {predict_init_std!r}")
            for layer in self.predict.values():
                nn.init.normal_(layer.weight, std=predict_init_std)
                nn.init.zeros_(layer.bias)
        self.register_buffer("adaptive_beta", torch.ones(self.top + 1), persistent=True)
        # Eq. 4 weight per class, composite last (QGN A.2); all ones unless "median" updates it.
        self.register_buffer("class_weights", torch.ones(num_classes + 1), persistent=True)

    @staticmethod
    def _root_level(
        top_stride: int, decoder_channels: tuple[int, ...], decoder_units: tuple[int, ...]
    ) -> int:
        """The root level ``log2(top_stride)``, which needs one decoder block per finer level.

        Raises:
            ValueError: the stride is not a power of two, or the block counts do not match it.
        """
        top = int(math.log2(top_stride))
        if 2**top != top_stride:
            raise ValueError(f"coarsest stride must be a power of two, got {top_stride}")
        if len(decoder_channels) != top or len(decoder_units) != top:
            raise ValueError(
                f"need {top} decoder blocks for stride {top_stride}, got "
                f"{len(decoder_channels)} channels / {len(decoder_units)} unit counts"
            )
        return top

    def _build_decoder(
        self,
        feature_info: list[FeatureInfo],
        in_channels: int,
        decoder_channels: tuple[int, ...],
        decoder_units: tuple[int, ...],
    ) -> None:
        """The prediction layer of every level (``predict``), the residual units of each block
        (``blocks``) and the 1x1 conv + BN of each encoder skip (``skips``), keyed by level."""
        outputs = self.num_classes + 1
        self.predict = nn.ModuleDict({str(self.top): SubmConv2d(in_channels, outputs, 1)})
        self.skips = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        width = in_channels
        for index, (channels, units) in enumerate(
            zip(decoder_channels, decoder_units, strict=True)
        ):
            level = self.top - 1 - index
            skip = next((info for info in feature_info if info.stride == 2**level), None)
            if skip is not None:
                skip_width = channels if self.units_before_upsample else width
                self.skips[str(level)] = SparseSequential(
                    SubmConv2d(skip.channels, skip_width, 1, bias=False),
                    SparseBatchNorm(skip_width),
                )
            self.blocks[str(level)] = SparseSequential(
                *(SparseResidualUnit(width if u == 0 else channels, channels) for u in range(units))
            )
            self.predict[str(level)] = SubmConv2d(channels, outputs, 1)
            width = channels

    # ------------------------------------------------------------------ decoder

    def _select(
        self,
        logits: Tensor,
        coords: Tensor,
        scheme: Scheme,
        target: Tensor | None,
        cap: int | None,
    ) -> Tensor:
        """Indices of the sites at one level that propagate to the next finer level (QGN 3.3)."""
        composite = composite_channel(self.num_classes)
        if scheme == "all":
            keep = torch.ones(coords.shape[0], dtype=torch.bool, device=coords.device)
        elif scheme == "gtc":
            if target is None:
                raise ValueError("the 'gtc' propagation scheme needs labels")
            keep = target[coords[:, 0], coords[:, 1], coords[:, 2]] == COMPOSITE
        else:
            keep = logits.argmax(dim=1) == composite
        index = keep.nonzero().squeeze(1)
        if cap is not None and index.numel() > cap:
            score = logits.detach()[index].softmax(dim=1)[:, composite]
            index = index[score.topk(cap).indices.sort().values]
        return index

    def predict_quadtree(
        self,
        features: dict[int, Tensor],
        image_size: tuple[int, int],
        *,
        scheme: Scheme | None = None,
        label: Tensor | None = None,
        min_level: int | None = None,
        max_sites: int | None = None,
        dense_scores: bool = True,
    ) -> QuadtreePrediction:
        """Run the decoder level by level and return the quadtree prediction.

        Args:
            features: the encoder pyramid ``{stride: (B, C, h, w)}``.
            image_size: ``(H, W)`` of the (padded) input.
            scheme: propagation scheme; defaults to ``train_scheme`` in training mode and to
                ``eval_scheme`` otherwise.
            label: ``(B, H, W)`` labels, needed by ``"gtc"``.
            min_level: finest level to compute (defaults to the head's knob; 0 in training).
            max_sites: cap on propagated sites per level (defaults to the head's knob at
                inference; no cap in training).
            dense_scores: also accumulate the dense ``(B, k, H, W)`` scores (QGN 3.2).
        """
        if scheme is None:
            scheme = self.train_scheme if self.training else self.eval_scheme
        if min_level is None:
            min_level = 0 if self.training else self.min_level
        if max_sites is None and not self.training:
            max_sites = self.max_sites
        pyramid = None
        if label is not None and scheme == "gtc":
            pyramid = t_pyramid(label, self.top + 1, self.ignore_index, self.ignore_merge)
        x = SparseTensor.from_dense(self.project(features[2**self.top]))
        logits: dict[int, SparseTensor] = {self.top: self.predict[str(self.top)](x)}
        for level in range(self.top - 1, min_level - 1, -1):
            parent_logits = logits[level + 1]
            target = pyramid[level + 1] if pyramid is not None else None
            keep = self._select(parent_logits.features, x.coords, scheme, target, max_sites)
            x = x.select(keep)
            if self.units_before_upsample:
                x = self.blocks[str(level)](x)
            x = x.upsample()  # QGN eq. 11
            if str(level) in self.skips:
                skip = gather_dense(features[2**level], x.coords)
                x = x.replace(x.features + self.skips[str(level)](x.replace(skip)).features)
            if not self.units_before_upsample:
                x = self.blocks[str(level)](x)
            logits[level] = self.predict[str(level)](x)
        active = {level: out.num_sites for level, out in logits.items()}
        self._active_sites = active
        scores = self._accumulate(logits, image_size, min_level) if dense_scores else None
        return QuadtreePrediction(logits, active, scores)

    def _accumulate(
        self, logits: dict[int, SparseTensor], image_size: tuple[int, int], min_level: int
    ) -> Tensor:
        """Dense class log-probabilities from the leaves (QGN 3.2).

        Finer predictions overwrite their parent's; the composite channel is dropped after the
        softmax, so a leaf whose top class is composite takes its second-best class.
        """
        top = logits[self.top]
        dense = torch.log_softmax(top.to_dense(), dim=1)  # (B, k+1, h5, w5)
        for level in range(self.top - 1, min_level - 1, -1):
            dense = dense.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            sites = logits[level]
            if sites.num_sites == 0:
                continue
            c = sites.coords
            values = torch.log_softmax(sites.features, dim=1).to(dense.dtype)
            dense = dense.permute(0, 2, 3, 1).index_put((c[:, 0], c[:, 1], c[:, 2]), values)
            dense = dense.permute(0, 3, 1, 2)
        if dense.shape[-2:] != tuple(image_size):
            dense = F.interpolate(dense, size=image_size, mode="nearest")
        return dense[:, : self.num_classes]

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Dense class scores ``(B, k, H, W)``; :meth:`active_sites` reports the cost."""
        scheme = self.eval_scheme if not self.training else self.train_scheme
        if scheme == "gtc":
            raise ValueError("forward cannot use 'gtc' (no labels); use predict_quadtree")
        return self.predict_quadtree(features, image_size, scheme=scheme).scores  # type: ignore[return-value]

    # ------------------------------------------------------------------ cost report

    def cost_levels(self) -> tuple[str, ...]:
        """The quadtree levels ``("Q5", ..., "Q0")``, coarse to fine (root = ``Q{top}``)."""
        return tuple(f"Q{level}" for level in range(self.top, -1, -1))

    def active_sites(self) -> dict[str, int]:
        """Active sites per level of the last decoder pass (``forward``, ``losses`` or
        :meth:`predict_quadtree`), coarse to fine, down to the finest level it computed: the
        predicted cost (QGN 3.3)."""
        return {
            f"Q{level}": self._active_sites[level] for level in sorted(self._active_sites)[::-1]
        }

    # ------------------------------------------------------------------ loss

    def level_weights(self) -> list[float]:
        """``beta_l`` of QGN eq. 6, index = level (eq. 7 fixed, eq. 8 adaptive, or its
        reciprocal for ``"adaloss"``)."""
        if self.loss_weighting == "adaptive":
            return self.adaptive_beta.tolist()
        if self.loss_weighting == "adaloss":
            return (1.0 / self.adaptive_beta.clamp(min=1e-6)).tolist()
        return [self.gamma**level for level in range(self.top + 1)]

    def loss_names(self) -> tuple[str, ...]:
        """One term per quadtree level, ``loss_q{top}`` .. ``loss_q0`` (QGN eq. 6)."""
        return tuple(f"loss_q{level}" for level in range(self.top, -1, -1))

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Level losses ``beta_l * L_l`` (QGN eq. 4, 6), keyed ``loss_q5 .. loss_q0``."""
        label = targets["label"]
        pyramid = t_pyramid(label, self.top + 1, self.ignore_index, self.ignore_merge)
        pred = self.predict_quadtree(
            features, image_size, scheme=self.train_scheme, label=label, dense_scores=False
        )
        composite = composite_channel(self.num_classes)
        betas = self.level_weights()
        out: dict[str, Tensor] = {}
        raw = []
        for level, sites in pred.logits.items():
            c = sites.coords
            target = pyramid[level][c[:, 0], c[:, 1], c[:, 2]]
            target = torch.where(target == COMPOSITE, torch.full_like(target, composite), target)
            per_site = F.cross_entropy(
                sites.features.float(),
                target,
                weight=self.class_weights,
                ignore_index=self.ignore_index,
                reduction="sum",
            )
            level_loss = per_site / (target != self.ignore_index).sum().clamp(min=1)  # eq. 4
            raw.append(level_loss.detach())
            out[f"loss_q{level}"] = betas[level] * level_loss
        if self.training and self.loss_weighting in ("adaptive", "adaloss"):
            with torch.no_grad():
                for level, value in zip(pred.logits, raw, strict=True):  # eq. 8
                    beta = self.adaptive_beta[level]
                    self.adaptive_beta[level] = self.delta * beta + (1 - self.delta) * value
        return out

    def on_evaluation(self, iou: Sequence[float] | Tensor) -> None:
        """QGN A.2: weight 2 for the classes below the median IoU of this evaluation.

        Called by the trainer after every validation with the per-class IoU (NaN for classes
        absent from the evaluated images); does nothing unless ``class_weighting="median"``.
        """
        if self.class_weighting != "median":
            return
        iou = torch.as_tensor(iou, dtype=torch.float64)[: self.num_classes]
        known = iou[~iou.isnan()]
        weights = torch.ones_like(self.class_weights)
        if known.numel():
            # Quantile 0.5 = the mean of the middle two for an even count; NaN < x is false.
            weights[: self.num_classes][iou < torch.quantile(known, 0.5)] = 2.0
        self.class_weights.copy_(weights)


# ---------------------------------------------------------------------- dense-masked twin


def _masked_conv(conv: SubmConv2d, x: Tensor, mask: Tensor) -> Tensor:
    out = F.conv2d(x, conv.weight, conv.bias, padding=conv.kernel_size // 2)
    return out * mask


def _masked_bn(bn: SparseBatchNorm, x: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum()
    if bn.training and count > 1:
        mean = (x * mask).sum(dim=(0, 2, 3)) / count
        var = (((x - mean[:, None, None]) * mask) ** 2).sum(dim=(0, 2, 3)) / count
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = bn.weight / torch.sqrt(var + bn.eps)
    return ((x - mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]) * mask


def _masked_unit(unit: SparseResidualUnit, x: Tensor, mask: Tensor) -> Tensor:
    conv1, bn1, _, conv2, bn2 = unit.body
    y = F.relu(_masked_bn(bn1, _masked_conv(conv1, x, mask), mask))
    y = _masked_bn(bn2, _masked_conv(conv2, y, mask), mask)
    if unit.shortcut is not None:
        conv, bn = unit.shortcut
        x = _masked_bn(bn, _masked_conv(conv, x, mask), mask)
    return F.relu(y + x)


def dense_masked_logits(
    head: QGNHead, features: dict[int, Tensor], sites: dict[int, Tensor]
) -> dict[int, Tensor]:
    """The same decoder with dense convolutions and multiplicative 0/1 masks (QGN A.1).

    The sanity check of QGN A.1: every level is a dense ``(B, C, h, w)`` tensor multiplied by the
    mask of its active sites (``sites[level]``, ``(N, 3)`` coordinates, e.g. from a sparse run).
    Returns dense ``(B, k+1, h, w)`` logits per level (zero at inactive sites). Memory and time
    grow with the full grid: use it to test and benchmark the sparse path, not to train.
    """
    x = head.project(features[2**head.top])
    b, _, h, w = x.shape
    ones = x.new_ones((b, 1, h, w))
    logits = {head.top: _masked_conv(head.predict[str(head.top)], x, ones)}
    for level in range(head.top - 1, min(sites) - 1, -1):
        scale = 2 ** (head.top - level)
        mask = x.new_zeros((b, 1, h * scale, w * scale))
        c = sites[level]
        mask[c[:, 0], 0, c[:, 1], c[:, 2]] = 1.0
        if head.units_before_upsample:
            parent = F.max_pool2d(mask, 2)  # sites of the coarser level that propagate
            for unit in head.blocks[str(level)]:
                x = _masked_unit(unit, x * parent, parent)
        x = F.interpolate(x, scale_factor=2, mode="nearest") * mask
        if str(level) in head.skips:
            conv, bn = head.skips[str(level)]
            x = x + _masked_bn(bn, _masked_conv(conv, features[2**level], mask), mask)
        if not head.units_before_upsample:
            for unit in head.blocks[str(level)]:
                x = _masked_unit(unit, x, mask)
        logits[level] = _masked_conv(head.predict[str(level)], x, mask)
    return logits
