"""The sample entries a model needs besides the image, and how they follow the image at test time.

A model that declares :class:`~leanseg.nn.segmentor.ExtraInputs` (depth-guided scale selection,
thesis ch. 3: ``disparity`` and ``stereo_baseline``) is called as
``model(images, **inputs)``. This module is the one place the engine deals with such inputs:

- :func:`check_dataset_inputs`: before training, a dataset that lacks an entry the model needs
  is an error naming the dataset and the key (not a ``KeyError`` deep inside the first step).
- :func:`batch_inputs`: the entries of a loader batch, on the device.
- :func:`predict_scores_with_inputs`: multi-scale and flip testing as
  :func:`~leanseg.engine.inference.predict_scores` does it, with every input transformed together
  with the image (:data:`HOW_INPUTS_FOLLOW_THE_IMAGE`).

Training needs nothing here: every tensor of a batch already reaches ``losses`` as a target, and
the training transforms resize, crop and flip disparity with the image
(:mod:`leanseg.data.transforms`). Tiled (sliding-window) inference is not supported for such
models: :class:`~leanseg.engine.inference.Predictor` passes only images, so ``leanseg predict``
with a model that needs disparity fails with the model's error naming the missing input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from leanseg.data.base import DatasetError
from leanseg.nn.segmentor import extra_inputs

# Known inputs -> how they follow a resized or mirrored image:
# "map": a (B, H, W) per-pixel map, resized by nearest neighbour (unknown zeros are not blended
#   into known values) and mirrored with the image; "disparity" values are in pixels of width,
#   so they are also multiplied by the horizontal resize factor (as the training transforms do).
# "per_image": one value per image (B,), unchanged by resizing and mirroring.
HOW_INPUTS_FOLLOW_THE_IMAGE: dict[str, str] = {
    "disparity": "map",
    "stereo_baseline": "per_image",
}

# Where the datasets that can provide an input take it from, for error messages.
_WHERE_FROM = {
    "disparity": "the synthetic scenes, or Cityscapes with disparity/<split>/<city>/*.png",
    "stereo_baseline": (
        "the synthetic scenes, or Cityscapes with disparity/ and camera/<split>/<city>/*.json"
    ),
}


def check_dataset_inputs(model: nn.Module, dataset: Dataset, *, name: str) -> None:
    """Raise if ``dataset``'s samples lack an entry ``model`` needs besides the image.

    Looks at the first sample before its transform (``load_raw`` where the dataset has it, so
    no random augmentation is drawn). Nothing is read for models without extra inputs.

    Args:
        model: the model to be trained or evaluated.
        dataset: its samples.
        name: how the dataset is named in the message (``data.dataset 'camvid' (split train)``).

    Raises:
        DatasetError: naming the dataset and the missing key.
    """
    needed = extra_inputs(model)
    if not needed or len(dataset) == 0:  # type: ignore[arg-type]
        return
    load_raw = getattr(dataset, "load_raw", None)
    sample = load_raw(0) if callable(load_raw) else dataset[0]
    for key in needed:
        if key not in sample:
            raise DatasetError(
                f"{type(model).__name__} needs {key!r} in every sample besides the image, but "
                f"{name} gives none (its samples have: {', '.join(sorted(sample))}); "
                f"{key!r} comes from {_WHERE_FROM.get(key, 'a dataset that provides it')}"
            )


def batch_inputs(
    batch: dict[str, Any], keys: Sequence[str], device: torch.device, *, source: str
) -> dict[str, Tensor]:
    """The entries ``keys`` of a loader batch as tensors on ``device``.

    Raises:
        DatasetError: naming ``source`` and the key a batch lacks.
    """
    inputs = {}
    for key in keys:
        if key not in batch:
            raise DatasetError(
                f"the model needs {key!r} besides the image, but a batch of {source} has none "
                f"(it has: {', '.join(sorted(batch))})"
            )
        inputs[key] = torch.as_tensor(batch[key]).to(device)
    return inputs


def follow_image(
    inputs: dict[str, Tensor], size: tuple[int, int], *, mirrored: bool = False
) -> dict[str, Tensor]:
    """``inputs`` of images resized to ``size`` ``(H, W)`` and, if ``mirrored``, mirrored.

    Raises:
        ValueError: for an input whose transform is not known, when one is needed.
    """
    out = {}
    for key, value in inputs.items():
        how = HOW_INPUTS_FOLLOW_THE_IMAGE.get(key)
        if how == "per_image":
            out[key] = value
            continue
        if how != "map":
            raise ValueError(
                f"do not know how model input {key!r} follows a resized or mirrored image "
                f"(known: {', '.join(HOW_INPUTS_FOLLOW_THE_IMAGE)}); evaluate at scale 1 "
                "without flip"
            )
        in_width = value.shape[-1]
        if tuple(value.shape[-2:]) != size:
            resized = F.interpolate(value[:, None].float(), size=size, mode="nearest-exact")
            value = resized[:, 0]  # (B, H, W)
            if key == "disparity":
                value = value * (size[1] / in_width)
        out[key] = value.flip(-1) if mirrored else value
    return out


@torch.no_grad()
def predict_scores_with_inputs(
    model: nn.Module,
    images: Tensor,
    inputs: dict[str, Tensor],
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Tensor:
    """Class probabilities of ``model(images, **inputs)`` with multi-scale and flip testing.

    The same procedure as :func:`~leanseg.engine.inference.predict_scores` (bilinear resize
    without antialiasing, mean of softmax probabilities over scales and flips), with ``inputs``
    resized and mirrored with the images (:func:`follow_image`). Whole images only, no tiles.

    Args:
        model: maps ``(B, 3, h, w)`` and the inputs to class scores ``(B, C, h, w)``.
        images: normalised images ``(B, 3, H, W)``.
        inputs: the model's extra inputs for these images (at their size).
        scales: resize factors; each must be positive.
        flip: also score the horizontally mirrored images.

    Returns:
        Probabilities ``(B, C, H, W)`` (float32).
    """
    if not scales:
        raise ValueError("scales must not be empty")
    height, width = images.shape[-2:]
    total: Tensor | None = None
    count = 0
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {scale}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images
        if size != (height, width):
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            batch = scaled.flip(-1) if mirrored else scaled
            scores = model(batch, **follow_image(inputs, size, mirrored=mirrored))
            if mirrored:
                scores = scores.flip(-1)
            if scores.shape[-2:] != (height, width):
                scores = F.interpolate(
                    scores, size=(height, width), mode="bilinear", align_corners=False
                )
            probabilities = scores.float().softmax(dim=1)  # (B, C, H, W)
            total = probabilities if total is None else total.add_(probabilities)
            count += 1
    assert total is not None
    return total if count == 1 else total.div_(count)
