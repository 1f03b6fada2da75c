"""What heads with a dense output share: per-pixel cross-entropy on their own class scores.

A head whose output representation *is* dense class scores at the input size (bilinear, DUC,
CARAFE, DeepLabV3+, NRD, ERFNet decoder, ...) trains with the same loss, so it subclasses
:class:`DenseHead` and only writes ``forward``. Heads with their own representation (quadtrees,
pyramids, auxiliary outputs) implement ``losses`` themselves, next to the head (STYLE.md rule 3).
"""

from __future__ import annotations

from torch import Tensor, nn

from leanseg.nn.losses import cross_entropy


class DenseHead(nn.Module):
    """Base of dense-score heads: ``losses`` = cross-entropy of ``forward``'s scores.

    Subclasses set ``self.ignore_index`` and implement
    ``forward(features, image_size) -> (B, C, *image_size)``.
    """

    ignore_index: int

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        scores = self(features, image_size)
        return {"loss_ce": cross_entropy(scores, targets["label"], self.ignore_index)}
