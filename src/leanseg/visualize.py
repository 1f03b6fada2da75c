"""Colour label maps, blend them over images and write PNGs atomically.

Label maps hold class ids ``0..C-1`` and ``255`` for ignored pixels (DESIGN.md); ignored pixels
and ids the palette does not cover are drawn black. A palette is a sequence of RGB triples
indexed by class id (``dataset.palette``) or an equivalent ``(C, 3)`` array.

Files are written to a temporary file in the target folder and renamed over the target, so an
interrupted run never leaves a truncated PNG under the final name (the data is not fsynced:
image outputs are cheap to recompute, and fsync per file would slow down writing many of them).

PNGs are written by :class:`PngWriter` from blocks of rows pushed as they are computed
(:func:`write_png` feeds it from an iterable), compressed as they come, so writing a
150-megapixel overlay needs memory for one block, not for a copy of the picture (Pillow keeps
4 bytes per pixel of an RGB picture it encodes). The file does not depend on how the rows were
cut into blocks: the compressed stream is cut into IDAT chunks of a fixed size.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from leanseg.files.atomic import atomic_open
from leanseg.structures.labels import IGNORE_INDEX

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
    height, width = label.shape
    step = _rows_per_block(width)
    with open_label_png(path, height, width, palette) as png:
        for top in range(0, height, step):
            png.write(label[top : top + step].astype(np.uint8, copy=False))
    return Path(path)


def open_label_png(
    path: str | Path, height: int, width: int, palette: Palette | None = None
) -> PngWriter:
    """A :class:`PngWriter` of a label map as :func:`save_label_png` writes it, fed ``uint8``
    blocks of rows of class ids: a palette picture with ``palette`` (255 black), else grey."""
    table = None
    if palette is not None:
        colors = _palette_array(palette)
        if len(colors) > 256:
            raise ValueError(f"a PNG palette holds at most 256 colours, got {len(colors)}")
        table = np.zeros((256, 3), np.uint8)
        table[: len(colors)] = colors
        table[IGNORE_INDEX] = 0
    return PngWriter(path, height, width, palette=table)


def save_rgb_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB ``uint8 (H, W, 3)`` (or grey ``(H, W)``) array as a PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    step = _rows_per_block(width)
    return write_png(
        path,
        height,
        width,
        (array[top : top + step] for top in range(0, height, step)),
        channels=1 if array.ndim == 2 else 3,
    )


# Rows of about this many pixels are filtered and compressed at a time.
_BLOCK_PIXELS = 1 << 20
# PNG colour types (PNG spec 11.2.2) and the size of every IDAT chunk but the last.
_GREY, _RGB, _PALETTE = 0, 2, 3
_CHUNK_BYTES = 1 << 20


def _rows_per_block(width: int) -> int:
    return max(1, _BLOCK_PIXELS // max(1, width))


def write_png(
    path: str | Path,
    height: int,
    width: int,
    blocks: Iterable[np.ndarray],
    *,
    channels: int = 1,
    palette: np.ndarray | None = None,
) -> Path:
    """Write an 8-bit PNG from an iterable of blocks of rows, atomically (:class:`PngWriter`).

    Args:
        path: the PNG file to write; its folder is created.
        height: rows of the picture; the blocks must give exactly these.
        width: columns of the picture.
        blocks: ``uint8`` blocks of consecutive rows from the top, as :meth:`PngWriter.write`
            takes them.
        channels: 1 (grey, or palette ids with ``palette``) or 3 (RGB).
        palette: ``uint8 (N, 3)`` colours (``N <= 256``) of a palette picture of one channel.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: as :class:`PngWriter`; nothing is left behind.
    """
    with PngWriter(path, height, width, channels=channels, palette=palette) as png:
        for block in blocks:
            png.write(block)
    return Path(path)


class PngWriter:
    """An 8-bit PNG written atomically from blocks of rows pushed as they are computed.

    Used as a context manager: the picture is written to a temporary file beside ``path``
    (:func:`leanseg.files.atomic.atomic_open`), each block filtered and compressed as it comes,
    and the file is renamed over ``path`` when the block ends having given exactly ``height``
    rows; when it raises (or the rows do not add up), the temporary file is removed and nothing
    appears under ``path``. Grey and palette pictures are stored unfiltered (as Pillow stores
    palette pictures), RGB ones with the Paeth filter (PNG spec 9.4), which suits photographs.
    The zlib stream is cut into IDAT chunks of ``_CHUNK_BYTES`` (the last one shorter), so the
    file's bytes depend on the pixels only, not on the blocks they came in.

    Args:
        path: the PNG file to write; its folder is created.
        height: rows of the picture.
        width: columns of the picture.
        channels: 1 (grey, or palette ids with ``palette``) or 3 (RGB).
        palette: ``uint8 (N, 3)`` colours (``N <= 256``) of a palette picture of one channel.

    Raises:
        ValueError: for a bad size, channel count or palette (before any file is opened).
    """

    def __init__(
        self,
        path: str | Path,
        height: int,
        width: int,
        *,
        channels: int = 1,
        palette: np.ndarray | None = None,
    ) -> None:
        if channels not in (1, 3) or (palette is not None and channels != 1):
            raise ValueError(f"expected 1 channel (grey or palette) or 3 (RGB), got {channels}")
        if height < 1 or width < 1:
            raise ValueError(f"a PNG has at least one pixel, got {height}x{width}")
        self.path = Path(path)
        self.height, self.width, self.channels = height, width, channels
        self._palette = None if palette is None else np.ascontiguousarray(palette, np.uint8)
        self._shape = (width,) if channels == 1 else (width, 3)
        self._rows = 0
        self._previous = np.zeros(self._shape, np.uint8)  # the row above the first (PNG 9.2)
        self._compressor = zlib.compressobj(6)
        self._pending = bytearray()  # compressed bytes not yet in a chunk
        self._stack = contextlib.ExitStack()
        self._handle: BinaryIO | None = None

    def __enter__(self) -> PngWriter:
        self._handle = self._stack.enter_context(atomic_open(self.path))
        colour_type = _RGB if self.channels == 3 else _GREY if self._palette is None else _PALETTE
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, colour_type, 0, 0, 0)
        self._handle.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", header)
        if self._palette is not None:
            self._chunk(b"PLTE", self._palette.tobytes())
        return self

    def write(self, block: np.ndarray) -> None:
        """Append ``block``, the next rows: ``uint8 (h, width)`` for one channel, ``(h, width,
        3)`` for RGB.

        Raises:
            ValueError: for a block of another shape or dtype, or rows beyond ``height``.
        """
        if self._handle is None:
            raise ValueError(f"{self.path}: write blocks inside 'with PngWriter(...)'")
        block = np.asarray(block)
        if block.dtype != np.uint8 or block.shape[1:] != self._shape:
            raise ValueError(
                f"expected uint8 blocks of rows (h, {', '.join(map(str, self._shape))}), got "
                f"{block.dtype} {block.shape}"
            )
        if self._rows + len(block) > self.height:
            raise ValueError(f"the blocks give more than {self.height} rows")
        step = _rows_per_block(self.width)  # a large block is filtered a part at a time
        for top in range(0, len(block), step):
            self._compress(block[top : top + step])
        if len(block):
            self._previous = block[-1].copy()
        self._rows += len(block)
        while len(self._pending) >= _CHUNK_BYTES:
            self._chunk(b"IDAT", self._pending[:_CHUNK_BYTES])
            del self._pending[:_CHUNK_BYTES]

    def _compress(self, rows: np.ndarray) -> None:
        """Filter ``rows`` (the row above is ``_previous``, then each other's) and compress."""
        if self.channels == 3:
            filtered, kind = _paeth(rows, self._previous), 4
        else:
            filtered, kind = rows, 0
        self._previous = rows[-1]
        lines = filtered.reshape(len(rows), -1)
        framed = np.empty((len(rows), lines.shape[1] + 1), np.uint8)  # filter byte + row
        framed[:, 0] = kind
        framed[:, 1:] = lines
        self._pending += self._compressor.compress(framed.tobytes())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:  # the temporary file is removed, the error goes on
            self._handle = None
            self._stack.__exit__(kind, error, traceback)
            return
        try:
            if self._rows != self.height:
                raise ValueError(f"the blocks give {self._rows} rows, expected {self.height}")
            self._pending += self._compressor.flush()
            for start in range(0, len(self._pending), _CHUNK_BYTES):
                self._chunk(b"IDAT", self._pending[start : start + _CHUNK_BYTES])
            self._chunk(b"IEND", b"")
        except BaseException as failure:
            self._handle = None
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._handle = None
        self._stack.__exit__(None, None, None)  # renamed over path

    def _chunk(self, kind: bytes, data: bytes | bytearray) -> None:
        assert self._handle is not None
        _write_chunk(self._handle, kind, data)


def _write_chunk(handle: BinaryIO, kind: bytes, data: bytes | bytearray) -> None:
    handle.write(struct.pack(">I", len(data)))
    handle.write(kind)
    handle.write(data)
    handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _paeth(block: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Paeth-filtered bytes of RGB rows ``(h, W, 3)`` whose row above is ``above`` (PNG 9.4)."""
    pixels = block.astype(np.int16)
    up = np.concatenate([above[None].astype(np.int16), pixels[:-1]])  # b
    left = np.zeros_like(pixels)  # a (zero left of the first pixel)
    left[:, 1:] = pixels[:, :-1]
    upper_left = np.zeros_like(pixels)  # c
    upper_left[:, 1:] = up[:, :-1]
    guess = left + up - upper_left
    to_left, to_up, to_corner = (np.abs(guess - v) for v in (left, up, upper_left))
    predictor = np.where(
        (to_left <= to_up) & (to_left <= to_corner),
        left,
        np.where(to_up <= to_corner, up, upper_left),
    )
    return (pixels - predictor).astype(np.uint8)


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
