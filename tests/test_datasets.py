"""Datasets: real CamVid / Cityscapes data, tiny trees of every layout, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.config import ConfigError, DataConfig
from leanseg.data import (
    ADE20K,
    DATASET_NAMES,
    KITTI,
    VOC,
    CamVid,
    Cityscapes,
    DatasetError,
    Folder,
    build_dataset,
    dataset_classes,
    dataset_palette,
)
from leanseg.data.check import check_dataset
from leanseg.data.classes import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    VOC_PALETTE,
    bit_palette,
)

H, W = 6, 8  # size of the images in the tiny trees


# --------------------------------------------------------------------------------------------
# Helpers writing tiny trees
# --------------------------------------------------------------------------------------------


def _save(path: Path, array: np.ndarray, palette: tuple | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.uint16:
        image = Image.fromarray(array)  # 16-bit grey, mode I;16
    else:
        image = Image.fromarray(array.astype(np.uint8))
    if palette is not None:  # an 8-bit grey image with a palette becomes a palette PNG
        image.putpalette([c for colour in palette for c in colour])
    image.save(path)
    return path


def _image(seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _label(values: list[int], size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A label map cycling through ``values`` (so every value occurs)."""
    return np.resize(np.array(values, dtype=np.uint8), size[0] * size[1]).reshape(size)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _camvid_tree(root: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    for i, name in enumerate(names):
        _save(root / "train" / f"{name}.png", _image(i))
        _save(root / "trainannot" / f"{name}.png", _label([0, 5, 10, 11]))
    return root


def _folder_tree(root: Path, split: str | None = "train", names=("x", "y")) -> Path:
    sub = (split,) if split else ()
    for i, name in enumerate(names):
        _save(root.joinpath("images", *sub, f"{name}.jpg"), _image(i))
        _save(root.joinpath("labels", *sub, f"{name}.png"), _label([0, 1, 2, 255]))
    return root


def _cfg(dataset: str, root: Path | str | None, **kwargs) -> DataConfig:
    return DataConfig(dataset=dataset, root=None if root is None else str(root), **kwargs)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


def test_camvid_real(shared_data: Path) -> None:
    root = shared_data / "camvid"
    train = CamVid(root, "train")
    assert len(train) == 367
    assert len(CamVid(root, "val")) == 101
    sample = train.load_raw(0)
    assert sample["image"].shape == (360, 480, 3) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == (360, 480) and sample["label"].dtype == np.uint8
    raw = np.asarray(Image.open(train.files[0].label))
    np.testing.assert_array_equal(sample["label"] == 255, raw == 11)  # void -> ignore
    np.testing.assert_array_equal(sample["label"][raw < 11], raw[raw < 11])

    # Every train label is valid, and the class shares match the data README.
    report = check_dataset(_cfg("camvid", root), ["train"])
    assert report.ok, report.format()
    assert report.num_samples == 367
    shares = 100 * np.array(report.class_pixels) / sum(report.class_pixels)
    readme = [17.5, 24.2, 1.0, 33.0, 4.7, 10.1, 1.2, 1.2, 6.1, 0.7, 0.3]
    np.testing.assert_allclose(shares, readme, atol=0.1)
    total = sum(report.class_pixels) + report.ignored_pixels
    assert report.ignored_pixels / total == pytest.approx(0.039, abs=0.001)


def test_cityscapes_real(shared_data: Path) -> None:
    root = shared_data / "cityscapes_sample"
    dataset = Cityscapes(root, "val")
    assert len(dataset) == 1
    sample = dataset.load_raw(0)
    assert sample["name"] == "frankfurt_000000_000294"
    assert sample["image"].shape == (128, 256, 3)
    assert "disparity" not in sample  # none in the sample
    gt = root / "gtFine" / "val" / "frankfurt"
    train_ids = np.asarray(Image.open(gt / "frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    assert (sample["label"] == train_ids).mean() >= 0.99
    instance = sample["instance"]
    assert instance.dtype == np.int32
    assert set(np.unique(instance).tolist()) == {0, 24000, 24001, 24002, 24003, 26000, 26001, 26002}
    # Pixels of person / car instances carry the person / car train ids.
    assert set(np.unique(sample["label"][instance // 1000 == 24]).tolist()) <= {11}
    assert set(np.unique(sample["label"][instance // 1000 == 26]).tolist()) <= {13}


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


def test_camvid_tree(tmp_path: Path) -> None:
    dataset = CamVid(_camvid_tree(tmp_path), "train")
    assert [f.name for f in dataset.files] == ["a", "b"]
    label = dataset.load_raw(1)["label"]
    assert set(np.unique(label).tolist()) == {0, 5, 10, 255}


def test_cityscapes_tree_with_disparity(tmp_path: Path) -> None:
    base = "aachen_000000_000019"
    _save(tmp_path / "leftImg8bit/train/aachen" / f"{base}_leftImg8bit.png", _image())
    gt = tmp_path / "gtFine/train/aachen"
    _save(gt / f"{base}_gtFine_labelIds.png", _label([0, 7, 26, 33, 9]))
    instance = _label([1, 2, 3]).astype(np.uint16)
    instance[0, :3] = [26000, 26001, 24005]
    _save(gt / f"{base}_gtFine_instanceIds.png", instance)
    disparity = np.zeros((H, W), dtype=np.uint16)
    disparity[0, :3] = [1, 257, 2561]
    _save(tmp_path / "disparity/train/aachen" / f"{base}_disparity.png", disparity)

    sample = Cityscapes(tmp_path, "train").load_raw(0)
    assert set(np.unique(sample["label"]).tolist()) == {0, 13, 18, 255}
    assert sample["instance"][0, :3].tolist() == [26000, 26001, 24005]
    assert (sample["instance"][1:] == 0).all()  # ids < 1000 are not instances
    assert sample["disparity"].dtype == np.float32
    np.testing.assert_allclose(sample["disparity"][0, :4], [0.0, 1.0, 10.0, 0.0])

    no_extras = Cityscapes(tmp_path, "train", instances=False, disparity=False).load_raw(0)
    assert "instance" not in no_extras and "disparity" not in no_extras


def test_cityscapes_lut() -> None:
    lut = CITYSCAPES_ID_TO_TRAINID
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert lut[[7, 8, 11, 23, 24, 26, 33]].tolist() == [0, 1, 2, 10, 11, 13, 18]
    assert lut[[0, 6, 9, 29, 34, 255]].tolist() == [255] * 6
    assert len(CITYSCAPES_CLASSES) == 19


def _kitti_tree(root: Path) -> Path:
    for i, name in enumerate(("000000_10", "000001_10", "000002_10")):
        _save(root / "training/image_2" / f"{name}.png", _image(i))
        _save(root / "training/semantic" / f"{name}.png", _label([7, 26, 0]))
    return root


def test_kitti_tree(tmp_path: Path) -> None:
    root = _kitti_tree(tmp_path)
    train = KITTI(root, "train")
    assert len(train) == 3
    assert set(np.unique(train.load_raw(0)["label"]).tolist()) == {0, 13, 255}
    (root / "splits").mkdir()
    (root / "splits/val.txt").write_text("000001_10\n000002_10.png\n")
    val = KITTI(root, "val", split_file="splits/{split}.txt")
    assert [f.name for f in val.files] == ["000001_10", "000002_10"]
    with pytest.raises(DatasetError, match="split_file"):
        KITTI(root, "val")


def test_ade20k_tree(tmp_path: Path) -> None:
    ade = tmp_path / "ADEChallengeData2016"
    _save(ade / "images/training/ADE_train_00000001.jpg", _image())
    _save(ade / "annotations/training/ADE_train_00000001.png", _label([0, 1, 150]))
    _save(ade / "images/validation/ADE_val_00000001.jpg", _image())
    _save(ade / "annotations/validation/ADE_val_00000001.png", _label([3]))
    for root in (tmp_path, ade):  # the folder itself or its parent
        train = ADE20K(root, "train")
        assert set(np.unique(train.load_raw(0)["label"]).tolist()) == {0, 149, 255}
    assert ADE20K(tmp_path, "val").load_raw(0)["label"].max() == 2
    assert len(ADE20K_CLASSES) == 150
    with pytest.raises(DatasetError, match="no split 'test'"):
        ADE20K(tmp_path, "test")


def test_voc_tree(tmp_path: Path) -> None:
    voc = tmp_path / "VOCdevkit/VOC2012"
    names = ("2007_000032", "2007_000033", "2008_000001")
    for i, name in enumerate(names):
        _save(voc / "JPEGImages" / f"{name}.jpg", _image(i))
        _save(voc / "SegmentationClass" / f"{name}.png", _label([0, 15, 255]), VOC_PALETTE)
        _save(voc / "SegmentationClassAug" / f"{name}.png", _label([0, 20]))
    lists = voc / "ImageSets/Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    (lists / "val.txt").write_text("2007_000033\n")
    # DeepLab-style pair list.
    (lists / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in names)
    )
    assert Image.open(voc / "SegmentationClass/2007_000032.png").mode == "P"
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        train = VOC(root, "train")
        assert [f.name for f in train.files] == ["2007_000032"]
        assert set(np.unique(train.load_raw(0)["label"]).tolist()) == {0, 15, 255}
    aug = VOC(tmp_path, "train", aug=True)
    assert len(aug) == 3
    assert set(np.unique(aug.load_raw(2)["label"]).tolist()) == {0, 20}
    val = VOC(tmp_path, "val", aug=True)  # aug changes only the train split
    assert [f.label.parent.name for f in val.files] == ["SegmentationClass"]
    with pytest.raises(DatasetError, match="trainval.txt"):
        VOC(tmp_path, "trainval")


def test_folder_tree(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path, "train")
    _folder_tree(tmp_path, "val", names=("z",))
    instance = np.zeros((H, W), dtype=np.uint16)
    instance[2:4, 2:4] = 1001
    _save(root / "instances/train/x.png", instance)
    _save(root / "disparity/train/x.png", np.full((H, W), 513, dtype=np.uint16))
    dataset = Folder(root, "train", classes=["a", "b", "c"])
    assert len(dataset) == 2 and len(Folder(root, "val", classes=["a", "b", "c"])) == 1
    sample = dataset.load_raw(0)
    assert sample["name"] == "x"
    assert set(np.unique(sample["label"]).tolist()) == {0, 1, 2, 255}
    assert sample["instance"].dtype == np.int32 and sample["instance"].max() == 1001
    np.testing.assert_allclose(sample["disparity"], 2.0)
    assert "instance" not in dataset.load_raw(1)
    assert dataset.palette == bit_palette(3)
    with pytest.raises(DatasetError, match="splits found: train, val"):
        Folder(root, "test", classes=["a", "b", "c"])
    with pytest.raises(DatasetError, match="class names"):
        Folder(root, "train")


def test_folder_flat_layout(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path, split=None)
    for split in ("train", "val"):
        assert len(Folder(root, split, classes=["a", "b", "c"])) == 2


# --------------------------------------------------------------------------------------------
# Bad inputs: every message names the file or key
# --------------------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for cls in (CamVid, Cityscapes, KITTI, ADE20K, VOC):
        with pytest.raises(DatasetError, match="nowhere"):
            cls(missing, "train")


def test_truncated_image(tmp_path: Path) -> None:
    root = _camvid_tree(tmp_path)
    _truncate(root / "train/b.png")
    dataset = CamVid(root, "train")
    dataset.load_raw(0)
    with pytest.raises(DatasetError, match=r"train/b\.png"):
        dataset.load_raw(1)


def test_label_size_mismatch(tmp_path: Path) -> None:
    root = _camvid_tree(tmp_path)
    _save(root / "trainannot/a.png", _label([0], size=(H + 1, W)))
    with pytest.raises(DatasetError) as info:
        CamVid(root, "train").load_raw(0)
    message = str(info.value)
    assert "trainannot/a.png" in message and "train/a.png" in message
    assert f"{W}x{H + 1}" in message and f"{W}x{H}" in message


def test_label_value_out_of_range(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path)
    _save(root / "labels/train/y.png", _label([0, 7]))
    dataset = Folder(root, "train", classes=["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"labels/train/y\.png.*\[7\]"):
        dataset.load_raw(1)


def test_missing_label_names_image(tmp_path: Path) -> None:
    root = _camvid_tree(tmp_path)
    (root / "trainannot/b.png").unlink()
    with pytest.raises(DatasetError, match=r"train/b\.png"):
        CamVid(root, "train")


def test_rgb_label_rejected(tmp_path: Path) -> None:
    root = _camvid_tree(tmp_path)
    _save(root / "trainannot/a.png", _image())
    with pytest.raises(DatasetError, match=r"trainannot/a\.png.*mode RGB"):
        CamVid(root, "train").load_raw(0)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ConfigError, match="data.dataset") as info:
        build_dataset(_cfg("camvd", "x"), "train", train=False)
    assert all(name in str(info.value) for name in DATASET_NAMES)


def test_unknown_option(tmp_path: Path) -> None:
    cfg = _cfg("voc", tmp_path, options={"augment": True})
    with pytest.raises(ConfigError, match=r"data\.options\.augment.*valid options: aug"):
        build_dataset(cfg, "train", train=False)
    cfg = _cfg("cityscapes", tmp_path, options={"root": "x"})
    with pytest.raises(ConfigError, match=r"data\.options\.root.*data\.root"):
        build_dataset(cfg, "train", train=False)


def test_missing_root_in_config() -> None:
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(_cfg("camvid", None), "train", train=False)
    with pytest.raises(ConfigError, match="data.classes"):
        build_dataset(_cfg("folder", "somewhere"), "train", train=False)


# --------------------------------------------------------------------------------------------
# Config -> dataset
# --------------------------------------------------------------------------------------------


def test_build_dataset_transforms(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path)
    cfg = _cfg("folder", root, classes=["a", "b", "c"], crop_size=(4, 5))
    train = build_dataset(cfg, "train", train=True)
    sample = train[0]
    assert sample["image"].shape == (3, 4, 5) and sample["label"].dtype == torch.int64
    full = build_dataset(cfg, "train", train=False)[0]
    assert full["image"].shape == (3, H, W) and full["name"] == "x"


def test_classes_and_palette_without_disk() -> None:
    assert dataset_classes(_cfg("camvid", "/does/not/exist")) == CAMVID_CLASSES
    assert dataset_palette(_cfg("voc", None)) == VOC_PALETTE
    assert len(dataset_palette(_cfg("ade20k", None))) == 150
    assert dataset_classes(_cfg("kitti", None)) == CITYSCAPES_CLASSES
    folder = _cfg("folder", None, classes=["sky", "road"])
    assert dataset_classes(folder) == ("sky", "road")
    assert dataset_palette(folder) == bit_palette(2)
    custom = _cfg("folder", None, classes=["sky"], options={"palette": [[1, 2, 3]]})
    assert dataset_palette(custom) == ((1, 2, 3),)
    with pytest.raises(ConfigError, match="data.classes"):
        dataset_classes(_cfg("folder", None))


def test_synthetic_through_config() -> None:
    synthetic = pytest.importorskip("leanseg.data.synthetic")
    if not hasattr(synthetic, "SyntheticStreetScenes"):  # the module is still being written
        pytest.skip("leanseg.data.synthetic has no SyntheticStreetScenes yet")
    cfg = _cfg("synthetic", None, options={"num_samples": 2, "size": (32, 64)})
    assert len(dataset_classes(cfg)) == len(dataset_palette(cfg)) == 11
    report = check_dataset(cfg, ["train"])
    assert report.ok, report.format()
    assert report.num_samples == 2


# --------------------------------------------------------------------------------------------
# check_dataset
# --------------------------------------------------------------------------------------------


def test_check_dataset_collects_problems(tmp_path: Path) -> None:
    root = _camvid_tree(tmp_path, names=("good", "trunc", "size", "value"))
    _truncate(root / "train/trunc.png")
    _save(root / "trainannot/size.png", _label([0], size=(H, W + 2)))
    _save(root / "trainannot/value.png", _label([0, 42]))
    calls = []
    report = check_dataset(_cfg("camvid", root), ["train"], lambda i, n: calls.append((i, n)))
    assert not report.ok
    assert report.num_samples == 4
    assert len(report.problems) == 3
    joined = "\n".join(report.problems)
    for name in ("train/trunc.png", "trainannot/size.png", "trainannot/value.png"):
        assert name in joined
    assert "42" in joined
    assert calls[-1] == (4, 4)
    assert sum(report.class_pixels) > 0  # the good sample was counted
    assert "3 problem(s)" in report.format()


def test_check_dataset_missing_root(tmp_path: Path) -> None:
    report = check_dataset(_cfg("camvid", tmp_path / "nowhere"), ["train", "val"])
    assert not report.ok
    assert len(report.problems) == 2 and "nowhere" in report.problems[0]
    assert report.num_samples == 0
    assert "problem" in report.format()
