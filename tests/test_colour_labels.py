"""Colour-mask labels: the config table, exact lookups, the folder dataset, conversion, checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from leanseg.config import ConfigError, DataConfig, config_from_dict
from leanseg.data import DatasetError, build_dataset, dataset_palette
from leanseg.data.check import check_dataset
from leanseg.data.colour_labels import (
    CONVERT_MANIFEST,
    ColourTable,
    colour_table,
    convert_colour_labels,
    pack_rgb,
    unpack_rgb,
)
from leanseg.data.datasets import read_index_map

CLASSES = ("sky", "road", "car")
COLOURS = {
    "sky": [70, 130, 180],
    "road": [[128, 64, 128], [128, 64, 129]],  # two shades of one class
    "car": [0, 0, 142],
    "ignore": [0, 0, 0],
}
H, W = 5, 7


def _table(colours: dict | None = None) -> ColourTable:
    return ColourTable.from_config(COLOURS if colours is None else colours, CLASSES)


def _save_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)
    return path


def _colour_tree(root: Path, labels: dict[str, dict[str, np.ndarray]]) -> Path:
    """``root/images/<split>/<name>.png`` and colour labels ``root/labels/<split>/<name>.png``."""
    table = _table()
    for split, by_name in labels.items():
        for name, label in by_name.items():
            _save_rgb(root / "images" / split / f"{name}.png", np.full((*label.shape, 3), 90))
            _save_rgb(root / "labels" / split / f"{name}.png", table.to_colours(label))
    return root


def _cfg(root: Path, **kwargs) -> DataConfig:
    raw = {"dataset": "folder", "root": str(root), "classes": list(CLASSES)}
    raw["label_colors"] = COLOURS
    raw.update(kwargs)
    return config_from_dict({"data": raw}).data


# --------------------------------------------------------------------------------------------
# The table and the exact lookup
# --------------------------------------------------------------------------------------------


def test_pack_and_unpack() -> None:
    rgb = np.array([[0, 0, 0], [255, 255, 255], [1, 2, 3]], np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.int32
    assert packed.tolist() == [0, 0xFFFFFF, 0x010203]
    assert [unpack_rgb(k) for k in packed] == [(0, 0, 0), (255, 255, 255), (1, 2, 3)]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    num_classes=st.integers(1, 12),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_round_trip_index_colour_index(data, num_classes: int, shape: tuple[int, int]) -> None:
    """Any table of distinct colours: ids -> colours -> ids is the identity, 255 included."""
    keys = data.draw(
        st.lists(
            st.integers(0, 0xFFFFFF),
            min_size=num_classes + 1,
            max_size=num_classes + 1,
            unique=True,
        )
    )
    classes = [f"c{i}" for i in range(num_classes)]
    colours = {name: list(unpack_rgb(k)) for name, k in zip(classes, keys, strict=False)}
    colours["ignore"] = list(unpack_rgb(keys[-1]))
    table = ColourTable.from_config(colours, classes)
    values = st.sampled_from([*range(num_classes), 255])
    label = np.array(
        data.draw(st.lists(values, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])),
        np.uint8,
    ).reshape(shape)
    rgb = table.to_colours(label)
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(table.to_index(rgb), label)


def test_several_colours_map_to_one_class() -> None:
    rgb = np.array([[[128, 64, 128], [128, 64, 129], [0, 0, 142], [0, 0, 0]]], np.uint8)
    assert _table().to_index(rgb).tolist() == [[1, 1, 2, 255]]


def test_unknown_colour_names_file_colour_and_count() -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, :2] = (1, 2, 3)  # 2 pixels of an unknown colour
    rgb[1, 0] = (255, 255, 255)  # 1 pixel of a second one, above every key of the table
    with pytest.raises(DatasetError) as err:
        _table().to_index(rgb, source="labels/a.png")
    message = str(err.value)
    assert message.startswith("labels/a.png: 2 colour(s) not in data.label_colors")
    assert "[1, 2, 3] (2 pixels)" in message and "[255, 255, 255] (1 pixel)" in message
    assert message.index("[1, 2, 3]") < message.index("[255, 255, 255]")  # most pixels first
    assert "data.unknown_colors: ignore" in message


def test_unknown_colour_ignored_on_request() -> None:
    rgb = np.array([[[1, 2, 3], [70, 130, 180]]], np.uint8)
    assert _table().to_index(rgb, unknown="ignore").tolist() == [[255, 0]]


def test_to_colours_needs_a_colour_for_every_value() -> None:
    table = _table({"sky": [1, 1, 1]})
    with pytest.raises(DatasetError, match=r"label values \[1, 255\] have no colour"):
        table.to_colours(np.array([[0, 1, 255]], np.uint8))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"road": [1, 2]}, r"data\.label_colors\.road: \[1, 2\] is not a colour"),
        ({"road": [1, 2, 256]}, r"data\.label_colors\.road: .* is not a colour"),
        ({"road": [[1, 2, 3], "red"]}, r"data\.label_colors\.road: 'red' is not a colour"),
        ({"road": [True, 2, 3]}, r"data\.label_colors\.road: .* is not a colour"),
        ({"road": []}, r"data\.label_colors\.road: \[\] is not a colour"),
        (
            {"sky": [1, 2, 3], "road": [1, 2, 3]},
            r"road: colour .* given to data\.label_colors\.sky",
        ),
        # (every config key must be a name: refused before the colours are read)
        ({7: [1, 2, 3]}, r"data\.label_colors: key 7 is a int; keys are names"),
    ],
)
def test_malformed_entry_is_a_config_error_naming_the_key(entry: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"data": {"label_colors": entry}})


def test_unknown_colors_option_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"data\.unknown_colors: 'skip' is not one of"):
        config_from_dict({"data": {"unknown_colors": "skip"}})


def test_entry_that_is_no_class_names_the_key(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, label_colors={"bus": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"data\.label_colors\.bus: not a class .*sky, road"):
        colour_table(cfg)


def test_label_colors_only_for_the_folder_dataset(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, dataset="camvid")
    with pytest.raises(ConfigError, match="data.label_colors: .* folder dataset only"):
        build_dataset(cfg, "train", train=False)


# --------------------------------------------------------------------------------------------
# The folder dataset
# --------------------------------------------------------------------------------------------


def test_folder_reads_colour_labels(tmp_path: Path) -> None:
    label = np.array([[0, 1, 2, 255]] * 3, np.uint8)
    root = _colour_tree(tmp_path, {"train": {"a": label}})
    dataset = build_dataset(_cfg(root), "train", train=False)
    np.testing.assert_array_equal(dataset.load_raw(0)["label"], label)
    assert dataset.palette[:3] == ((70, 130, 180), (128, 64, 128), (0, 0, 142))
    assert dataset_palette(_cfg(root)) == dataset.palette


def test_folder_unknown_colour_error_and_ignore(tmp_path: Path) -> None:
    root = _colour_tree(tmp_path, {"train": {"a": np.zeros((H, W), np.uint8)}})
    path = root / "labels" / "train" / "a.png"
    rgb = np.asarray(Image.open(path)).copy()
    rgb[0, 0] = (9, 9, 9)
    _save_rgb(path, rgb)
    with pytest.raises(DatasetError, match=rf"{path}: 1 colour\(s\) .* \[9, 9, 9\] \(1 pixel\)"):
        build_dataset(_cfg(root), "train", train=False).load_raw(0)
    label = build_dataset(_cfg(root, unknown_colors="ignore"), "train", train=False).load_raw(0)
    assert label["label"][0, 0] == 255 and (label["label"].ravel()[1:] == 0).all()


# --------------------------------------------------------------------------------------------
# Converting once
# --------------------------------------------------------------------------------------------


def test_convert_writes_index_pngs(tmp_path: Path) -> None:
    label = np.array([[0, 1, 2, 255]] * 2, np.uint8)
    root = _colour_tree(tmp_path / "data", {"train": {"a": label}, "val": {"b": label[::-1]}})
    out = tmp_path / "index"
    result = convert_colour_labels(root / "labels", out, _table())
    assert sorted(p.relative_to(out).as_posix() for p in result.written) == [
        "train/a.png",
        "val/b.png",
    ]
    np.testing.assert_array_equal(read_index_map(out / "train" / "a.png"), label)
    assert Image.open(out / "train" / "a.png").mode == "P"  # viewers still see the colours
    record = json.loads((out / CONVERT_MANIFEST).read_text())
    assert record["files"] == ["train/a.png", "val/b.png"]
    # A rerun replaces its own files.
    assert len(convert_colour_labels(root / "labels", out, _table()).written) == 2


def test_convert_counts_ignored_unknown_colours(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _save_rgb(src / "a.png", np.array([[[9, 9, 9], [0, 0, 142]]]))
    with pytest.raises(DatasetError, match=r"a\.png: 1 colour\(s\) .*\[9, 9, 9\]"):
        convert_colour_labels(src, tmp_path / "out", _table())
    result = convert_colour_labels(src, tmp_path / "out", _table(), unknown="ignore")
    assert result.ignored_pixels == 1
    assert read_index_map(tmp_path / "out" / "a.png").tolist() == [[255, 2]]


def test_convert_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _save_rgb(src / "a.png", np.zeros((2, 2, 3)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"someone else's file")
    with pytest.raises(ConfigError, match="a.png exists and was not written by leanseg data"):
        convert_colour_labels(src, out, _table())
    assert (out / "a.png").read_bytes() == b"someone else's file"
    assert not (out / CONVERT_MANIFEST).exists()  # nothing written at all


def test_convert_refuses_a_foreign_manifest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _save_rgb(src / "a.png", np.zeros((2, 2, 3)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / CONVERT_MANIFEST).write_text('{"files": ["a.png"]}')
    with pytest.raises(ConfigError, match="is not a leanseg data convert record"):
        convert_colour_labels(src, tmp_path / "out", _table())


@pytest.mark.parametrize("where", [".", "sub", ".."])
def test_convert_refuses_to_write_into_or_above_the_source(tmp_path: Path, where: str) -> None:
    src = tmp_path / "labels"
    _save_rgb(src / "a.png", np.zeros((2, 2, 3)))
    with pytest.raises(ConfigError, match="overlaps the source folder"):
        convert_colour_labels(src, src / where, _table())
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_convert_refuses_a_link_into_the_source(tmp_path: Path) -> None:
    src = tmp_path / "labels"
    _save_rgb(src / "train" / "a.png", np.zeros((2, 2, 3)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "train").symlink_to(src / "train")
    with pytest.raises(ConfigError, match="lies in the source folder"):
        convert_colour_labels(src, out, _table())


# --------------------------------------------------------------------------------------------
# data check warnings
# --------------------------------------------------------------------------------------------


def test_check_warns_about_missing_classes_and_all_ignore_labels(tmp_path: Path) -> None:
    train = {"a": np.array([[0, 1], [2, 2]], np.uint8), "b": np.array([[1, 0], [0, 0]], np.uint8)}
    val = {"c": np.array([[0, 0], [1, 1]], np.uint8), "d": np.full((2, 2), 255, np.uint8)}
    root = _colour_tree(tmp_path, {"train": train, "val": val})
    report = check_dataset(_cfg(root), ["train", "val"])
    assert report.ok, report.problems  # warnings do not fail the check
    assert report.warnings == [
        "split 'val': 1 class(es) never occur, so their IoU is undefined (NaN) on this split: "
        "2 car",
        f"split 'val': 1 label image(s) are all ignore (255): {root / 'images' / 'val' / 'd.png'}",
    ]
    assert "2 warning(s):" in report.format()


def test_check_reports_unknown_colours_as_problems(tmp_path: Path) -> None:
    root = _colour_tree(tmp_path, {"train": {"a": np.zeros((2, 2), np.uint8)}})
    _save_rgb(root / "labels" / "train" / "a.png", np.full((2, 2, 3), 9))
    report = check_dataset(_cfg(root), ["train"])
    assert not report.ok
    assert "[9, 9, 9] (4 pixels)" in report.problems[0]


def test_cli_data_convert_writes_index_pngs_and_refuses_a_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leanseg.cli import main

    label = np.array([[0, 1, 2, 255]] * 2, np.uint8)
    root = _colour_tree(tmp_path / "data", {"train": {"a": label}})
    config = tmp_path / "colours.yaml"
    raw = {"dataset": "folder", "root": str(root), "classes": list(CLASSES)}
    config.write_text(json.dumps({"data": {**raw, "label_colors": COLOURS}}))
    out = tmp_path / "index"
    assert main(["data", "convert", str(config), str(root / "labels"), str(out)]) == 0
    np.testing.assert_array_equal(read_index_map(out / "train" / "a.png"), label)

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "a.png").write_bytes(b"not leanseg's")
    capsys.readouterr()
    assert main(["data", "convert", str(config), str(root / "labels"), str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"leanseg: error: {foreign / 'train' / 'a.png'} exists and was not written by leanseg"
    ), err
    assert (foreign / "train" / "a.png").read_bytes() == b"not leanseg's"
