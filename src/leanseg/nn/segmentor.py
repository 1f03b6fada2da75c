"""The model users hold: backbone -> context (optional) -> head.

``Segmentor.forward(images)`` always returns class scores ``(B, C, H, W)`` at the input size, for
any H and W: the input is padded on the bottom and right to a multiple of the backbone's output
stride and the scores are cropped back. Training goes through ``losses(images, targets)`` which
returns named loss terms; no method changes its return type with a mode flag (STYLE.md rule 3).

A model that needs more of the sample than the image (depth-guided scale selection, thesis ch. 3:
disparity and stereo baseline) declares :class:`ExtraInputs`; the engine checks it with
``isinstance`` (:func:`extra_inputs`) and passes those entries, and leaves other models alone.

The targets ``losses`` reads are declared too: a model's ``required_targets`` names the keys the
batch must hold (``("label",)`` for every head in the library; a head may declare its own), and
a batch without one of them fails with :class:`MissingTargetError` naming the key and the keys
the batch has, before any computation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import Backbone
from leanseg.nn.context.base import Context
from leanseg.structures.labels import IGNORE_INDEX

# What a head's ``losses`` reads unless the head declares ``required_targets`` itself: the
# ``(B, H, W)`` int64 label map, ``ignore_index`` (255) where unlabelled.
DEFAULT_TARGETS: tuple[str, ...] = ("label",)

# What each target key the library's models read holds, for error messages and the README.
TARGET_KEYS: dict[str, str] = {
    "label": "(B, H, W) int64 class ids, ignore_index (255) where unlabelled",
    "instance": "(B, H, W) int64 instance ids, ids >= 1000 are instances (ssn_instance)",
    "disparity": "(B, H, W) float32 disparity in pixels of the image (depth scale selection)",
    "stereo_baseline": "(B,) float32 stereo baseline in metres (depth scale selection)",
}


class MissingTargetError(KeyError):
    """A target that ``losses`` reads is not in the batch.

    A ``KeyError`` (what indexing the dict would have raised), whose message is printed as
    written rather than quoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_targets(targets: dict[str, Tensor], required: tuple[str, ...], *, reader: str) -> None:
    """Raise :class:`MissingTargetError` unless ``targets`` holds every key of ``required``.

    Args:
        targets: the batch's targets (a dict, as ``losses`` takes it).
        required: the keys ``reader`` reads.
        reader: who reads them, for the message (``"LadderHead.losses"``).
    """
    missing = [key for key in required if key not in targets]
    if missing:
        given = ", ".join(repr(key) for key in targets) or "none"
        needed = "; ".join(f"{key!r}: {TARGET_KEYS.get(key, 'see the head')}" for key in missing)
        raise MissingTargetError(
            f"{reader} needs targets missing from the batch: {needed}. It reads "
            f"{', '.join(repr(key) for key in required)}; the targets given have keys: {given} "
            "(README, Training API)"
        )


def input_channels(model: nn.Module) -> int:
    """Channels of the images ``model`` reads: its ``in_channels``, 3 for models without one."""
    return int(getattr(model, "in_channels", 3))


class Head(Protocol):
    """What a head provides. Heads are ``nn.Module`` subclasses with these two methods.

    A head whose ``losses`` reads other targets than :data:`DEFAULT_TARGETS` says so in a
    ``required_targets`` attribute; :class:`Segmentor` checks a batch against it.
    """

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Class scores ``(B, C, *image_size)``."""
        ...

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Named loss terms; the trainer minimises their sum."""
        ...


@runtime_checkable
class ExtraInputs(Protocol):
    """A model whose ``forward`` needs sample entries besides the image.

    ``extra_inputs`` names them, as keys of the sample and keyword arguments of ``forward``:
    the trainer and the evaluator call ``model(images, **{key: batch[key] for key in
    extra_inputs})`` (training already passes every sample tensor to ``losses`` as a target).
    An empty tuple needs nothing (the variants of a family that do not read them).
    """

    extra_inputs: tuple[str, ...]


def extra_inputs(model: nn.Module) -> tuple[str, ...]:
    """The sample entries ``model`` needs besides the image; ``()`` for ordinary models."""
    return tuple(model.extra_inputs) if isinstance(model, ExtraInputs) else ()


class Segmentor(nn.Module):
    """Backbone, optional context module and head, composed by passing modules in.

    Args:
        backbone: returns ``{stride: features}`` and declares ``feature_info``.
        head: owns the output representation, its targets and loss.
        context: optional module between backbone and head that maps the backbone's pyramid to
            a pyramid (SPP, ASPP, ...; :class:`~leanseg.nn.context.base.Context`).
        num_classes: number of classes the head predicts (stored for checks and tools).
        size_divisor: inputs are padded to a multiple of this; defaults to the backbone's
            output stride.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        context: Context | None = None,
        *,
        num_classes: int,
        size_divisor: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.context = context
        self.head = head
        self.num_classes = num_classes
        self.size_divisor = size_divisor or backbone.output_stride

    def features(self, images: Tensor) -> dict[int, Tensor]:
        features = self.backbone(images)
        if self.context is not None:
            features = self.context(features)
        return features

    @property
    def in_channels(self) -> int:
        """Channels of the images the model reads (the backbone's ``in_channels``)."""
        return input_channels(self.backbone)

    @property
    def required_targets(self) -> tuple[str, ...]:
        """The keys of ``targets`` that :meth:`losses` reads (the head's declaration)."""
        return tuple(getattr(self.head, "required_targets", DEFAULT_TARGETS))

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``(B, num_classes, H, W)`` for images ``(B, in_channels, H, W)``."""
        self._check_channels(images)
        height, width = images.shape[-2:]
        padded = self._pad(images)
        scores = self.head(self.features(padded), tuple(padded.shape[-2:]))
        return scores[..., :height, :width]

    def losses(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named loss terms for a batch; ``targets["label"]`` is ``(B, H, W)`` with 255 ignored.

        Training crops are normally a multiple of the output stride already; otherwise the
        images are padded and the dense targets padded with the ignore label (or zeros).

        Args:
            images: normalised images ``(B, in_channels, H, W)``.
            targets: at least the keys of :attr:`required_targets`; other keys are passed to
                the head, which may read optional ones (``instance`` for ``ssn_instance``).

        Raises:
            MissingTargetError: a key of :attr:`required_targets` is not in ``targets``.
        """
        check_targets(targets, self.required_targets, reader=f"{type(self.head).__name__}.losses")
        self._check_channels(images)
        padded = self._pad(images)
        if padded.shape[-2:] != images.shape[-2:]:
            targets = {key: self._pad_target(key, value, padded) for key, value in targets.items()}
        return self.head.losses(self.features(padded), targets, tuple(padded.shape[-2:]))

    def _check_channels(self, images: Tensor) -> None:
        """A clear error for images with another channel count than the backbone reads."""
        if images.dim() >= 3 and images.shape[-3] != self.in_channels:
            raise ValueError(
                f"expected images (B, {self.in_channels}, H, W) (the backbone's in_channels), "
                f"got {tuple(images.shape)}"
            )

    def _pad(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_h = (-height) % self.size_divisor
        pad_w = (-width) % self.size_divisor
        if pad_h == 0 and pad_w == 0:
            return images
        return F.pad(images, (0, pad_w, 0, pad_h))

    def _pad_target(self, key: str, value: Tensor, padded: Tensor) -> Tensor:
        if value.dim() < 3:
            return value
        pad_h = padded.shape[-2] - value.shape[-2]
        pad_w = padded.shape[-1] - value.shape[-1]
        fill = IGNORE_INDEX if key == "label" else 0
        return F.pad(value, (0, pad_w, 0, pad_h), value=fill)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Label map ``(B, H, W)`` (argmax of the scores)."""
        return self(images).argmax(dim=1)
