"""Large images decoded a strip at a time by libvips (``leanseg[large-images]``, issue 27).

:meth:`leanseg.data.io.ImageRegions.open` hands an image over its ``stream_over`` pixels to
libvips when ``pyvips`` imports. Every kind of file it streams must give the pixels Pillow gives
(:func:`leanseg.data.io.read_rgb`, the reference), in any order of regions; every other file,
and every file when ``pyvips`` is missing or fails, goes to Pillow. The tests that decode with
libvips skip, saying so, where ``pyvips`` is not installed; the fallback tests run everywhere.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leanseg.data.io as image_io
from leanseg.data.base import DatasetError
from leanseg.data.io import ImageRegions, ImageTooLargeError, read_rgb, streaming_unavailable
from leanseg.inference.predictor import _tile_spans, choose_tile

needs_pyvips = pytest.mark.skipif(
    streaming_unavailable() is not None,
    reason="pyvips is not installed (pip install leanseg[large-images]): "
    f"{streaming_unavailable()}",
)


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(height: int, width: int) -> np.ndarray:
    """A picture JPEG keeps nearly as it is (noise would too, but hides upsampling)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 255 // height, cols * 255 // width, (rows * cols) % 256], -1).astype(
        np.uint8
    )


def _vips_save(path: Path, array: np.ndarray, interpretation: str, **options: object) -> Path:
    """Pictures Pillow cannot write (16-bit RGB, 2-bit grey), written by libvips."""
    import pyvips

    image = pyvips.Image.new_from_array(array).copy(interpretation=interpretation)
    image.write_to_file(str(path), **options)
    return path


def _pillow_kind(tmp_path: Path, kind: str) -> Path:
    rgb = _rgb(37, 53)
    grey16 = np.random.default_rng(1).integers(0, 65536, (37, 53), dtype=np.uint16)
    pictures = {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA"),
        "grey.png": Image.fromarray(rgb[:, :, 0]),
        "grey_alpha.png": Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), "LA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "bits.png": Image.fromarray(rgb[:, :, 0] > 128),
        "grey16.png": Image.fromarray(grey16),
        "rgb.jpg": Image.fromarray(_smooth(37, 53)),
        "grey.jpg": Image.fromarray(_smooth(37, 53)[:, :, 0]),
        "rgb.tif": Image.fromarray(rgb),
        "grey16.tif": Image.fromarray(grey16),
        "rgb.webp": Image.fromarray(_smooth(37, 53)),
    }
    path = tmp_path / kind
    if kind == "palette_transparent.png":  # a tRNS chunk: libvips gives RGBA
        Image.fromarray(rgb).convert("P").save(path, transparency=3)
    else:
        pictures[kind].save(path)
    return path


def _vips_kind(tmp_path: Path, kind: str) -> Path:
    wide = np.random.default_rng(2).integers(0, 65536, (37, 53, 4), dtype=np.uint16)
    grey = _rgb(37, 53)[:, :, 0]
    made = {
        "rgb16.png": (wide[:, :, :3], "rgb16", {}),
        "rgba16.png": (wide, "rgb16", {}),
        "grey_alpha16.png": (wide[:, :, :2], "grey16", {}),
        "grey2.png": (grey, "b-w", {"bitdepth": 2}),
        "grey4.png": (grey, "b-w", {"bitdepth": 4}),
        "rgb16.tif": (wide[:, :, :3], "rgb16", {}),
    }
    array, interpretation, options = made[kind]
    return _vips_save(tmp_path / kind, array, interpretation, **options)


REGIONS = [  # (rows, cols): forwards, backwards, past the ends, empty
    (slice(0, 37), slice(0, 53)),
    (slice(5, 20), slice(30, 53)),
    (slice(18, 30), slice(0, 7)),
    (slice(2, 9), slice(4, 8)),
    (slice(36, 99), slice(50, 80)),
    (slice(10, 10), slice(0, 53)),
]


def _assert_regions_match(path: Path) -> ImageRegions:
    whole = read_rgb(path)
    regions = ImageRegions.open(path, stream_over=0)
    assert regions.streamed, f"{path.name} was not streamed"
    assert regions.shape == whole.shape[:2]
    for rows, cols in REGIONS:
        region = regions.read(rows, cols)
        assert region.dtype == np.uint8 and region.flags.c_contiguous and region.flags.writeable
        np.testing.assert_array_equal(region, whole[rows, cols], err_msg=f"{rows}, {cols}")
    return regions


@needs_pyvips
@pytest.mark.parametrize(
    "kind",
    [
        "rgb.png",
        "rgba.png",
        "grey.png",
        "grey_alpha.png",
        "palette.png",
        "palette_transparent.png",
        "bits.png",
        "grey16.png",
        "rgb.jpg",
        "grey.jpg",
        "rgb.tif",
        "grey16.tif",
        "rgb.webp",
    ],
)
def test_streamed_pixels_equal_pillows(tmp_path, kind) -> None:
    _assert_regions_match(_pillow_kind(tmp_path, kind))


@needs_pyvips
@pytest.mark.parametrize(
    "kind",
    ["rgb16.png", "rgba16.png", "grey_alpha16.png", "grey2.png", "grey4.png", "rgb16.tif"],
)
def test_streamed_pixels_of_16_and_low_bit_files_equal_pillows(tmp_path, kind) -> None:
    # Pillow keeps the high byte of 16-bit colour and scales 16-bit grey (round(v / 257)).
    _assert_regions_match(_vips_kind(tmp_path, kind))


@needs_pyvips
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_streamed_images_are_upright_as_pillow_turns_them(tmp_path, suffix, orientation) -> None:
    image = Image.fromarray(_smooth(30, 47))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{suffix}"
    image.save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
    regions = _assert_regions_match(path)
    assert regions.shape == ((30, 47) if orientation < 5 else (47, 30))


@needs_pyvips
def test_tile_rows_decode_every_row_once_and_hold_one_band(tmp_path, monkeypatch) -> None:
    path = tmp_path / "large.png"
    Image.fromarray(_smooth(300, 420)).save(path)
    whole = read_rgb(path)
    regions = ImageRegions.open(path, stream_over=300 * 420 - 1)
    assert regions.streamed
    decoded: list[int] = []
    fetch = image_io._StreamedImage._fetch

    def counted(self, top, height, left, width):
        decoded.extend(range(top, top + height))
        return fetch(self, top, height, left, width)

    monkeypatch.setattr(image_io._StreamedImage, "_fetch", counted)
    monkeypatch.setattr(image_io, "_STRIP_PIXELS", 420 * 16)  # strips of 16 rows
    tile = choose_tile(300, 420, 100 * 100)
    assert tile is not None
    rows, cols = (_tile_spans(n, t, 24, 32) for n, t in zip((300, 420), tile, strict=True))
    assert len(rows) > 2
    for row in rows:  # as Predictor.predict_blocks reads them, then predict's overlay
        for col in cols:
            tile_rows, tile_cols = slice(row.start, row.stop), slice(col.start, col.stop)
            np.testing.assert_array_equal(
                regions.read(tile_rows, tile_cols), whole[tile_rows, tile_cols]
            )
        kept = slice(row.keep_start, row.keep_stop)
        np.testing.assert_array_equal(regions.read(kept, slice(0, 420)), whole[kept])
        band = regions._image._band
        assert len(band) == row.stop - row.start  # one tile row's rows, not the image
    assert decoded == list(range(300))  # one pass, each row decoded once
    assert len(regions._image._storage) == max(row.stop - row.start for row in rows)


@needs_pyvips
def test_a_truncated_streamed_file_is_one_error_naming_it(tmp_path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_rgb(200, 300)).save(path)
    path.write_bytes(path.read_bytes()[:20_000])
    regions = ImageRegions.open(path, stream_over=0)  # the header is whole
    with pytest.raises(DatasetError, match=r"cut\.png: unreadable or truncated image") as error:
        regions.read(slice(0, 200), slice(0, 300))
    assert "\n" not in str(error.value)


@needs_pyvips
def test_brackets_in_a_file_name_are_not_libvips_options(tmp_path) -> None:
    path = tmp_path / "a[shrink=2].png"
    Image.fromarray(_rgb(37, 53)).save(path)
    _assert_regions_match(path)


@needs_pyvips
def test_a_file_libvips_cannot_open_goes_to_pillow(tmp_path, monkeypatch) -> None:
    import pyvips

    def refuse(*args: object, **kwargs: object) -> None:
        raise pyvips.Error("unable to load from source")

    path = _pillow_kind(tmp_path, "rgb.png")
    monkeypatch.setattr(pyvips.Image, "new_from_source", refuse)
    regions = ImageRegions.open(path, stream_over=0)
    assert not regions.streamed
    np.testing.assert_array_equal(regions.read(slice(0, 37), slice(0, 53)), read_rgb(path))


# --------------------------------------------------------------------------- Pillow's share


@pytest.mark.parametrize("suffix", [".bmp", ".ppm"])
def test_formats_libvips_may_read_otherwise_go_to_pillow(tmp_path, suffix) -> None:
    path = tmp_path / f"image{suffix}"
    Image.fromarray(_rgb(37, 53)).save(path)
    regions = ImageRegions.open(path, stream_over=0)
    assert not regions.streamed
    np.testing.assert_array_equal(regions.read(slice(0, 37), slice(0, 53)), read_rgb(path))


def test_cmyk_goes_to_pillow(tmp_path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_smooth(37, 53)).convert("CMYK").save(path)
    regions = ImageRegions.open(path, stream_over=0)
    assert not regions.streamed
    np.testing.assert_array_equal(regions.read(slice(0, 37), slice(0, 53)), read_rgb(path))


def test_images_within_the_budget_stay_with_pillow(tmp_path) -> None:
    path = _pillow_kind(tmp_path, "rgb.png")
    assert not ImageRegions.open(path, stream_over=37 * 53).streamed
    assert not ImageRegions.open(path).streamed


def test_without_pyvips_large_images_go_to_pillow(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(image_io, "_pyvips", lambda: (None, "ImportError: no module pyvips"))
    path = _pillow_kind(tmp_path, "rgb.png")
    assert streaming_unavailable() == "ImportError: no module pyvips"
    regions = ImageRegions.open(path, stream_over=0)
    assert not regions.streamed
    np.testing.assert_array_equal(regions.read(slice(0, 37), slice(0, 53)), read_rgb(path))


def test_the_header_limit_comes_before_any_decoder(tmp_path, monkeypatch) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    path = tmp_path / "huge.png"  # a header claiming 30000 x 20000 pixels, no pixels
    header = struct.pack(">IIBBBBB", 30_000, 20_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    monkeypatch.setattr(image_io, "_pyvips", lambda: pytest.fail("libvips was asked"))
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: 30000x20000 pixels"):
        ImageRegions.open(path, max_pixels=100_000_000, stream_over=0)
