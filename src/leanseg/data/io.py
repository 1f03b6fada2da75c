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

Large images can be read without holding them decoded (:class:`ImageRegions`,
``stream_over``): Pillow decodes a PNG whole, so where the optional ``pyvips`` (libvips,
``pip install leanseg[large-images]``) imports, such an image is decoded by libvips a strip of
rows at a time instead, giving the same pixels.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    return _decode(open_image_header(path, max_pixels), path, max_pixels)


def _decode(image: Image.Image, path: str | Path, max_pixels: int | None) -> Image.Image:
    """Decode the pixels of ``image``, opened by :func:`open_image_header` from ``path``."""
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
        return np.repeat(_grey16_to_8(grey)[:, :, None], 3, axis=2)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.array(rgb)  # writable, as torch.from_numpy wants


def _grey16_to_8(grey: np.ndarray) -> np.ndarray:
    """``uint8`` of grey levels ``0..65535``: ``round(value / 257)``, so 65535 becomes 255."""
    return ((grey.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


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

    Segmenting a large image tile by tile needs its pixels a tile at a time. By default this
    holds the decoded image once, as Pillow decodes the file (4 bytes per pixel for colour
    images, 1 for grey or palette ones, 2 for 16-bit grey), and converts each region asked for
    to ``uint8`` RGB, so no RGB copy of the whole image is made besides. An image opened with
    :meth:`open` over ``stream_over`` pixels is instead decoded by libvips a strip of rows at a
    time, where ``pyvips`` imports (:attr:`streamed`; see :meth:`open`).

    Args:
        image: a decoded PIL image (turned upright here, by its EXIF tag) or an RGB ``uint8
            (H, W, 3)`` (or grey ``(H, W)``) array; :meth:`open` also passes its libvips reader.
        source: named in errors.
    """

    def __init__(
        self, image: Image.Image | np.ndarray | _StreamedImage, source: str | Path = "image"
    ) -> None:
        self.source = source
        self._image: Image.Image | np.ndarray | _StreamedImage
        if isinstance(image, _StreamedImage):
            self._image = image
            self.height, self.width = image.height, image.width
        elif isinstance(image, Image.Image):
            self._image = upright(image)
            self.width, self.height = self._image.size
        else:
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise ValueError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
            if image.ndim == 3 and image.shape[2] != 3:
                raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
            self._image = image
            self.height, self.width = image.shape[:2]

    @classmethod
    def open(
        cls, path: str | Path, max_pixels: int | None = None, *, stream_over: int | None = None
    ) -> ImageRegions:
        """Open the image file ``path``, refusing it before decoding when it has more than
        ``max_pixels`` (:func:`open_image_header`).

        An image of more than ``stream_over`` pixels is decoded by libvips a strip of rows at a
        time when ``pyvips`` imports and libvips reads the file as Pillow does (PNG, JPEG, TIFF
        and WebP of 8- or 16-bit grey, palette, RGB or RGBA pixels): see
        :class:`_StreamedImage`. Any other file, or any file when ``pyvips`` is missing or
        cannot open it, is decoded whole by Pillow (:func:`streaming_unavailable` says why not).

        ``predict`` passes its tile budget as ``stream_over``: an image within the budget is
        read whole in one region anyway (one pass of the model), so decoding it in strips would
        save nothing, and Pillow keeps it exactly as before. Only images the model sees tile by
        tile are worth decoding a strip at a time.

        Raises:
            ImageTooLargeError: over ``max_pixels``, from the header.
            DatasetError: for a missing, foreign or unreadable file, naming it.
        """
        header = open_image_header(path, max_pixels)
        width, height = header.size
        if stream_over is not None and width * height > stream_over:
            streamed = _StreamedImage.open(path, header)
            if streamed is not None:
                header.close()
                return cls(streamed, path)
        return cls(_decode(header, path, max_pixels), path)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def streamed(self) -> bool:
        """Whether the pixels are decoded by libvips a strip at a time rather than held whole."""
        return isinstance(self._image, _StreamedImage)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """``uint8 (h, w, 3)`` RGB pixels of ``image[rows, cols]``: contiguous and writable.

        Slices take no step; their ends are clipped to the image as Python's are.

        Raises:
            DatasetError: naming the file, when a streamed image turns out to be truncated or
                corrupt where the region is decoded.
        """
        top, bottom, _ = rows.indices(self.height)
        left, right, _ = cols.indices(self.width)
        bottom, right = max(top, bottom), max(left, right)
        if isinstance(self._image, _StreamedImage):
            return self._image.read(top, bottom, left, right)
        if isinstance(self._image, np.ndarray):
            region = self._image[top:bottom, left:right]
            if region.ndim == 2:
                return np.repeat(region[:, :, None], 3, axis=2)
            return np.array(region)
        crop = self._image.crop((left, top, right, bottom))
        return pixels_to_rgb(crop, self.source)


# --------------------------------------------------------------------------- libvips

# What libvips reads as Pillow does (tests/test_streamed_images.py compares each kind): the
# formats, and the Pillow modes of their files. Others (BMP, PPM, CMYK, 32-bit and float) are
# left to Pillow.
_STREAMED_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP"})
_STREAMED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", *_WIDE_GREY_MODES})
_VIPS_DTYPES = {"uchar": np.uint8, "ushort": np.uint16}
# Rows of about this many pixels are decoded at a time.
_STRIP_PIXELS = 1 << 20


@functools.cache
def _pyvips() -> tuple[Any, str | None]:
    """The ``pyvips`` module, or ``None`` and why it cannot be used (imported once)."""
    try:
        import pyvips
    except Exception as err:  # not installed (ImportError), or libvips not loadable (OSError)
        return None, f"{type(err).__name__}: {err}"
    return pyvips, None


def streaming_unavailable() -> str | None:
    """Why large images cannot be decoded a strip at a time here, or ``None`` when they can
    (``pyvips`` imports: ``pip install leanseg[large-images]``)."""
    return _pyvips()[1]


class _StreamedImage:
    """Upright RGB rows of an image file, decoded by libvips a strip at a time.

    libvips decodes a PNG (or a JPEG, or a striped TIFF) from top to bottom
    (``access="sequential"``); this keeps the rows of the last region asked for (the band) and
    decodes further down only when a region reaches below it, so the tiles of a tile row,
    then the next tile row, are read in one pass over the file, holding one band: the tile
    height times the image's width, 3 bytes per pixel. The rows of the band that the next
    region shares (the tiles' overlap) are kept, not decoded again. A region above the band
    starts the decoding over from the top (correct in any order, fast in row-major order).

    An image whose EXIF orientation turns or mirrors it is opened for random access and turned
    by libvips (``autorot``, the orientations Pillow's ``exif_transpose`` applies): libvips then
    decodes it whole, into memory or, above ``VIPS_DISC_THRESHOLD`` (100 MB decoded by
    default), into a temporary file in ``TMPDIR`` whose pages are mapped from the page cache
    while it is read.

    Pixels match Pillow's (:func:`pixels_to_rgb` of the upright image): 16-bit grey is scaled
    ``round(value / 257)``, other 16-bit pictures keep their high byte as Pillow's decoders do,
    palettes are expanded, alpha is dropped and grey repeated to three channels.
    """

    def __init__(self, path: Path, pyvips: Any, wide_grey: bool) -> None:
        self.path = path
        self._pyvips = pyvips
        self._wide_grey = wide_grey
        image = self._load("sequential")
        self._sequential = not self._turned(image)
        if not self._sequential:
            image = self._load("random").autorot()
        self._dtype = _VIPS_DTYPES.get(image.format)
        if self._dtype is None or not 1 <= image.bands <= 4:
            raise ValueError(f"libvips gives {image.bands} bands of {image.format}")
        self.height, self.width, self._bands = image.height, image.width, image.bands
        self._region = pyvips.Region.new(image)
        # The band: rows _top.. of the image, the first rows of a reused buffer.
        self._storage = np.empty((0, self.width, 3), np.uint8)
        self._band = self._storage
        self._top = 0
        self._next = 0  # the row the sequential decoder gives next

    @classmethod
    def open(cls, path: str | Path, header: Image.Image) -> _StreamedImage | None:
        """The streamed reader of ``path`` (``header``: its Pillow header), or ``None`` where
        Pillow should decode it: ``pyvips`` missing, a format or mode libvips may read
        differently, or a file libvips cannot open."""
        pyvips = _pyvips()[0]
        if pyvips is None or header.format not in _STREAMED_FORMATS:
            return None
        if header.mode not in _STREAMED_MODES:
            return None
        try:
            streamed = cls(Path(path), pyvips, header.mode in _WIDE_GREY_MODES)
        except Exception:  # whatever stops libvips here, Pillow is the reference reader
            return None
        # Upright, the size is the header's, or its transpose; anything else is Pillow's call.
        if (streamed.width, streamed.height) not in (header.size, header.size[::-1]):
            return None
        return streamed

    def _load(self, access: str) -> Any:
        # From a source, not a file name: libvips would read "[...]" in a name as options.
        source = self._pyvips.Source.new_from_file(str(self.path))
        return self._pyvips.Image.new_from_source(source, "", access=access, fail_on="truncated")

    def _turned(self, image: Any) -> bool:
        """Whether ``image``'s EXIF orientation (as libvips reads it) turns or mirrors it."""
        if not image.get_typeof("orientation"):
            return False
        return image.get("orientation") in range(2, 9)

    def read(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """``uint8 (h, w, 3)`` of rows ``top:bottom`` and columns ``left:right`` (within the
        image)."""
        if top == bottom or left == right:  # libvips refuses empty regions
            return np.empty((bottom - top, right - left, 3), np.uint8)
        if not self._sequential:
            return self._fetch(top, bottom - top, left, right - left)
        if not (self._top <= top and bottom <= self._top + len(self._band)):
            self._cover(top, bottom)
        return self._band[top - self._top : bottom - self._top, left:right].copy()

    def _cover(self, top: int, bottom: int) -> None:
        """Make the band rows ``top:bottom``, keeping the rows it already holds.

        The band always ends where the decoder is (``_next``).
        """
        if top < self._top:  # above the band: decode again from the top
            self._region = self._pyvips.Region.new(self._load("sequential"))
            self._band, self._top, self._next = self._band[:0], 0, 0
        kept = max(0, self._next - top)  # rows the old band shares with the new one
        height = bottom - top
        if height > len(self._storage):
            storage = np.empty((height, self.width, 3), np.uint8)
            storage[:kept] = self._band[len(self._band) - kept :]
            self._storage = storage
        else:  # moved up within the storage (numpy copies overlapping rows safely)
            self._storage[:kept] = self._band[len(self._band) - kept :]
        self._band, self._top = self._storage[:height], top
        step = max(1, _STRIP_PIXELS // self.width)
        while self._next < bottom:  # decode down to the band's end, skipping rows above it
            rows = min(step, bottom - self._next)
            strip = self._fetch(self._next, rows, 0, self.width)
            first = max(self._next, top + kept)  # the first row of the strip the band wants
            if first < self._next + rows:
                self._band[first - top : self._next + rows - top] = strip[first - self._next :]
            self._next += rows

    def _fetch(self, top: int, height: int, left: int, width: int) -> np.ndarray:
        """Decode a region into ``uint8 (height, width, 3)`` RGB as Pillow gives it."""
        try:
            data = self._region.fetch(left, top, width, height)
        except self._pyvips.Error as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            message = lines[-1] if lines else "libvips error"  # libvips's own reason
            raise DatasetError(f"{self.path}: unreadable or truncated image ({message})") from None
        pixels = np.frombuffer(data, self._dtype).reshape(height, width, self._bands)
        if self._dtype == np.uint16:
            # Pillow scales 16-bit grey and keeps the high byte of other 16-bit pictures.
            pixels = _grey16_to_8(pixels) if self._wide_grey else (pixels >> 8).astype(np.uint8)
        if self._bands <= 2:  # grey, grey + alpha
            return np.repeat(pixels[:, :, :1], 3, axis=2)
        return np.ascontiguousarray(pixels[:, :, :3])
