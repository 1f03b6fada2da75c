"""predict never overwrites what it did not write; images are read as displayed; a trained run
evaluates without its ImageNet file (issue 12, defects 3, 9 and 10).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.commands.predict import PREDICT_MANIFEST
from leanseg.config import load_config
from leanseg.data.io import read_rgb
from leanseg.files.checkpoint import save_checkpoint
from leanseg.inference.predictor import Predictor
from leanseg.models import build_model

TINY = {
    "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 2, "size": [64, 96], "seed": 0},
        "crop_size": [64, 64],
        "batch_size": 2,
        "num_workers": 0,
    },
    "eval": {"max_images": 1, "boundary_width": 2},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A leanseg checkpoint whose config names an ImageNet file that does not exist."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = build_model(load_config(None, TINY))
    raw = json.loads(json.dumps(TINY))
    raw["model"]["backbone"]["pretrained"] = str(folder / "resnet18-gone.pth")
    raw["work_dir"] = str(folder / "run")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    path = folder / "best.pt"
    save_checkpoint({"model": model.state_dict(), "config": raw, "iteration": 0}, path)
    return path


def write_image(path: Path, size=(48, 32), value=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("leanseg: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def predict(checkpoint: Path, *args: str) -> int:
    return main(["predict", "--checkpoint", str(checkpoint), "--device", "cpu", *args])


# ---------------------------------------------------------------------- defect 3


def test_out_equal_to_the_input_folder_is_refused(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    image = write_image(photos / "a.png")
    before = image.read_bytes()
    # Refused as the inputs' folder, not only because a.png is in the way (the error for a
    # foreign file in --out names --out too).
    for out in (photos, tmp_path / "photos" / ".." / "photos"):
        assert predict(checkpoint, str(photos), "--out", str(out)) == 2
        assert "is the folder of the input image" in one_line_error(capsys)
    assert predict(checkpoint, str(image), "--out", str(photos)) == 2
    assert "is the folder of the input image" in one_line_error(capsys)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]
    assert image.read_bytes() == before


def test_out_linked_to_the_input_folder_is_refused(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    image = write_image(photos / "a.png")
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    assert predict(checkpoint, str(photos), "--out", str(link)) == 2
    assert f"--out {link} is the folder of the input image" in one_line_error(capsys)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]
    assert image.is_file()


def test_same_stem_different_suffix_do_not_collide(tmp_path, checkpoint):
    photos = tmp_path / "photos"
    write_image(photos / "a.png", value=1)
    write_image(photos / "a.jpg", value=2)
    write_image(photos / "b.png", value=3)
    out = tmp_path / "out"
    assert predict(checkpoint, str(photos), "--out", str(out)) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [
            PREDICT_MANIFEST,
            "a_jpg.png",
            "a_jpg_overlay.png",
            "a_png.png",
            "a_png_overlay.png",
            "b.png",
            "b_overlay.png",
        ]
    )
    overlays = [np.asarray(Image.open(out / f"a_{s}_overlay.png")) for s in ("png", "jpg")]
    assert not np.array_equal(*overlays)


def test_same_name_in_two_folders_is_refused_before_writing(tmp_path, checkpoint, capsys):
    write_image(tmp_path / "x" / "a.png")
    write_image(tmp_path / "y" / "a.png")
    out = tmp_path / "out"
    assert predict(checkpoint, str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out)) == 2
    assert "a.png" in one_line_error(capsys)
    assert not out.exists()


def test_existing_foreign_file_is_never_overwritten(tmp_path, checkpoint, capsys):
    write_image(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "a_overlay.png"
    mine.write_bytes(b"the user's own file")
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 2
    assert str(mine) in one_line_error(capsys)
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["a_overlay.png"]


def test_rerun_replaces_its_own_outputs(tmp_path, checkpoint):
    write_image(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 0
    write_image(tmp_path / "photos" / "c.png")
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 0
    record = json.loads((out / PREDICT_MANIFEST).read_text())
    assert set(record["files"]) == {"a.png", "a_overlay.png", "c.png", "c_overlay.png"}


def test_foreign_manifest_is_refused(tmp_path, checkpoint, capsys):
    write_image(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / PREDICT_MANIFEST).write_text('{"files": ["a.png"]}')
    (out / "a.png").write_bytes(b"not ours")
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 2
    # The manifest itself is refused (not only a.png, which it claims, as a foreign file).
    assert f"{out / PREDICT_MANIFEST} exists and is not a leanseg predict record" in (
        one_line_error(capsys)
    )
    assert (out / "a.png").read_bytes() == b"not ours"


# ---------------------------------------------------------------------- defect 9


def test_eval_does_not_need_the_pretrained_file(tmp_path, checkpoint, capsys):
    config = checkpoint.parent / "config.yaml"
    assert "resnet18-gone.pth" in config.read_text()
    code = main(["eval", str(config), "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "out"
    assert predict(checkpoint, str(write_image(tmp_path / "a.png")), "--out", str(out)) == 0


# ---------------------------------------------------------------------- defect 10


def test_16_bit_grey_image_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_rgb(path)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert (rgb == 255).mean() < 0.01  # not saturated to white


def test_16_bit_image_through_predict(tmp_path, checkpoint):
    ramp = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    predictor = Predictor.from_checkpoint(checkpoint)
    grey = np.rint(ramp / 257.0).astype(np.uint8)
    expected = predictor.predict(np.repeat(grey[:, :, None], 3, axis=2))
    assert np.array_equal(predictor.predict(tmp_path / "deep.png"), expected)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    rgb = read_rgb(path)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:15].mean() > 200 and rgb[25:].mean() < 50  # the white half is now on top


def test_cuda_without_a_gpu_says_so(tmp_path, checkpoint, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--device", "cuda"]) == 2  # fmt: skip
    assert "CUDA is not available" in one_line_error(capsys)
    config = checkpoint.parent / "config.yaml"
    assert main(["eval", str(config), "--checkpoint", str(checkpoint), "--device", "cuda"]) == 2
    assert "CUDA is not available" in one_line_error(capsys)
    assert not out.exists()


def test_unwritable_out_names_the_folder(tmp_path, checkpoint, capsys):
    image = write_image(tmp_path / "photos" / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "predictions"
    assert predict(checkpoint, str(image), "--out", str(out)) == 2
    assert str(out) in one_line_error(capsys)
    assert predict(checkpoint, str(image), "--out", str(blocker)) == 2
    assert str(blocker) in one_line_error(capsys)
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_read_only_out_names_the_folder(tmp_path, checkpoint, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        image = write_image(tmp_path / "photos" / "a.png")
        assert predict(checkpoint, str(image), "--out", str(out)) == 2
        assert str(out) in one_line_error(capsys)
    finally:
        out.chmod(0o700)


def test_json_into_a_missing_place_is_a_one_line_error(tmp_path, checkpoint, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    config = checkpoint.parent / "config.yaml"
    code = main(["eval", str(config), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--json", str(blocker / "scores.json")])  # fmt: skip
    assert code == 2
    assert "scores.json" in one_line_error(capsys)
