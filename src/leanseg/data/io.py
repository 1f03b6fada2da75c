"""Reading image and label files with errors that name the file.

Images are read as they are displayed: the EXIF orientation of a photo is applied, and 16-bit
grey images (PNG/TIFF modes ``I;16`` and ``I``) are scaled to 8 bits (``value / 257``, so 65535
becomes 255) instead of being clipped to white as ``Image.convert("RGB")`` would. Label files
are read as stored: no orientation, no scaling.

Every file's pixel count is read from its header (``Image.open`` decodes nothing) and checked
against a limit before the pixels are decoded (:func:`open_image_header`): by default
:data:`leanseg.config.limits.MAX_IMAGE_MEGAPIXELS`, 300 megapixels. leanseg checks the size itself,
so
Pillow's own decompression-bomb guard (a warning above 89 and an error above 179 megapixels) is
off while a header is read, and the limit is the one given.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leanseg.config import limits
from leanseg.data.base import DatasetError

# Single-channel modes of more than 8 bits whose values are 0..65535 grey levels.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageTooLargeError(DatasetError):
    """An image file whose header gives more pixels than the limit; nothing was decoded."""


# Pillow's guard is a module global: reading a header with it off holds this lock, so two
# threads of one process never restore each other's setting wrongly.
_PILLOW_GUARD = threading.Lock()


@contextlib.contextmanager
def _pillow_guard_off() -> Iterator[None]:
    with _PILLOW_GUARD:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def default_max_pixels() -> int:
    """The pixel limit of image files when none is given (:data:`limits.MAX_IMAGE_MEGAPIXELS`)."""
    return round(limits.MAX_IMAGE_MEGAPIXELS * 1_000_000)


def open_image_header(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file without decoding its pixels, refusing one larger than ``max_pixels``.

    Args:
        path: the image file.
        max_pixels: the most pixels (width x height, from the header) accepted; ``None`` for
            :func:`default_max_pixels`.

    Returns:
        The opened, not yet decoded, PIL image (``image.load()`` decodes it).

    Raises:
        ImageTooLargeError: naming the file, its size and the limit.
        DatasetError: for a missing file or one that is not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    limit = default_max_pixels() if max_pixels is None else max_pixels
    try:
        with _pillow_guard_off():
            image = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable or truncated image ({err})") from None
    check_image_size(image, path, limit)
    return image


def check_image_size(image: Image.Image, source: str | Path, max_pixels: int) -> None:
    """Refuse (and close) ``image`` when its size is above ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"{source}: {width}x{height} pixels ({limits.megapixels(width * height)}) is more "
            f"than the limit of {limits.megapixels(max_pixels)}; refused before decoding "
            "(leanseg predict --max-image-megapixels raises the limit of predict, which "
            "segments large images tile by tile)"
        )


def open_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image; truncated or foreign files raise :class:`DatasetError`.

    The size is checked against ``max_pixels`` first (:func:`open_image_header`).
    """
    image = open_image_header(path, max_pixels)
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise DatasetError(
            f"{path}: refused by Pillow's decompression-bomb guard ({err}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS to read images this large"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable or truncated image ({err})") from None
    # A format may settle its size when decoding (an icon's largest picture).
    check_image_size(image, path, default_max_pixels() if max_pixels is None else max_pixels)
    return image


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says; itself when it has no such tag.

    Unlike ``ImageOps.exif_transpose``, an image without the tag is not copied.
    """
    # A broken EXIF block leaves the pixels as stored.
    with contextlib.suppress(OSError, SyntaxError, ValueError, TypeError):
        if image.getexif().get(_ORIENTATION, 1) != 1:
            return ImageOps.exif_transpose(image)
    return image


_ORIENTATION = 0x0112  # the EXIF orientation tag


def image_to_rgb(image: Image.Image, source: str | Path = "image") -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of a PIL image, upright and scaled to 8 bits.

    Args:
        image: any PIL image; its EXIF orientation tag (if any) is applied.
        source: named in errors.

    Raises:
        DatasetError: for images whose pixel values have no 8-bit meaning (floating point,
            32-bit integers outside 0..65535).
    """
    return pixels_to_rgb(upright(image), source)


def pixels_to_rgb(image: Image.Image, source: str | Path = "image") -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of a PIL image as stored (no EXIF orientation), scaled to 8
    bits: :func:`image_to_rgb` without the turn, for regions cropped from an upright image.

    Raises:
        DatasetError: as :func:`image_to_rgb`.
    """
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
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.array(rgb)  # writable, as torch.from_numpy wants


def read_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of an image file, upright and scaled to 8 bits; files over
    ``max_pixels`` (default :func:`default_max_pixels`) are refused before decoding."""
    return image_to_rgb(open_image(path, max_pixels), path)


def read_label(path: str | Path) -> np.ndarray:
    """Raw integer values of a label file (palette indices for palette PNGs), ``(H, W)``."""
    image = open_image(path)
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise DatasetError(f"{path}: label must be a single-channel image, got mode {image.mode}")
    return np.asarray(image)


class ImageRegions:
    """The upright RGB pixels of one image, read one region at a time.

    Segmenting a large image tile by tile needs its pixels a tile at a time: this holds the
    decoded image once, as the file decodes (Pillow keeps 4 bytes per pixel for colour images,
    1 for grey or palette ones, 2 for 16-bit grey), and converts each region asked for to
    ``uint8`` RGB, so no RGB copy of the whole image is made besides.

    Args:
        image: a decoded PIL image (turned upright here, by its EXIF tag) or an RGB ``uint8
            (H, W, 3)`` (or grey ``(H, W)``) array.
        source: named in errors.
    """

    def __init__(self, image: Image.Image | np.ndarray, source: str | Path = "image") -> None:
        self.source = source
        if isinstance(image, Image.Image):
            self._image: Image.Image | np.ndarray = upright(image)
            self.width, self.height = self._image.size
        else:
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise ValueError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
            if image.ndim == 3 and image.shape[2] != 3:
                raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
            self._image = image
            self.height, self.width = image.shape[:2]

    @classmethod
    def open(cls, path: str | Path, max_pixels: int | None = None) -> ImageRegions:
        """Decode the image file ``path``, refusing it before decoding when it has more than
        ``max_pixels`` (:func:`open_image_header`)."""
        return cls(open_image(path, max_pixels), path)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """``uint8 (h, w, 3)`` RGB pixels of ``image[rows, cols]``: contiguous and writable.

        Slices take no step; their ends are clipped to the image as Python's are.
        """
        top, bottom, _ = rows.indices(self.height)
        left, right, _ = cols.indices(self.width)
        if isinstance(self._image, np.ndarray):
            region = self._image[top:bottom, left:right]
            if region.ndim == 2:
                return np.repeat(region[:, :, None], 3, axis=2)
            return np.array(region)
        crop = self._image.crop((left, top, max(left, right), max(top, bottom)))
        return pixels_to_rgb(crop, self.source)
