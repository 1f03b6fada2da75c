"""Cityscapes camera files and disparity for scale selection (thesis ch. 3), on tiny fixtures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.data.base import DatasetError
from leanseg.data.datasets import Cityscapes
from leanseg.data.stereo import (
    StereoCamera,
    cityscapes_camera_path,
    read_cityscapes_camera,
    scale_disparity,
)
from leanseg.nn.scale_selection import ScaleMultiplexer, disparity_on_grid

CAMERA = {
    "extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "z": 1.22},
    "intrinsic": {"fx": 2262.52, "fy": 2265.3, "u0": 1096.98, "v0": 513.137},
}


def _write_cityscapes(root, name="aachen_000000_000019", size=(16, 24)):
    city = name.split("_")[0]
    height, width = size
    folders = {
        "leftImg8bit": f"{name}_leftImg8bit.png",
        "gtFine": f"{name}_gtFine_labelIds.png",
        "disparity": f"{name}_disparity.png",
        "camera": f"{name}_camera.json",
    }
    paths = {}
    for folder, filename in folders.items():
        directory = root / folder / "train" / city
        directory.mkdir(parents=True, exist_ok=True)
        paths[folder] = directory / filename
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(paths["leftImg8bit"])
    Image.fromarray(np.full((height, width), 7, np.uint8)).save(paths["gtFine"])  # road
    # Cityscapes disparity: p = d * 256 + 1, 0 = unknown. Left half 40 px, right half unknown.
    raw = np.zeros((height, width), np.uint16)
    raw[:, : width // 2] = 40 * 256 + 1
    Image.fromarray(raw).save(paths["disparity"])
    paths["camera"].write_text(json.dumps(CAMERA))
    return paths


def test_camera_file_is_read_and_found_beside_the_image(tmp_path):
    paths = _write_cityscapes(tmp_path)
    path = cityscapes_camera_path(tmp_path, "train", "aachen_000000_000019")
    assert path == paths["camera"]
    camera = read_cityscapes_camera(path)
    assert camera == StereoCamera(0.209313, 2262.52, 2265.3, 1096.98, 513.137)
    depth = camera.depth(np.array([40.0, 0.0]))
    assert depth[0] == pytest.approx(2262.52 * 0.209313 / 40) and np.isinf(depth[1])


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a JSON camera file"),
        (json.dumps({"intrinsic": CAMERA["intrinsic"]}), "extrinsic.baseline missing"),
        (json.dumps({**CAMERA, "extrinsic": {"baseline": "0.2"}}), "extrinsic.baseline missing"),
        (json.dumps({**CAMERA, "extrinsic": {"baseline": -0.2}}), "baseline must be a positive"),
        (json.dumps({**CAMERA, "intrinsic": {**CAMERA["intrinsic"], "fx": 0}}), "fx must be"),
    ],
)
def test_bad_camera_files_raise_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "x_camera.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=f"x_camera.json.*{message}"):
        read_cityscapes_camera(path)
    with pytest.raises(DatasetError, match=r"camera file not found: .*missing\.json"):
        read_cityscapes_camera(tmp_path / "missing.json")


def test_cityscapes_disparity_and_camera_drive_the_multiplexer(tmp_path):
    _write_cityscapes(tmp_path)
    sample = Cityscapes(tmp_path, "train")[0]
    disparity = sample["disparity"]
    assert disparity[0, 0] == 40.0 and disparity[0, -1] == 0.0
    camera = read_cityscapes_camera(cityscapes_camera_path(tmp_path, "train", sample["name"]))
    # The image is used at half size: disparities halve too (20 px).
    half = scale_disparity(disparity[::2, ::2], 0.5)
    grid = disparity_on_grid(torch.from_numpy(half)[None], 4, (2, 3))
    levels = ScaleMultiplexer().route(grid, camera.baseline)  # (1, 3, 2, 3)
    for m, reference in enumerate((1.0, 4.0, 7.0)):
        s = 20.0 * reference / (camera.baseline * 185.0)
        expected = min(range(8), key=lambda level, s=s: abs(1.3**level - s))
        assert levels[0, m, :, 0].tolist() == [expected, expected]
    assert levels[0, :, :, 2].eq(0).all()  # unknown disparity: fallback level 0


def test_cityscapes_samples_carry_the_stereo_baseline_of_their_camera_file(tmp_path):
    _write_cityscapes(tmp_path)
    sample = Cityscapes(tmp_path, "train")[0]
    assert sample["stereo_baseline"] == pytest.approx(0.209313)
    # Without disparity (or without the camera file) the sample has no baseline.
    assert "stereo_baseline" not in Cityscapes(tmp_path, "train", disparity=False)[0]
    camera = cityscapes_camera_path(tmp_path, "train", sample["name"])
    camera.unlink()
    sample = Cityscapes(tmp_path, "train")[0]
    assert "disparity" in sample and "stereo_baseline" not in sample


def test_cityscapes_without_camera_files_is_refused_for_depth_selection_by_key(tmp_path):
    from leanseg.inference.model_inputs import check_dataset_inputs
    from leanseg.models import create_model

    paths = _write_cityscapes(tmp_path)
    model = create_model("scale_invariant", "resnet18", num_classes=19, hidden_channels=8)
    check_dataset_inputs(model, Cityscapes(tmp_path, "train"), name="cityscapes")  # complete
    paths["camera"].unlink()
    with pytest.raises(DatasetError, match="'stereo_baseline'.*cityscapes.*camera/"):
        check_dataset_inputs(model, Cityscapes(tmp_path, "train"), name="cityscapes")
