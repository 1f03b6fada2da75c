"""COCO-Stuff 10k dataset: 171 classes, id mapping, converted-PNG and official layouts."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from leanseg.data import DATASETS
from leanseg.data.base import DatasetError
from leanseg.data.cocostuff import COCOStuff10k, coco_id_lut


def test_171_classes_and_id_mapping():
    assert len(COCOStuff10k.classes) == 171 and DATASETS["cocostuff10k"] is COCOStuff10k
    lut = coco_id_lut()
    assert lut[0] == 255 and lut[1] == 0 and lut[13] == 11 and lut[92] == 80 and lut[182] == 170
    assert lut[12] == 255 and sorted(set(lut[1:183]) - {255}) == list(range(171))


def test_converted_png_layout(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "annotations" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "images/train/a.jpg")
    label = np.full((6, 8), 170, np.uint8)
    label[0] = 255
    Image.fromarray(label).save(tmp_path / "annotations/train/a.png")
    sample = COCOStuff10k(tmp_path, "train")[0]
    assert sample["label"].shape == (6, 8) and set(np.unique(sample["label"])) == {170, 255}


def test_official_layout_needs_scipy_or_reads_mat(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "imageLists").mkdir()
    (tmp_path / "imageLists" / "train.txt").write_text("b\n")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images/b.jpg")
    (tmp_path / "annotations" / "b.mat").write_bytes(b"")
    dataset = COCOStuff10k(tmp_path, "train")
    if importlib.util.find_spec("scipy") is None:
        with pytest.raises(DatasetError, match="scipy"):
            dataset[0]
    else:  # pragma: no cover - environment dependent
        from scipy.io import savemat

        savemat(tmp_path / "annotations" / "b.mat", {"S": np.full((4, 4), 92, np.uint16)})
        assert (dataset[0]["label"] == 80).all()
