"""Colour label maps, blend them over images and write PNGs atomically.

Label maps hold class ids ``0..C-1`` and ``255`` for ignored pixels (DESIGN.md); ignored pixels
and ids the palette does not cover are drawn black. A palette is a sequence of RGB triples
indexed by class id (``dataset.palette``) or an equivalent ``(C, 3)`` array.

Files are written to a temporary file in the target folder and renamed over the target, so an
interrupted run never leaves a truncated PNG under the final name (the data is not fsynced:
image outputs are cheap to recompute, and fsync per file would slow down writing many of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from leanseg.utils import atomic_write

IGNORE_INDEX = 255

Palette = Sequence[Sequence[int]] | np.ndarray


def colorize(label: np.ndarray, palette: Palette) -> np.ndarray:
    """RGB picture ``uint8 (H, W, 3)`` of a label map ``(H, W)``.

    Class ``k`` gets ``palette[k]``; the ignore label 255 and ids outside the palette are black.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a label map (H, W), got shape {label.shape}")
    colors = _palette_array(palette)
    num_colors = len(colors)
    # One extra black entry at the end for ignored and out-of-palette ids.
    lookup = np.concatenate([colors, np.zeros((1, 3), np.uint8)])
    valid = _valid_mask(label, num_colors)
    return lookup[np.where(valid, label.astype(np.intp, copy=False), num_colors)]


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: Palette,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend class colours over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    Ignored pixels (255) and ids outside the palette keep the image unchanged.

    Args:
        image: ``uint8 (H, W, 3)`` RGB image.
        label: ``(H, W)`` label map of the same size.
        palette: RGB colour per class id.
        alpha: opacity of the colours, in ``[0, 1]``.

    Returns:
        ``uint8 (H, W, 3)``.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(label, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    valid = _valid_mask(label, len(_palette_array(palette)))
    return np.where(valid[:, :, None], blended, image)


def save_label_png(label: np.ndarray, path: str | Path, palette: Palette | None = None) -> Path:
    """Write a label map as a PNG whose pixel values are the class ids, atomically.

    With a palette the PNG is a palette image (mode ``"P"``): reading it back gives the raw ids,
    while image viewers show the class colours (255, the ignore label, is black). Without a
    palette it is a greyscale image (mode ``"L"``) of the ids.

    Args:
        label: ``(H, W)`` integer label map with values in ``0..255``.
        path: the PNG file to write; its folder is created.
        palette: RGB colour per class id (at most 256 entries).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a label map (H, W), got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"expected an integer label map, got dtype {label.dtype}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(
            f"label values {label.min()}..{label.max()} do not fit a PNG of ids 0..255"
        )
    picture = Image.fromarray(label.astype(np.uint8))  # mode "L"
    if palette is not None:
        colors = _palette_array(palette)
        if len(colors) > 256:
            raise ValueError(f"a PNG palette holds at most 256 colours, got {len(colors)}")
        table = np.zeros((256, 3), np.uint8)
        table[: len(colors)] = colors
        table[IGNORE_INDEX] = 0
        picture.putpalette(table.tobytes())  # mode "L" -> "P", pixel values unchanged
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def save_rgb_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB ``uint8 (H, W, 3)`` (or grey ``(H, W)``) array as a PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {array.dtype} {array.shape}")
    picture = Image.fromarray(np.ascontiguousarray(array))
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def side_by_side(images: list[np.ndarray], *, gap: int = 0, fill: int = 255) -> np.ndarray:
    """Put pictures next to each other, e.g. image | ground truth | prediction.

    Grey ``(H, W)`` pictures are repeated to three channels; shorter pictures are padded at the
    bottom with ``fill``.

    Args:
        images: ``uint8`` pictures ``(H_i, W_i, 3)`` or ``(H_i, W_i)``; colour label maps with
            :func:`colorize` first.
        gap: width in pixels of the separator columns between pictures.
        fill: grey value of the separators and the padding.

    Returns:
        ``uint8 (max H_i, sum W_i + gap * (n - 1), 3)``.
    """
    if not images:
        raise ValueError("side_by_side needs at least one picture")
    pictures = []
    for picture in images:
        picture = np.asarray(picture)
        if picture.dtype != np.uint8:
            raise ValueError(f"expected uint8 pictures, got dtype {picture.dtype}")
        if picture.ndim == 2:
            picture = np.repeat(picture[:, :, None], 3, axis=2)
        if picture.ndim != 3 or picture.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) or (H, W) pictures, got shape {picture.shape}")
        pictures.append(picture)
    height = max(picture.shape[0] for picture in pictures)
    columns = []
    for index, picture in enumerate(pictures):
        if index and gap:
            columns.append(np.full((height, gap, 3), fill, np.uint8))
        if picture.shape[0] < height:
            pad = np.full((height - picture.shape[0], picture.shape[1], 3), fill, np.uint8)
            picture = np.concatenate([picture, pad], axis=0)
        columns.append(picture)
    return np.concatenate(columns, axis=1)


def _palette_array(palette: Palette) -> np.ndarray:
    """A palette as a ``uint8 (C, 3)`` array, checking shape and range."""
    colors = np.asarray(palette)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"a palette is a list of RGB triples, got shape {colors.shape}")
    if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise ValueError("palette colours must be in 0..255")
    return colors.astype(np.uint8)


def _valid_mask(label: np.ndarray, num_colors: int) -> np.ndarray:
    """Pixels whose id has a colour: within the palette and not the ignore label."""
    return (label >= 0) & (label < num_colors) & (label != IGNORE_INDEX)
