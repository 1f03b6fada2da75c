"""Disparity for ``leanseg predict`` and the selected-level maps of thesis Fig. 3.2.

A depth-guided scale-selection model (``scale_invariant``, thesis ch. 3) reads each image's
disparity map and stereo baseline besides the image. ``leanseg predict --disparity DIR
--stereo-baseline B`` finds ``DIR/<stem>_disparity.png`` or ``DIR/<stem>.png`` (Cityscapes'
16-bit encoding, ``d = (p - 1) / 256``, 0 = unknown) for each image, and ``--scale-levels``
writes, per reference scale W_R, the pyramid level the multiplexer chose at every pixel
(eq. 3.2) as a colour-coded PNG, ``<stem>_levels_<W_R>m.png``: Fig. 3.2 of the thesis. Levels
are chosen on the feature grid (stride 8 for the paper's extractor); the PNG repeats each
cell's level over its pixels (nearest neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from leanseg.data.base import DatasetError
from leanseg.data.datasets import decode_disparity, read_index_map

# Level 0 (the input's own resolution) dark blue, rising through green to yellow at the coarsest:
# anchor colours of a perceptually ordered ramp, interpolated for any number of levels.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def disparity_file(folder: Path, stem: str) -> Path:
    """``folder/<stem>_disparity.png`` or ``folder/<stem>.png``, the one that exists.

    Raises:
        DatasetError: naming both paths tried, when neither exists.
    """
    tried = [folder / f"{stem}_disparity.png", folder / f"{stem}.png"]
    for path in tried:
        if path.is_file():
            return path
    raise DatasetError(f"no disparity map for image {stem!r}: neither {tried[0]} nor {tried[1]}")


def read_disparity(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """Disparity in pixels, ``float32 (H, W)``, of a 16-bit Cityscapes-encoded PNG.

    Raises:
        DatasetError: naming the file, when it is not a single-channel PNG or its size differs
            from the image's ``(H, W)``.
    """
    disparity = decode_disparity(read_index_map(path, "disparity"))
    if disparity.shape != tuple(image_size):
        raise DatasetError(
            f"{path}: disparity size {disparity.shape[1]}x{disparity.shape[0]} differs from its "
            f"image's {image_size[1]}x{image_size[0]}"
        )
    return disparity


def selects_levels(model: nn.Module) -> bool:
    """Whether ``model`` chooses pyramid levels per pixel from disparity (ScaleInvariant)."""
    return getattr(model, "selection", None) == "depth" and hasattr(model, "selected_levels")


def level_maps(
    model: nn.Module, disparity: Tensor, stereo_baseline: float, image_size: tuple[int, int]
) -> Tensor:
    """The selected levels ``uint8 (M, H, W)`` at image resolution, one map per reference scale.

    Args:
        model: a depth-selection model (:func:`selects_levels`).
        disparity: ``(H, W)`` in pixels of the image.
        stereo_baseline: metres.
        image_size: ``(H, W)`` of the image.
    """
    levels = model.selected_levels(disparity[None], stereo_baseline, image_size)  # (1, M, h, w)
    stride = model.pyramid.out_stride
    cells = levels[0].to(torch.uint8)
    full = cells.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)
    return full[:, : image_size[0], : image_size[1]]


def level_colours(num_levels: int) -> np.ndarray:
    """``uint8 (num_levels, 3)`` colours, level 0 first, along :data:`_RAMP`."""
    positions = np.linspace(0, len(_RAMP) - 1, num_levels)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    weight = (positions - low)[:, None]
    return np.rint((1 - weight) * _RAMP[low] + weight * _RAMP[high]).astype(np.uint8)


def level_output_names(stem: str, reference_scales: Sequence[float]) -> list[str]:
    """The file names :func:`save_level_maps` writes for one image."""
    return [f"{stem}_levels_{scale:g}m.png" for scale in reference_scales]


def save_level_maps(
    levels: Tensor,
    reference_scales: Sequence[float],
    num_levels: int,
    out: Path,
    stem: str,
) -> list[Path]:
    """Write one colour PNG per reference scale (:func:`level_output_names`)."""
    from leanseg.visualize import save_rgb_png

    colours = level_colours(num_levels)
    paths = []
    for name, level in zip(
        level_output_names(stem, reference_scales), levels.cpu().numpy(), strict=True
    ):
        save_rgb_png(colours[level], out / name)
        paths.append(out / name)
    return paths
