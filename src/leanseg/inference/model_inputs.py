"""The sample entries a model needs besides the image, and how they follow the image at test time.

A model that declares :class:`~leanseg.nn.segmentor.ExtraInputs` (depth-guided scale selection,
thesis ch. 3: ``disparity`` and ``stereo_baseline``) is called as
``model(images, **inputs)``. This module is the one place the engine deals with such inputs:

- :func:`check_dataset_inputs`: before training, a dataset that lacks an entry the model needs
  is an error naming the dataset and the key (not a ``KeyError`` deep inside the first step).
- :func:`batch_inputs`: the entries of a loader batch, on the device.
- :func:`follow_image` and :func:`crop_inputs`: an input resized, mirrored or cropped with the
  image, so that :func:`~leanseg.inference.predictor.predict_scores` (``inputs=``) can test such a
  model at several scales, flipped and tile by tile (:data:`HOW_INPUTS_FOLLOW_THE_IMAGE`).

Training needs nothing here: every tensor of a batch already reaches ``losses`` as a target, and
the training transforms resize, crop and flip disparity with the image
(:mod:`leanseg.data.transforms`). :class:`~leanseg.inference.predictor.Predictor` passes only
images, so ``leanseg predict`` with a model that needs disparity fails with the model's error
naming the missing input; ``leanseg eval`` passes the dataset's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _how_it_follows(key: str, change: str) -> str:
    """``"map"`` or ``"per_image"`` for a known input; a ``ValueError`` naming ``key`` else."""
    how = HOW_INPUTS_FOLLOW_THE_IMAGE.get(key)
    if how is None:
        raise ValueError(
            f"do not know how model input {key!r} follows a {change} image (known: "
            f"{', '.join(HOW_INPUTS_FOLLOW_THE_IMAGE)}); evaluate whole images at scale 1 "
            "without flip"
        )
    return how


def follow_image(
    inputs: Mapping[str, Tensor], size: tuple[int, int], *, mirrored: bool = False
) -> dict[str, Tensor]:
    """``inputs`` of images resized to ``size`` ``(H, W)`` and, if ``mirrored``, mirrored.

    Raises:
        ValueError: for an input whose transform is not known, when one is needed.
    """
    out = {}
    for key, value in inputs.items():
        if _how_it_follows(key, "resized or mirrored") == "per_image":
            out[key] = value
            continue
        in_width = value.shape[-1]
        if tuple(value.shape[-2:]) != size:
            resized = F.interpolate(value[:, None].float(), size=size, mode="nearest-exact")
            value = resized[:, 0]  # (B, H, W)
            if key == "disparity":
                value = value * (size[1] / in_width)
        out[key] = value.flip(-1) if mirrored else value
    return out


def crop_inputs(inputs: Mapping[str, Tensor], rows: slice, cols: slice) -> dict[str, Tensor]:
    """``inputs`` of the tile ``images[..., rows, cols]``: maps are cropped with the image.

    Disparity stays in pixels, which cropping does not change, so a tile's disparity is the
    whole image's disparity there.

    Raises:
        ValueError: for an input whose transform is not known.
    """
    return {
        key: value[..., rows, cols] if _how_it_follows(key, "cropped") == "map" else value
        for key, value in inputs.items()
    }
