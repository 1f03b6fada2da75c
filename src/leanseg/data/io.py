"""Reading image and label files with errors that name the file.

Images are read as they are displayed: the EXIF orientation of a photo is applied, and 16-bit
grey images (PNG/TIFF modes ``I;16`` and ``I``) are scaled to 8 bits (``value / 257``, so 65535
becomes 255) instead of being clipped to white as ``Image.convert("RGB")`` would. Label files
are read as stored: no orientation, no scaling.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leanseg.data.base import DatasetError

# Single-channel modes of more than 8 bits whose values are 0..65535 grey levels.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image; truncated or foreign files raise :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as err:
        raise DatasetError(
            f"{path}: refused by Pillow's decompression-bomb guard ({err}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS to read images this large"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable or truncated image ({err})") from None
    return image


def image_to_rgb(image: Image.Image, source: str | Path = "image") -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of a PIL image, upright and scaled to 8 bits.

    Args:
        image: any PIL image; its EXIF orientation tag (if any) is applied.
        source: named in errors.

    Raises:
        DatasetError: for images whose pixel values have no 8-bit meaning (floating point,
            32-bit integers outside 0..65535).
    """
    # A broken EXIF block leaves the pixels as stored.
    with contextlib.suppress(OSError, SyntaxError, ValueError, TypeError):
        image = ImageOps.exif_transpose(image)
    if image.mode == "F":
        raise DatasetError(
            f"{source}: floating-point image (mode F) has no 8-bit meaning; convert it to 8 or "
            "16 bits first"
        )
    if image.mode in _WIDE_GREY_MODES:
        grey = np.asarray(image).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise DatasetError(
                f"{source}: {image.mode} image with values {grey.min()}..{grey.max()} "
                "outside 0..65535; convert it to 8 or 16 bits first"
            )
        grey8 = ((grey * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))  # writable, as torch.from_numpy wants


def read_rgb(path: str | Path) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of an image file, upright and scaled to 8 bits."""
    return image_to_rgb(open_image(path), path)


def read_label(path: str | Path) -> np.ndarray:
    """Raw integer values of a label file (palette indices for palette PNGs), ``(H, W)``."""
    image = open_image(path)
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise DatasetError(f"{path}: label must be a single-channel image, got mode {image.mode}")
    return np.asarray(image)
