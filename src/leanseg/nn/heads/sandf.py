"""Specialize and Fuse head: semantic pyramid + unity pyramid, fused by eq. 2 (S&F section 3).

One class, :class:`SandFHead`, covers every row of S&F Table 2a through three options:

==== ============ ============ =========
row  ``context``  ``output``   ``relabel``
==== ============ ============ =========
A    ``none``     ``pixel``    -
B    ``anl``      ``pixel``    -
C    ``c2f``      ``pixel``    -
D    ``none``     ``pyramid``  ``raw``
E    ``none``     ``pyramid``  ``gt``
F    ``none``     ``pyramid``  ``tp``
G    ``anl``      ``pyramid``  ``tp``
H    ``c2f``      ``pyramid``  ``tp``   (the paper's model, the default)
I    ``c2f``      ``auxiliary`` -
==== ============ ============ =========

Parts, in the order of the paper:

- Unity head (S&F 3.2): 1x1 conv-BN-ReLU ``D -> D_u`` shared, then for level ``l < L`` one conv
  ``D_u -> 1`` with kernel = stride = ``2**(L - l)``.
- Semantic head: 1x1 conv-BN-ReLU ``D -> D_s`` gives ``X^(L)``; average pooling gives ``X^(l)``.
  ``context="none"`` is the naive head of S&F 3.3 (pooled features straight to the classifiers);
  ``"anl"`` applies an asymmetric non-local block (ANL, Zhu et al. 2019) to ``X^(L)`` before
  pooling; ``"c2f"`` is the coarse-to-fine contextual module (S&F 3.3, eqs. 3 and 4).
- Per-level classifier, the "non-linear projection" of S&F 3.3.

The ANL and coarse-to-fine modules stay inside this head rather than being
:class:`~leanseg.nn.context.base.Context` modules: they work on the levels of the head's own
semantic pyramid (``X^(1) .. X^(L)``, pooled from ``X^(L)`` after the head's projection), not on
the backbone's pyramid, so no other head could use them. A backbone context (SPP, ASPP, ...) can
still sit in front of this head like any other.

Choices where the paper defers to its supplementary material (tested in tests/test_sandf.py):

- ``D_s = 512`` and ``D_u = 64`` by default (``semantic_channels``, ``unity_channels``).
- Non-linear projection: 1x1 conv-BN-ReLU ``D_s -> D_s`` then a 1x1 conv to ``C`` classes, one per
  level (not shared).
- Attention2D: query 1x1 ``D_s -> D_s/2``, key 1x1 ``D_s -> D_s/2``, value 1x1 ``D_s -> D_s`` (the
  key width of ANL), softmax of ``q.k / sqrt(D_s/2)`` over the ``S = 110`` context slots; separate
  transforms per level. ``F_agg^(L)`` is 1x1 conv-BN-ReLU ``2 D_s -> D_s``; ``F_agg^(l<L)`` a
  residual block: 3x3 conv-BN-ReLU ``2 D_s -> D_s``, 3x3 conv-BN, plus a 1x1 conv-BN projection
  shortcut, then ReLU. ``F_upd`` is a 1x1 (1-D) conv-BN-ReLU ``2 D_s -> D_s``.
- Feature sizes not divisible by ``2**(L-1)`` are zero-padded on the bottom/right inside the head
  (so backbones with output stride 4, e.g. HRNet, need no padding to ``s_1``); targets are padded
  with the ignore label and outputs cropped back.
- Fusing (eq. 2) is done on log-softmax scores so that levels are on one scale, then the fused
  stride-``s_L`` map is bilinearly upsampled to the image size.
- Losses. Pyramid rows use eq. 1 on targets at each level's resolution (the finest a majority-
  downsampled label, see :mod:`leanseg.structures.pyramid`), with BCE only over cells whose
  relabelled ``U`` is not "don't care"; each level's mean is over its own supervised cells, and a
  level with none contributes 0. ``pixel`` rows (A-C) use a per-pixel CE on the finest scores
  upsampled to the image, the standard baseline. ``auxiliary`` (I): same architecture as C, the
  eq. 1 semantic term on raw pyramid targets (no unity head, no relabelling), inference from the
  finest level only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import HeadCapabilities
from leanseg.nn.layers import conv_bn_relu
from leanseg.nn.losses import cross_entropy
from leanseg.structures.labels import IGNORE_INDEX
from leanseg.structures.pyramid import fuse, pyramid_targets, relabel

POOL_SIZES = (1, 3, 6, 8)  # PyramidSampling N of S&F 3.3, S = 1 + 9 + 36 + 64 = 110


def pyramid_sampling(x: Tensor, sizes: tuple[int, ...] = POOL_SIZES) -> Tensor:
    """PyramidSampling (S&F 3.3): adaptive average pools ``n x n``, flattened and concatenated.

    ``(B, D, h, w) -> (B, D, S)`` with ``S = sum(n**2)``.
    """
    return torch.cat([F.adaptive_avg_pool2d(x, n).flatten(2) for n in sizes], dim=2)


class Attention2D(nn.Module):
    """Attention of a 2-D query map over a 1-D context (S&F eq. 3; ANL's asymmetric attention).

    Args:
        channels: ``D_s`` of the query map and the context.
        key_channels: width of query and key.
    """

    def __init__(self, channels: int, key_channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv1d(channels, key_channels, 1)
        self.value = nn.Conv1d(channels, channels, 1)
        self.scale = key_channels**-0.5

    def flops(self, inputs: tuple[Tensor, Tensor], output: Tensor) -> int:
        """FMAs of the q/k/v transforms and both matmuls (read by
        ``leanseg.profiling.flops.count_flops``)."""
        x, context = inputs
        b, channels, h, w = x.shape
        slots = context.shape[-1]
        key_channels = self.query.out_channels
        transforms = h * w * channels * key_channels + slots * channels * (key_channels + channels)
        return b * (transforms + h * w * slots * (key_channels + channels))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, hw, Dk)
        k = self.key(context)  # (B, Dk, S)
        v = self.value(context).transpose(1, 2)  # (B, S, D)
        attn = torch.softmax(q @ k * self.scale, dim=-1)  # (B, hw, S)
        return (attn @ v).transpose(1, 2).reshape(b, -1, h, w)


class ResidualFuse(nn.Module):
    """``F_agg^(l)`` for ``l < L``: residual block ``2 D_s -> D_s`` (S&F eq. 3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, out_channels, 3)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ContextUpdate(nn.Module):
    """``F_upd^(l)`` of S&F eq. 4: 1x1 (1-D) conv-BN-ReLU over the ``S`` context slots."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2 * channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, feature: Tensor, context: Tensor) -> Tensor:
        joined = torch.cat([pyramid_sampling(feature), context], dim=1)  # (B, 2D, S)
        return F.relu(self.bn(self.conv(joined)))


class CoarseToFineContext(nn.Module):
    """The coarse-to-fine contextual module (S&F 3.3, eqs. 3 and 4).

    ``forward([X^(1), ..., X^(L)], X^(L)) -> [X'^(1), ..., X'^(L)]``.
    """

    def __init__(self, channels: int, num_levels: int) -> None:
        super().__init__()
        key_channels = channels // 2
        self.attention = nn.ModuleList(
            Attention2D(channels, key_channels) for _ in range(num_levels)
        )
        self.aggregate = nn.ModuleList(
            [ResidualFuse(2 * channels, channels) for _ in range(num_levels - 1)]
            + [conv_bn_relu(2 * channels, channels)]
        )
        self.update = nn.ModuleList(ContextUpdate(channels) for _ in range(num_levels - 1))

    def forward(self, levels: list[Tensor]) -> list[Tensor]:
        context = pyramid_sampling(levels[-1])  # theta^(0), (B, D_s, S)
        out = []
        for i, x in enumerate(levels):
            attended = self.attention[i](x, context)
            x_new = self.aggregate[i](torch.cat([attended, x], dim=1))  # eq. 3
            out.append(x_new)
            if i < len(levels) - 1:
                context = self.update[i](x_new, context)  # eq. 4
        return out


class AsymmetricNonLocal(nn.Module):
    """ANL block (Zhu et al., ICCV 2019) as used for Table 2a rows B and G.

    Attention of every location over the PyramidSampling of the map itself, concatenated with the
    input and fused by a 1x1 conv-BN-ReLU (the same shape as the finest level of eq. 3).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = Attention2D(channels, channels // 2)
        self.fuse = conv_bn_relu(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.attention(x, pyramid_sampling(x)), x], dim=1))


class UnityHead(nn.Module):
    """Unity pyramid predictor (S&F 3.2): shared ``D -> D_u``, a strided conv per level < L."""

    def __init__(self, in_channels: int, channels: int, num_levels: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, channels)
        self.levels = nn.ModuleList(
            nn.Conv2d(channels, 1, 2 ** (num_levels - 1 - i), stride=2 ** (num_levels - 1 - i))
            for i in range(num_levels - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Unity logits ``(B, h_l, w_l)``, coarsest first."""
        reduced = self.reduce(x)
        return [conv(reduced).squeeze(1) for conv in self.levels]


class SandFHead(HeadCapabilities, nn.Module):
    """Specialize and Fuse head on the finest (stride 4 or 8) backbone features.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: ``C``.
        ignore_index: "don't care" label.
        num_levels: ``L`` (4 in the paper).
        in_stride: stride ``s_L`` of ``X``; ``None`` takes the finest of stride 4 or 8.
        concat_coarser: build ``X`` HRNetV2-style, concatenating the ``in_stride`` features with
            all coarser ones bilinearly upsampled to ``in_stride`` (so that e.g. a ResNet's deep
            stages are used); ``False`` takes the ``in_stride`` map alone. HRNet backbones
            return one stride-4 map, for which both are the same.
        semantic_channels: ``D_s``.
        unity_channels: ``D_u``.
        context: ``none`` (naive head), ``anl`` or ``c2f`` (S&F 3.3), Table 2a column 2.
        output: ``pyramid`` (fused semantic pyramid), ``pixel`` (finest level only) or
            ``auxiliary`` (pyramid supervision, finest-level inference), Table 2a column 3.
        relabel: ``raw`` (D), ``gt`` (E) or ``tp`` (F-H), Table 2a column 4.
        tau: unity threshold of the fuser (eq. 2) and of TP relabelling; an inference knob.
        dropout: dropout before each classifier.
    """

    onnx_unexportable = (
        "it average-pools to fixed grids (adaptive_avg_pool2d) from a size-dependent input, which "
        "ONNX has no operator for when height and width are dynamic (PyramidSampling of its "
        "attention, S&F 3.3)"
    )
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        num_levels: int = 4,
        in_stride: int | None = None,
        concat_coarser: bool = True,
        semantic_channels: int = 512,
        unity_channels: int = 64,
        context: Literal["none", "anl", "c2f"] = "c2f",
        output: Literal["pyramid", "pixel", "auxiliary"] = "pyramid",
        relabel: Literal["raw", "gt", "tp"] = "tp",
        tau: float = 0.5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_stride = self._check_arguments(
            feature_info, in_stride, num_levels, context=context, output=output, relabel=relabel
        )
        strides = sorted(info.stride for info in feature_info)
        self.in_stride = in_stride
        self.num_levels = num_levels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.context_kind = context
        self.output = output
        self.relabel = relabel
        self.tau = tau
        self.in_strides = [s for s in strides if s >= in_stride] if concat_coarser else [in_stride]
        in_channels = sum(feature_at(feature_info, s).channels for s in self.in_strides)
        self.project = conv_bn_relu(in_channels, semantic_channels)
        self.anl = AsymmetricNonLocal(semantic_channels) if context == "anl" else None
        self.c2f = CoarseToFineContext(semantic_channels, num_levels) if context == "c2f" else None
        # Pixel rows (A-C) classify the finest level only; C still runs the c2f module over all
        # L levels (its coarse levels feed the context updates of eq. 4).
        self.feature_levels = num_levels if (output != "pixel" or context == "c2f") else 1
        num_classifiers = 1 if output == "pixel" else num_levels
        self.classifiers = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(semantic_channels, semantic_channels),
                nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
                nn.Conv2d(semantic_channels, num_classes, 1),
            )
            for _ in range(num_classifiers)
        )
        self.unity = (
            UnityHead(in_channels, unity_channels, num_levels) if output == "pyramid" else None
        )

    @staticmethod
    def _check_arguments(
        feature_info: list[FeatureInfo],
        in_stride: int | None,
        num_levels: int,
        *,
        context: str,
        output: str,
        relabel: str,
    ) -> int:
        """The stride of the map the head reads (the finest of 4 and 8 when ``in_stride`` is
        None), after refusing choices it does not know.

        Raises:
            ValueError: naming the argument.
        """
        strides = sorted(info.stride for info in feature_info)
        if in_stride is None:
            fine = [s for s in (4, 8) if s in strides]
            if not fine:
                raise ValueError(f"S&F needs stride-4 or stride-8 features, got {strides}")
            in_stride = fine[0]
        in_stride = feature_at(feature_info, in_stride).stride
        for name, value, valid in (
            ("context", context, ("none", "anl", "c2f")),
            ("output", output, ("pyramid", "pixel", "auxiliary")),
            ("relabel", relabel, ("raw", "gt", "tp")),
        ):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if num_levels < 1 or (output != "pixel" and num_levels < 2):
            raise ValueError(f"num_levels must be >= 2 for pyramid outputs, got {num_levels}")
        return in_stride

    # -- pyramid prediction -------------------------------------------------------------------

    def _gather(self, features: dict[int, Tensor]) -> Tensor:
        """``X``: the ``in_stride`` map, with coarser maps upsampled and concatenated if asked."""
        x = features[self.in_stride]
        if len(self.in_strides) == 1:
            return x
        size = x.shape[-2:]
        maps = [
            F.interpolate(features[s], size=size, mode="bilinear", align_corners=False)
            if s != self.in_stride
            else x
            for s in self.in_strides
        ]
        return torch.cat(maps, dim=1)

    def _pad(self, x: Tensor) -> Tensor:
        cell = 2 ** (self.feature_levels - 1)
        pad_h, pad_w = (-x.shape[-2]) % cell, (-x.shape[-1]) % cell
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def predict_pyramid(self, features: dict[int, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Semantic logits ``[Y^(1)..Y^(L)]`` and unity logits ``[U^(1)..U^(L-1)]``, coarsest first.

        Sizes are those of the (padded) stride-``s_L`` feature map and its 2x poolings. Rows without
        a unity head return an empty unity list; pixel rows (A-C) return one semantic level.
        """
        x = self._pad(self._gather(features))
        finest = self.project(x)  # X^(L), (B, D_s, h, w)
        if self.anl is not None:
            finest = self.anl(finest)
        count = self.feature_levels
        levels = [F.avg_pool2d(finest, 2 ** (count - 1 - i)) for i in range(count - 1)]
        levels.append(finest)
        if self.c2f is not None:
            levels = self.c2f(levels)
        levels = levels[len(levels) - len(self.classifiers) :]
        semantic = [
            classify(level) for classify, level in zip(self.classifiers, levels, strict=True)
        ]
        unity = self.unity(x) if self.unity is not None else []
        return semantic, unity

    def fuse(self, features: dict[int, Tensor], tau: float | None = None) -> tuple[Tensor, Tensor]:
        """Fused log-probabilities at stride ``s_L`` and the 0-based level serving each cell.

        Cropped to the unpadded feature size. Rows without a fused pyramid report level ``L-1``.
        """
        h, w = features[self.in_stride].shape[-2:]
        semantic, unity = self.predict_pyramid(features)
        if self.output == "pyramid":
            log_probs = [torch.log_softmax(s, dim=1) for s in semantic]
            probs = [torch.sigmoid(u) for u in unity]
            fused, level = fuse(log_probs, probs, self.tau if tau is None else tau)
        else:
            fused = semantic[-1]
            # Per-pixel and finest-only rows predict at the finest level L-1 of the pyramid.
            level = torch.full_like(fused[:, 0], self.num_levels - 1, dtype=torch.long)
        return fused[..., :h, :w], level[..., :h, :w]

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        fused, _ = self.fuse(features)
        return F.interpolate(fused, size=image_size, mode="bilinear", align_corners=False)

    # -- training -----------------------------------------------------------------------------

    def loss_names(self) -> tuple[str, ...]:
        """``loss_ce`` for pixel rows; eq. 1's ``loss_semantic``, plus ``loss_unity`` where a
        unity head predicts (pyramid rows with more than one level)."""
        if self.output == "pixel":
            return ("loss_ce",)
        if self.unity is not None and self.num_levels > 1:
            return ("loss_semantic", "loss_unity")
        return ("loss_semantic",)

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Eq. 1 for pyramid rows (with the row's relabelling), per-pixel CE for pixel rows."""
        label = targets["label"]
        h, w = features[self.in_stride].shape[-2:]
        semantic, unity = self.predict_pyramid(features)
        if self.output == "pixel":
            scores = F.interpolate(
                semantic[-1][..., :h, :w], size=image_size, mode="bilinear", align_corners=False
            )
            return {"loss_ce": cross_entropy(scores, label, self.ignore_index)}
        stride = image_size[0] // h
        padded_h, padded_w = semantic[-1].shape[-2:]
        label = F.pad(
            label,
            (0, padded_w * stride - label.shape[-1], 0, padded_h * stride - label.shape[-2]),
            value=self.ignore_index,
        )
        gt = pyramid_targets(
            label, num_levels=self.num_levels, finest_stride=stride, ignore_index=self.ignore_index
        )
        if self.output == "auxiliary":
            mode = "raw"
            probs = None
        else:
            mode = self.relabel
            probs = [torch.sigmoid(u.detach()) for u in unity]
        gt = relabel(gt, probs, mode=mode, tau=self.tau, ignore_index=self.ignore_index)
        loss_semantic = sum(
            cross_entropy(s, y, self.ignore_index)
            for s, y in zip(semantic, gt.semantic, strict=True)
        ) / len(semantic)
        out = {"loss_semantic": loss_semantic}
        if unity:
            out["loss_unity"] = sum(
                _masked_bce(u, t, self.ignore_index) for u, t in zip(unity, gt.unity, strict=True)
            ) / len(unity)
        return out


def _masked_bce(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Mean BCE over cells whose target is not ``ignore_index`` (0 with a gradient path if none)."""
    valid = target != ignore_index
    per_cell = F.binary_cross_entropy_with_logits(
        logits.float(), target.clamp(max=1).float(), reduction="none"
    )
    return (per_cell * valid).sum() / valid.sum().clamp(min=1)
