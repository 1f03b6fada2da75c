"""Loaders of thesis ch. 5 (WildDash, ScanNet, BDD, Vistas) on tiny trees in their layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leanseg.config import DataConfig
from leanseg.data import (
    BDD100K,
    DATASETS,
    DatasetError,
    MapillaryVistas,
    ScanNet,
    WildDash,
    build_dataset,
    dataset_classes,
    dataset_palette,
)
from leanseg.data.classes import CITYSCAPES_CLASSES
from leanseg.data.scannet import SCANNET20_CLASSES

H, W = 4, 6


def _save(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)
    image.save(path)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _label(values: list[int], dtype: type = np.uint8) -> np.ndarray:
    return np.resize(np.array(values, dtype=dtype), (H, W))


def test_registered_under_their_names() -> None:
    assert DATASETS["wilddash"] is WildDash and DATASETS["scannet"] is ScanNet
    assert DATASETS["bdd100k"] is BDD100K and DATASETS["vistas"] is MapillaryVistas


# --------------------------------------------------------------------------------- WildDash


def _wilddash(root: Path) -> Path:
    folder = root / "wd_val_01"
    _save(folder / "cn0000_100000.png", _image())
    # label ids: road 7, car 26, unlabelled 0, ego vehicle 1, void 255
    _save(folder / "cn0000_100000_labelIds.png", _label([7, 26, 0, 1, 255, 7]))
    _save(folder / "cn0000_100000_instanceIds.png", _label([7, 26001, 0, 1, 26002, 7], np.uint16))
    _save(folder / "de0001_100000.png", _image(1))
    _save(folder / "de0001_100000_labelIds.png", _label([0]))  # a negative image: all void
    _save(root / "wd_bench_01" / "xx0002_100000.png", _image(2))
    return root


def test_wilddash_val_maps_label_ids_and_void(tmp_path: Path) -> None:
    root = _wilddash(tmp_path)
    for where in (root, root / "wd_val_01"):
        dataset = WildDash(where, "val")
        assert [f.name for f in dataset.files] == ["cn0000_100000", "de0001_100000"]
    sample = dataset[0]
    road, car = CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("car")
    assert sample["label"][0, :6].tolist() == [road, car, 255, 255, 255, road]
    assert sorted(np.unique(sample["instance"]).tolist()) == [0, 26001, 26002]
    assert (dataset[1]["label"] == 255).all()
    test = WildDash(root, "test")
    assert len(test) == 1 and (test[0]["label"] == 255).all()


def test_wilddash_wrong_layout_names_the_file(tmp_path: Path) -> None:
    root = _wilddash(tmp_path)
    (root / "wd_val_01" / "de0001_100000_labelIds.png").unlink()
    with pytest.raises(DatasetError, match="de0001_100000_labelIds.png"):
        WildDash(root, "val")
    with pytest.raises(DatasetError, match="wd_val_01"):
        WildDash(tmp_path / "wd_bench_01" / "..", "val")  # the bench folder has no labels
    with pytest.raises(DatasetError, match="no split 'train'"):
        WildDash(root, "train")


def test_wilddash_bad_label_value_names_the_file(tmp_path: Path) -> None:
    root = _wilddash(tmp_path)
    _save(root / "wd_val_01" / "de0001_100000_labelIds.png", _label([40]))
    with pytest.raises(DatasetError, match=r"de0001_100000_labelIds.png: label values \[40\]"):
        WildDash(root, "val")[1]


# --------------------------------------------------------------------------------- ScanNet


def _scannet(root: Path) -> Path:
    for scene, frames in (("scene0000_00", (0, 20)), ("scene0001_00", (0,))):
        for frame in frames:
            _save(root / scene / "color" / f"{frame}.jpg", _image(frame))
            # NYU40: wall 1, desk 14, otherprop 40 (not a benchmark class), unannotated 0,
            # otherfurniture 39, mirror 19 (not a benchmark class)
            _save(root / scene / "label" / f"{frame}.png", _label([1, 14, 40, 0, 39, 19]))
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scannetv2_val.txt").write_text("scene0001_00\n")
    return root


def test_scannet_frames_and_the_20_class_mapping(tmp_path: Path) -> None:
    root = _scannet(tmp_path)
    train = ScanNet(root, "train")
    assert [f.name for f in train.files] == ["scene0000_00_0", "scene0000_00_20"]
    assert len(ScanNet(root, "val")) == 1
    label = train[0]["label"][0].tolist()
    names = SCANNET20_CLASSES
    assert label == [0, names.index("desk"), 255, 255, names.index("otherfurniture"), 255]
    assert len(names) == 20 and names[-1] == "otherfurniture"


def test_scannet_wrong_layout_names_the_file(tmp_path: Path) -> None:
    root = _scannet(tmp_path)
    with pytest.raises(DatasetError, match="scannetv2_test.txt"):
        ScanNet(root, "test")
    (root / "scannetv2_val.txt").write_text("scene0001_00\nscene0404_00\n")
    with pytest.raises(DatasetError, match=r"scannetv2_val.txt: scene 'scene0404_00'"):
        ScanNet(root, "val")
    (root / "scene0000_00" / "label" / "20.png").unlink()
    with pytest.raises(DatasetError, match=r"20.jpg \(expected .*label/20.png\)"):
        ScanNet(root, "train")


# --------------------------------------------------------------------------------- BDD


def test_bdd_reads_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "bdd100k"
    for split in ("train", "val"):
        _save(root / "images" / "10k" / split / "7d2f7975-e0c1c5a7.jpg", _image())
        _save(
            root / "labels" / "sem_seg" / "masks" / split / "7d2f7975-e0c1c5a7.png",
            _label([0, 18, 255]),
        )
    _save(root / "images" / "10k" / "test" / "ac6d4f42-00000000.jpg", _image())
    dataset = BDD100K(tmp_path, "val")  # the parent of bdd100k/ works too
    assert dataset[0]["label"][0, :3].tolist() == [0, 18, 255]
    assert (BDD100K(root, "test")[0]["label"] == 255).all()
    _save(root / "labels" / "sem_seg" / "masks" / "train" / "7d2f7975-e0c1c5a7.png", _label([19]))
    with pytest.raises(DatasetError, match=r"7d2f7975-e0c1c5a7.png: label values \[19\]"):
        BDD100K(root, "train")[0]
    with pytest.raises(DatasetError, match="BDD split 'trian' not found"):
        BDD100K(root, "trian")


# --------------------------------------------------------------------------------- Vistas


def _vistas_label(name: str, readable: str, colour: list[int], evaluate: bool = True) -> dict:
    return {"name": name, "readable": readable, "color": colour, "evaluate": evaluate}


VISTAS_LABELS = [
    _vistas_label("construction--flat--road", "Road", [128, 64, 128]),
    _vistas_label("nature--sky", "Sky", [70, 130, 180]),
    _vistas_label("object--vehicle--car", "Car", [0, 0, 142]),
    _vistas_label("void--unlabeled", "Unlabeled", [0, 0, 0], evaluate=False),
]


def _vistas(root: Path) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "config_v1.2.json").write_text(json.dumps({"labels": VISTAS_LABELS, "version": "1.2"}))
    palette = [c for label in VISTAS_LABELS for c in label["color"]]
    for split in ("training", "validation"):
        _save(root / split / "images" / "_0a1b2c.jpg", _image())
        _save(root / split / "v1.2" / "labels" / "_0a1b2c.png", _label([0, 1, 2, 3]), palette)
    return root


def test_vistas_classes_from_the_config_json(tmp_path: Path) -> None:
    root = _vistas(tmp_path)
    dataset = MapillaryVistas(root, "val")
    assert dataset.classes == ("Road", "Sky", "Car") and dataset.palette[2] == (0, 0, 142)
    assert dataset[0]["label"][0, :4].tolist() == [0, 1, 2, 255]  # palette indices = label ids
    by_name = MapillaryVistas(root, "training", names="name")
    assert by_name.classes[0] == "construction--flat--road"
    cfg = DataConfig(dataset="vistas", root=str(root))
    assert dataset_classes(cfg) == ("Road", "Sky", "Car")
    assert dataset_palette(cfg)[1] == (70, 130, 180)
    assert len(build_dataset(cfg, "train", train=False)) == 1


def test_vistas_config_problems_name_the_file(tmp_path: Path) -> None:
    root = _vistas(tmp_path)
    config = root / "config_v1.2.json"
    with pytest.raises(DatasetError, match="config_v2.0.json"):
        MapillaryVistas(root, "train", version="v2.0")
    config.write_text("{'labels': __import__('os')}")  # not JSON; never evaluated
    with pytest.raises(DatasetError, match=r"config_v1.2.json: not a JSON file"):
        MapillaryVistas(root, "train")
    config.write_text(json.dumps({"labels": [{"readable": "Road", "color": [1, 2]}]}))
    with pytest.raises(DatasetError, match=r"config_v1.2.json: label 0 \(Road\) has no colour"):
        MapillaryVistas(root, "train")
    twice = [VISTAS_LABELS[0], {**VISTAS_LABELS[1], "readable": "road"}]
    config.write_text(json.dumps({"labels": twice}))
    with pytest.raises(DatasetError, match="labels 0 and 1 share the name 'road'"):
        MapillaryVistas(root, "train")
    config.write_text(json.dumps({"labels": VISTAS_LABELS}))
    (root / "validation" / "v1.2" / "labels" / "_0a1b2c.png").unlink()
    with pytest.raises(DatasetError, match=r"_0a1b2c.jpg \(expected .*_0a1b2c.png\)"):
        MapillaryVistas(root, "val")
    palette = [c for label in VISTAS_LABELS for c in label["color"]]
    palette += [0] * (768 - len(palette))  # Pillow drops indices beyond a short palette
    _save(root / "training" / "v1.2" / "labels" / "_0a1b2c.png", _label([4]), palette)
    with pytest.raises(DatasetError, match=r"_0a1b2c.png: label values \[4\]"):
        MapillaryVistas(root, "train")[0]
