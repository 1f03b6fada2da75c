"""The push-style PNG writer (:class:`leanseg.visualize.PngWriter`): rows pushed as they are
computed, the file renamed into place only when whole, the same bytes however the rows came."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import leanseg.visualize as visualize
from leanseg.visualize import PngWriter, open_label_png, save_label_png, save_rgb_png, write_png

PALETTE = [(128, 64, 128), (70, 70, 70), (0, 0, 142), (220, 20, 60), (107, 142, 35)]


def _rgb(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _push(path, picture: np.ndarray, cuts: list[int], **options: object) -> bytes:
    """Write ``picture`` through a PngWriter in blocks cut at the rows ``cuts``."""
    height, width = picture.shape[:2]
    with PngWriter(path, height, width, **options) as png:
        for top, bottom in zip([0, *cuts], [*cuts, height], strict=True):
            png.write(picture[top:bottom])
    return path.read_bytes()


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 97])  # one IDAT chunk, and many
def test_the_bytes_do_not_depend_on_the_blocks(tmp_path, monkeypatch, chunk_bytes) -> None:
    monkeypatch.setattr(visualize, "_CHUNK_BYTES", chunk_bytes)
    rgb = _rgb(61, 43)
    files = {_push(tmp_path / "a.png", rgb, cuts, channels=3) for cuts in ([], [1], [7, 8, 30])}
    assert len(files) == 1
    with Image.open(tmp_path / "a.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture), rgb)
    labels = rgb[:, :, 0] % 5
    table = np.array(PALETTE, np.uint8)
    files = {_push(tmp_path / "l.png", labels, cuts, palette=table) for cuts in ([], [3, 60])}
    assert len(files) == 1
    with Image.open(tmp_path / "l.png") as picture:
        assert picture.mode == "P"
        np.testing.assert_array_equal(np.asarray(picture), labels)


def test_streamed_label_png_equals_the_whole_one(tmp_path) -> None:
    labels = _rgb(50, 70)[:, :, 0] % 6
    labels[0, :9] = 255  # ignored: black
    whole = save_label_png(labels, tmp_path / "whole.png", PALETTE).read_bytes()
    with open_label_png(tmp_path / "pushed.png", 50, 70, PALETTE) as png:
        for top in range(0, 50, 13):
            png.write(labels[top : top + 13].astype(np.uint8))
    assert (tmp_path / "pushed.png").read_bytes() == whole
    grey = save_rgb_png(labels.astype(np.uint8), tmp_path / "grey.png").read_bytes()
    assert _push(tmp_path / "grey_pushed.png", labels.astype(np.uint8), [20]) == grey


def test_an_error_inside_the_block_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = save_rgb_png(_rgb(8, 9), tmp_path / "kept.png")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="stopped"), PngWriter(path, 8, 9, channels=3) as png:
        png.write(_rgb(4, 9))
        assert len(list(tmp_path.iterdir())) == 2  # the old file and the temporary one
        raise RuntimeError("stopped")
    assert [p.name for p in tmp_path.iterdir()] == ["kept.png"]
    assert path.read_bytes() == before


def test_rows_that_do_not_add_up_write_nothing(tmp_path) -> None:
    short = PngWriter(tmp_path / "short.png", 5, 4)
    with pytest.raises(ValueError, match="give 3 rows, expected 5"), short as png:
        png.write(np.zeros((3, 4), np.uint8))
    long = PngWriter(tmp_path / "long.png", 5, 4)
    with pytest.raises(ValueError, match="more than 5 rows"), long as png:
        png.write(np.zeros((6, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 blocks"):
        write_png(tmp_path / "wide.png", 5, 4, [np.zeros((5, 3), np.uint8)])
    with pytest.raises(ValueError, match="inside 'with PngWriter"):
        PngWriter(tmp_path / "unopened.png", 5, 4).write(np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="at least one pixel"):
        PngWriter(tmp_path / "empty.png", 0, 4)
    assert not list(tmp_path.iterdir())


def test_a_block_changed_after_it_was_written_changes_nothing(tmp_path) -> None:
    rgb = _rgb(6, 5)
    buffer = rgb[:3].copy()
    with PngWriter(tmp_path / "reused.png", 6, 5, channels=3) as png:
        png.write(buffer)
        buffer[:] = rgb[3:]  # a reused buffer: the next rows' Paeth filter needs the old row
        png.write(buffer)
    with Image.open(tmp_path / "reused.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture), rgb)
