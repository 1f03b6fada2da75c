"""Reading image and label files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leanseg.data.base import DatasetError


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


def read_rgb(path: str | Path) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of an image file."""
    return np.array(open_image(path).convert("RGB"))  # writable, as torch.from_numpy wants


def read_label(path: str | Path) -> np.ndarray:
    """Raw integer values of a label file (palette indices for palette PNGs), ``(H, W)``."""
    image = open_image(path)
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise DatasetError(f"{path}: label must be a single-channel image, got mode {image.mode}")
    return np.asarray(image)
