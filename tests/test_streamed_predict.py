"""``leanseg predict`` writes its outputs band by band (issue 27): the label PNG, the overlay and
the OOD pictures of an image over the budget are written as each tile row finishes, so no
full-size map is held, and the files are those whole maps written at once would give, with or
without ``pyvips`` decoding the image a strip at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leanseg.data.io as image_io
from leanseg.cli import main
from leanseg.data.base import DatasetError
from leanseg.data.io import ImageRegions, read_rgb
from leanseg.files.atomic import KILL_IN_WRITE_ENV, is_temp_of
from leanseg.inference.ood_maps import _pictures, predict_bands
from leanseg.inference.predictor import Predictor
from leanseg.metrics.ood import foreign_map
from leanseg.visualize import PngWriter, overlay, save_label_png, save_rgb_png
from tiny_models import save_random_checkpoint

BUDGET = ["--max-megapixels", "0.012", "--overlap", "32"]  # 96 x 96 tiles, 64 px apart
STREET = {"dataset": "synthetic", "name": "street", "options": {"num_samples": 2, "size": [32, 48]}}


@pytest.fixture(scope="module")
def union_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ResNet-18 ladder of a two-dataset union (street scenes + a folder of 2 classes),
    so that ``--ood-domain street`` has foreign classes."""
    root = tmp_path_factory.mktemp("union")
    for kind in ("images", "labels"):
        (root / "em" / kind / "train").mkdir(parents=True)
    raw = {
        "model": {"backbone": {"name": "resnet18"}, "head": {"name": "ladder", "channels": 32}},
        "data": {
            "datasets": [
                STREET,
                {"dataset": "folder", "name": "em", "root": str(root / "em"),
                 "classes": ["membrane", "cell"]},
            ]
        },
        "work_dir": str(root / "run"),
    }  # fmt: skip
    return save_random_checkpoint(raw, root / "last.pt")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """A PNG and a JPEG of 150 x 211 pixels: 2 x 3 tiles at the budget of ``BUDGET``."""
    rows, cols = np.mgrid[0:150, 0:211]
    stripes = ((rows // 9 + cols // 13) % 2) * 200
    rgb = np.stack([rows * 255 // 150, cols * 255 // 211, stripes], -1).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb[::-1]).save(folder / "b.jpg", quality=90)
    return [folder / "a.png", folder / "b.jpg"]


def _whole_outputs(checkpoint: Path, images: list[Path], out: Path, ood: bool) -> None:
    """The outputs as whole maps written at once: the label map of ``Predictor.predict``, the
    overlay of the whole image, the OOD pictures assembled from every block."""
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=12_000, overlap=32)
    palette = predictor.palette
    for path in images:
        label = predictor.predict(path)
        save_label_png(label, out / f"{path.stem}.png", palette)
        save_rgb_png(overlay(read_rgb(path), label, palette), out / f"{path.stem}_overlay.png")
        if ood:
            flag, mass = np.empty_like(label), np.empty_like(label)
            for rows, cols, probabilities in predictor.predict_blocks(path):
                flag[rows, cols], mass[rows, cols] = _pictures(
                    foreign_map(probabilities, _street_classes(predictor))
                )
            save_rgb_png(flag, out / f"{path.stem}_foreign.png")
            save_rgb_png(mass, out / f"{path.stem}_foreign_mass.png")


def _street_classes(predictor: Predictor) -> list[int]:
    from leanseg.inference.ood_maps import domain_classes

    return domain_classes(predictor.cfg.data, "street")


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("ood", [False, True])
def test_streamed_outputs_equal_whole_maps_written_at_once(
    union_checkpoint, images, tmp_path, ood
) -> None:
    out, whole = tmp_path / "out", tmp_path / "whole"
    argv = ["predict", *map(str, images), "--checkpoint", str(union_checkpoint), "--out", str(out)]
    assert main([*argv, *BUDGET, *(["--ood-domain", "street"] if ood else [])]) == 0
    _whole_outputs(union_checkpoint, images, whole, ood)
    written = _files(out)
    written.pop(".leanseg_predict.json")
    assert written.keys() == _files(whole).keys()
    for name, data in _files(whole).items():
        assert written[name] == data, name  # byte for byte


def test_without_pyvips_the_files_are_the_same_and_one_note_says_why(
    union_checkpoint, images, tmp_path, monkeypatch, capsys
) -> None:
    with_pyvips = tmp_path / "with"
    argv = ["predict", *map(str, images), "--checkpoint", str(union_checkpoint), *BUDGET]
    assert main([*argv, "--out", str(with_pyvips)]) == 0
    assert "large-images" not in capsys.readouterr().err or image_io.streaming_unavailable()
    monkeypatch.setattr(image_io, "_pyvips", lambda: (None, "ImportError: no pyvips"))
    assert main([*argv, "--out", str(tmp_path / "without")]) == 0
    err = capsys.readouterr().err
    assert err.count("installing leanseg[large-images]") == 1  # once, for two large images
    assert "a.png is larger than --max-megapixels" in err.replace("\n", " ")
    assert _files(tmp_path / "without") == _files(with_pyvips)
    assert main(["predict", str(images[0]), "--checkpoint", str(union_checkpoint), "--out",
                 str(tmp_path / "small")]) == 0  # fmt: skip
    assert "large-images" not in capsys.readouterr().err  # within the budget: nothing to say


def test_bands_are_tile_rows_that_cover_the_image_once(union_checkpoint, images) -> None:
    predictor = Predictor.from_checkpoint(union_checkpoint, max_pixels=12_000, overlap=32)
    regions = ImageRegions.open(images[0], stream_over=12_000)
    expected = predictor.predict(images[0])
    bands = list(predict_bands(predictor, regions, _street_classes(predictor)))
    assert len(bands) == 2  # 150 rows: tiles of 96 rows from rows 0 and 64
    assert [band.rows.start for band in bands] == [0, *[band.rows.stop for band in bands[:-1]]]
    assert bands[-1].rows.stop == 150
    for band in bands:
        assert band.label.shape == (band.rows.stop - band.rows.start, 211)
        np.testing.assert_array_equal(band.label, expected[band.rows])
        assert band.foreign is not None and band.foreign[0].shape == band.label.shape


def test_a_failure_midway_leaves_no_file_of_the_image(
    union_checkpoint, images, tmp_path, monkeypatch, capsys
) -> None:
    read = ImageRegions.read

    def fail_low(self: ImageRegions, rows: slice, cols: slice) -> np.ndarray:
        if rows.start >= 64:  # the second tile row: the first band is written by then
            raise DatasetError(f"{self.source}: unreadable or truncated image (test)")
        return read(self, rows, cols)

    monkeypatch.setattr(ImageRegions, "read", fail_low)
    written: list[int] = []
    write = PngWriter.write

    def counted(self: PngWriter, block: np.ndarray) -> None:
        written.append(len(block))
        write(self, block)

    monkeypatch.setattr(PngWriter, "write", counted)
    out = tmp_path / "out"
    argv = ["predict", str(images[0]), "--checkpoint", str(union_checkpoint), "--out", str(out)]
    assert main([*argv, *BUDGET, "--ood-domain", "street"]) == 2
    assert "a.png: unreadable or truncated image (test)" in capsys.readouterr().err
    assert written  # the first band was written before the failure, and then removed
    assert [path.name for path in out.iterdir()] == [".leanseg_predict.json"]


def test_a_kill_midway_leaves_no_partial_file_and_the_next_run_clears_up(
    union_checkpoint, images, tmp_path
) -> None:
    out = tmp_path / "out"
    argv = ["predict", str(images[0]), "--checkpoint", str(union_checkpoint), "--out", str(out)]
    env = {**os.environ, KILL_IN_WRITE_ENV: "a_overlay.png:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "leanseg", *argv, *BUDGET], env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()
    left = sorted(path.name for path in out.iterdir())
    assert "a_overlay.png" not in left and "a.png" not in left  # nothing torn under its name
    assert any(is_temp_of(name, "a_overlay.png") for name in left)
    (out / ".notes.txt").write_text("not predict's")
    assert main([*argv, *BUDGET]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        ".leanseg_predict.json",
        ".notes.txt",
        "a.png",
        "a_overlay.png",
    ]
