"""What every context module is: a map from a feature pyramid to a feature pyramid.

A model is ``backbone -> context (optional) -> head`` (DESIGN.md). A context module reworks the
map at one stride (``in_stride``, by default the coarsest) to add context - pyramid pooling
(:mod:`~leanseg.nn.context.spp`), atrous pyramid pooling (:mod:`~leanseg.nn.context.aspp`) - and
passes every other stride through unchanged. Like a backbone it declares what it returns in
``feature_info``, so any head reads its input widths from the declaration and works with any
context, or with none.

Pyramid pooling contexts (SPP, PSP-SPP) also expose their pooled grids, because the LDN ladder
loss (thesis 4.6.1) puts an auxiliary classifier on each of them. The grids are not a stride of
the pyramid, so they travel beside it: ``forward`` returns :class:`ContextFeatures`, the pyramid
dict with a ``pooled`` list, and ``pooled_channels`` declares their widths up front (the head
builds its classifiers from it). Neither a tuple return nor state kept on the module is needed.

Not every module that adds context is a ``Context``: the coarse-to-fine contextual module of S&F
(S&F 3.3, eqs. 3-4) works on the levels of S&F's own semantic pyramid, which exist only inside
that head, so it stays in :mod:`leanseg.nn.heads.sandf`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at


class ContextFeatures(dict[int, Tensor]):
    """The pyramid ``{stride: tensor}`` a context returns, plus the grids it pooled.

    Attributes:
        pooled: pooled grids ``(B, C_i, rows_i, cols_i)``, coarsest grid first, with the widths
            the context declares in ``pooled_channels``; empty for contexts that do not pool.
    """

    def __init__(self, features: dict[int, Tensor], pooled: Sequence[Tensor] = ()) -> None:
        super().__init__(features)
        self.pooled = list(pooled)


class Context(nn.Module):
    """Base of context modules: rework the map at ``in_stride``, pass the others through.

    Subclasses build their layers after calling ``super().__init__`` and implement ``forward``,
    returning :meth:`output`.

    Args:
        feature_info: what the backbone returns.
        in_stride: which feature map to rework; ``None`` takes the coarsest.
        out_channels: width of the reworked map.

    Attributes:
        feature_info: what the context returns: the backbone's declaration with the reworked
            stride's width replaced and its name set to ``"context"``.
        pooled_channels: widths of the grids in ``ContextFeatures.pooled`` (none by default).
    """

    pooled_channels: tuple[int, ...] = ()

    def __init__(
        self, feature_info: list[FeatureInfo], in_stride: int | None, out_channels: int
    ) -> None:
        super().__init__()
        chosen = feature_at(feature_info, in_stride)
        self.in_stride = chosen.stride
        self.in_channels = chosen.channels
        self.out_channels = out_channels
        self.feature_info = [
            replace(info, channels=out_channels, name="context")
            if info.stride == self.in_stride
            else info
            for info in feature_info
        ]

    def output(
        self, features: dict[int, Tensor], reworked: Tensor, pooled: Sequence[Tensor] = ()
    ) -> ContextFeatures:
        """``features`` with the ``in_stride`` map replaced by ``reworked`` (same stride order)."""
        return ContextFeatures(
            {stride: reworked if stride == self.in_stride else x for stride, x in features.items()},
            pooled,
        )

    def forward(self, features: dict[int, Tensor]) -> ContextFeatures:  # pragma: no cover
        raise NotImplementedError
