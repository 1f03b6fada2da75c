"""Configs and runs work from any folder (issue 28, item 1).

Relative input paths in a YAML file are relative to that file's folder, those given with
``--set`` to the current folder; a run's ``config.yaml`` states them absolute and relative to
the run folder, so the run still finds its data when moved. The end-to-end test runs ``data
check``, ``train``, ``eval``, ``report`` and ``predict`` from folders that are neither the
checkout nor the run, on a tiny folder dataset made here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.config import load_config, save_config, shipped_config_dir
from leanseg.config.paths import RELATIVE_PATHS_KEY
from leanseg.files.run_dir import MARKER

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["ground", "box", "disc"]


def write_yaml(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_shapes(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 56)) -> Path:
    """A tiny ``folder`` dataset: a box and a disc on a noisy ground, label ids 0..2."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for split, count in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            label = np.zeros((h, w), np.uint8)
            y, x = rng.integers(4, h // 2), rng.integers(4, w // 2)
            label[y : y + h // 3, x : x + w // 3] = 1
            cy, cx = rng.integers(h // 3, h - 6), rng.integers(w // 3, w - 6)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 2
            colours = np.array([[90, 90, 90], [220, 40, 40], [40, 40, 220]], np.uint8)
            image = colours[label] + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
    return root


def tiny_config(root: str, work_dir: str = "runs/tiny") -> dict:
    return {
        "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
        "data": {
            "dataset": "folder",
            "root": root,
            "classes": CLASSES,
            "crop_size": [40, 56],
            "scale_range": [0.9, 1.1],
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {
            "optimizer": "adam",
            "lr": 0.002,
            "schedule": "constant",
            "warmup_iters": 0,
            "max_iters": 2,
            "eval_interval": 2,
            "checkpoint_interval": 2,
            "log_interval": 1,
            "device": "cpu",
            "num_threads": 1,
        },
        "eval": {"max_images": 2, "boundary_width": 2},
        "work_dir": work_dir,
    }


@pytest.fixture
def inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``inside(folder)``: make ``folder`` (created if needed) the current folder."""

    def change(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(folder)
        return folder

    return change


# ---------------------------------------------------------------------- the rule, unit by unit


def test_relative_root_is_relative_to_the_config_file(tmp_path, inside):
    config = write_yaml(tmp_path / "project" / "configs" / "a.yaml", tiny_config("../data/x"))
    for folder in (tmp_path, tmp_path / "elsewhere", config.parent):
        inside(folder)
        cfg = load_config(config)
        assert cfg.data.root == str((tmp_path / "project" / "data" / "x").resolve())
        assert cfg.work_dir == "runs/tiny"  # an output: relative to where the command runs


def test_set_root_is_relative_to_the_current_folder(tmp_path, inside):
    config = write_yaml(tmp_path / "configs" / "a.yaml", tiny_config("../data/x"))
    inside(tmp_path / "cwd")
    cfg = load_config(config, ["data.root=mine/x"])
    assert cfg.data.root == str((tmp_path / "cwd" / "mine" / "x").resolve())
    cfg = load_config(config, {"data": {"root": "../y"}})
    assert cfg.data.root == str((tmp_path / "y").resolve())
    assert load_config(config, ["data.root=/abs/z"]).data.root == str(Path("/abs/z").resolve())


def test_base_paths_are_relative_to_the_base_file(tmp_path, inside):
    base = write_yaml(tmp_path / "shared" / "base.yaml", tiny_config("data/x"))
    child = write_yaml(
        tmp_path / "mine" / "deep" / "child.yaml", {"base": "../../shared/base.yaml"}
    )
    inside(tmp_path / "elsewhere")
    assert load_config(child).data.root == str((base.parent / "data" / "x").resolve())
    write_yaml(child, {"base": "../../shared/base.yaml", "data": {"root": "own"}})
    assert load_config(child).data.root == str((child.parent / "own").resolve())


def test_dataset_entries_and_weight_files_follow_the_rule(tmp_path, inside):
    raw = tiny_config("unused")
    del raw["data"]["root"], raw["data"]["classes"]
    raw["data"]["dataset"] = "camvid"
    raw["data"]["datasets"] = [
        {"dataset": "camvid", "root": "../data/camvid"},
        {"dataset": "camvid", "name": "other", "root": "/abs/camvid"},
    ]
    raw["model"]["backbone"]["pretrained"] = "weights/rn18.pth"
    config = write_yaml(tmp_path / "configs" / "multi.yaml", raw)
    inside(tmp_path / "elsewhere")
    cfg = load_config(config)
    assert [e.root for e in cfg.data.datasets] == [
        str((tmp_path / "data" / "camvid").resolve()),
        str(Path("/abs/camvid").resolve()),
    ]
    assert cfg.model.backbone["pretrained"] == str(
        (config.parent / "weights" / "rn18.pth").resolve()
    )
    # A named weight source is not a path.
    raw["model"]["backbone"] = {"name": "efficientnet_lite0", "pretrained": "efficientnet-lite0"}
    write_yaml(config, raw)
    assert load_config(config).model.backbone["pretrained"] == "efficientnet-lite0"


def test_shipped_configs_name_the_data_next_to_the_checkout(tmp_path, inside):
    """Their roots mean what they meant when read from the checkout's root folder."""
    inside(tmp_path)
    expected = {(REPO / "data").resolve(), (REPO.parent / "shared" / "data").resolve()}
    shipped = shipped_config_dir()
    assert shipped is not None
    paths = sorted(shipped.rglob("*.yaml"))
    roots = []
    for path in paths:
        data = load_config(path).data
        roots += [data.root] if data.datasets is None else [e.root for e in data.datasets]
    roots = [Path(root) for root in roots if root is not None]
    assert len(roots) > 50
    assert all(root.parent in expected for root in roots), sorted(set(roots))
    cfg = load_config(REPO / "configs" / "lite0" / "ladder_camvid.yaml")
    assert cfg.data.root == str((REPO.parent / "shared" / "data" / "camvid").resolve())


def test_missing_root_names_the_absolute_path_tried(tmp_path, inside, capsys):
    config = write_yaml(tmp_path / "configs" / "a.yaml", tiny_config("../nowhere"))
    inside(tmp_path / "elsewhere")
    assert main(["data", "check", str(config)]) != 0
    out = capsys.readouterr()
    assert str((tmp_path / "nowhere").resolve()) in out.out + out.err


def test_saved_config_keeps_paths_absolute_and_relative_to_its_folder(tmp_path, inside):
    make_shapes(tmp_path / "data" / "shapes", {"train": 1})
    config = write_yaml(tmp_path / "configs" / "a.yaml", tiny_config("../data/shapes"))
    inside(tmp_path / "elsewhere")
    (tmp_path / "run").mkdir()
    save_config(load_config(config), tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["root"] == str((tmp_path / "data" / "shapes").resolve())
    assert saved[RELATIVE_PATHS_KEY] == {"data.root": "../data/shapes"}
    assert load_config(tmp_path / "run" / "config.yaml") == load_config(config)


def test_run_config_of_older_versions_tries_the_current_folder_then_the_run(tmp_path, inside):
    """Before this rule a run's relative root meant the folder it was started from."""
    run = tmp_path / "runs" / "old"
    write_yaml(run / "config.yaml", tiny_config("data/shapes"))
    (run / MARKER).write_text("{}\n")
    inside(tmp_path / "started_here")
    make_shapes(tmp_path / "started_here" / "data" / "shapes", {"train": 1})
    from_cwd = str((tmp_path / "started_here" / "data" / "shapes").resolve())
    assert load_config(run / "config.yaml").data.root == from_cwd
    inside(tmp_path / "elsewhere")
    make_shapes(run / "data" / "shapes", {"train": 1})
    assert load_config(run / "config.yaml").data.root == str((run / "data" / "shapes").resolve())


# ---------------------------------------------------------------------- end to end


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return out.out + out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[Path]:
    """A folder holding a project: ``configs/tiny.yaml`` whose root is ``../data/shapes``."""
    tree = tmp_path_factory.mktemp("anywhere")
    make_shapes(tree / "project" / "data" / "shapes", {"train": 4, "val": 2})
    write_yaml(tree / "project" / "configs" / "tiny.yaml", tiny_config("../data/shapes"))
    yield tree


@pytest.mark.slow
def test_every_command_from_another_folder(trained, inside, capsys):
    config = str(trained / "project" / "configs" / "tiny.yaml")
    data = (trained / "project" / "data" / "shapes").resolve()

    inside(trained / "elsewhere")
    assert "no problems found" in run_cli(["data", "check", config], capsys)
    run_cli(["train", config, "--no-progress"], capsys)
    run = trained / "elsewhere" / "runs" / "tiny"  # work_dir: relative to where train ran
    assert (run / "checkpoints" / "best.pt").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(data)
    assert saved[RELATIVE_PATHS_KEY] == {"data.root": "../../../project/data/shapes"}

    inside(trained / "third")  # neither the checkout, nor the project, nor the run
    assert "Segmentation scores" in run_cli(["eval", str(run)], capsys)
    report = ["report", str(run), "--out", "report.html", "--max-images", "1", "--panels", "1"]
    run_cli([*report, "--bench-size", "none"], capsys)  # evaluates on the run's val images
    assert (trained / "third" / "report.html").is_file()
    image = next((data / "images" / "val").iterdir())
    run_cli(["predict", str(image), "--checkpoint", str(run), "--out", "pred"], capsys)
    assert any((trained / "third" / "pred").iterdir())

    # ``--set data.root`` on the command line: relative to the current folder.
    shutil.copytree(data, trained / "third" / "copy")
    assert "Segmentation scores" in run_cli(["eval", str(run), "--set", "data.root=copy"], capsys)


@pytest.mark.slow
def test_a_moved_run_finds_its_data(trained, inside, capsys):
    run = trained / "elsewhere" / "runs" / "tiny"
    if not (run / "checkpoints" / "best.pt").is_file():
        inside(trained / "elsewhere")
        config = trained / "project" / "configs" / "tiny.yaml"
        run_cli(["train", str(config), "--no-progress"], capsys)

    # Moved alone: the absolute path still holds the data.
    alone = trained / "moved_alone" / "tiny"
    shutil.copytree(run, alone)
    inside(trained / "fourth")
    assert "Segmentation scores" in run_cli(["eval", str(alone)], capsys)

    # Moved together with the data (a copied tree), the original data gone: relative_paths.
    copy = trained / "copied_tree"
    shutil.copytree(trained / "project", copy / "project")
    shutil.copytree(run, copy / "elsewhere" / "runs" / "tiny")
    original = trained / "project" / "data"
    os.rename(original, trained / "data_away")
    try:
        assert "Segmentation scores" in run_cli(
            ["eval", str(copy / "elsewhere" / "runs" / "tiny")], capsys
        )
        # Neither path holds it: the error names both.
        shutil.rmtree(copy / "project" / "data")
        assert main(["eval", str(copy / "elsewhere" / "runs" / "tiny")]) != 0
        err = capsys.readouterr().err
        assert str((original / "shapes").resolve()) in err
        assert str((copy / "project" / "data" / "shapes").resolve()) in err
    finally:
        os.rename(trained / "data_away", original)
