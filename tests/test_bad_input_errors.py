"""One-line errors and no silent nonsense (issue 27, items 5 and 6, and the YAML sizes of item 4).

YAML: duplicate keys, deep nesting, alias bombs and recursive aliases refused by
:mod:`leanseg.config.safe_yaml`, large files refused before reading; configs: empty files, keys
that are
not names, NaN and infinite values, null bytes, out-of-range seeds, ``~`` / ``$VAR`` in paths,
negative loss weights; the CLI's one line for an unexpected error and ``--debug``; a full disk
during a checkpoint write; checkpoints with mistyped entries; label ids below 0; a split whose
labels are all ignored.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from leanseg import cli
from leanseg.commands import demo as demo_command
from leanseg.config import ConfigError, load_config, safe_yaml
from leanseg.data.base import DatasetError, check_label_values
from leanseg.files import checkpoint as checkpoint_module
from leanseg.files.checkpoint import CheckpointError
from leanseg.models import load_run_config
from leanseg.training import trainer as trainer_module
from leanseg.training.trainer import Trainer, TrainingError

SMALL = "train: {lr: 0.01}\n"


def _config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problem(text: str) -> str:
    with pytest.raises(yaml.YAMLError) as caught:
        safe_yaml.load(text)
    return str(getattr(caught.value, "problem", caught.value))


# ---------------------------------------------------------------------- safe_yaml


def test_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    assert "duplicate key 'lr' (first at line 2)" in _problem("train:\n  lr: 1\n  lr: 2\n")
    assert "duplicate key 'a'" in _problem("{a: 1, 'a': 2}")
    # The config error points at the second key (line 3) and names the first (line 2).
    path = _config(tmp_path, "train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}: not valid YAML: line 3, column 3: duplicate key 'lr' (first at line 2)"
    )


def test_merge_key_may_be_overridden() -> None:
    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n"
    assert safe_yaml.load(text)["other"] == {"x": 3, "y": 2}


def test_deep_nesting_is_refused_before_recursion_runs_out() -> None:
    assert "nested deeper than" in _problem("[" * 5000 + "]" * 5000)
    assert safe_yaml.load("[" * 30 + "]" * 30) is not None  # ordinary depth reads


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.perf_counter()
    assert "aliases expand to more than" in _problem("\n".join(lines))
    assert time.perf_counter() - started < 1.0
    # A few aliases are fine.
    assert safe_yaml.load("a: &c [1, 2]\nb: *c\n") == {"a": [1, 2], "b": [1, 2]}


def test_recursive_alias_is_refused() -> None:
    assert "recursive" in _problem("a: &a {b: *a}")


def test_large_file_is_refused_before_reading(tmp_path: Path, monkeypatch: Any) -> None:
    path = _config(tmp_path, "#" + "x" * safe_yaml.MAX_FILE_BYTES + "\n")

    def read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was read before its size was checked")

    for name in ("read_text", "read_bytes", "open"):
        monkeypatch.setattr(Path, name, read)
    monkeypatch.setattr("builtins.open", read)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    monkeypatch.undo()
    size = safe_yaml.MAX_FILE_BYTES + 2
    assert str(caught.value).startswith(
        f"{path}: {size} bytes, more than a config may hold ({safe_yaml.MAX_FILE_BYTES} bytes)"
    )


# ---------------------------------------------------------------------- configs


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "{}\n", "null\n"])
def test_empty_config_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(_config(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("1: x\ntrain: {lr: 0.1}\n", "key 1 is a int"),
        ("train: {1: 2, lr: 0.1}\n", "train: key 1"),
        ("data: {options: {2.5: 1}}\n", "data.options: key 2.5"),
        ("true: 1\n", "key True is a bool"),
    ],
)
def test_keys_that_are_not_names_are_refused(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(_config(tmp_path, text))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.head={name: bilinear, dropout: .nan}", "model.head.dropout"),
        ("data.mean=[.inf, 0.5, 0.5]", r"data.mean\[0\]"),
        ("train.lr=-.inf", "train.lr"),
        ('data.root="/a\\0b"', "data.root: contains a null byte"),
    ],
)
def test_non_finite_numbers_and_null_bytes_are_refused(
    tmp_path: Path, override: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(_config(tmp_path, SMALL), [override])


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_out_of_range_seed_is_refused(tmp_path: Path, seed: int) -> None:
    with pytest.raises(ConfigError, match="train.seed: must be in 0..4294967295"):
        load_config(_config(tmp_path, SMALL), [f"train.seed={seed}"])


@pytest.mark.parametrize(
    ("std", "shown"),
    [("[0, 0.2, 0.2]", "[0.0, 0.2, 0.2]"), ("[0.2, -0.1, 0.2]", "[0.2, -0.1, 0.2]")],
)
def test_data_std_must_be_positive(tmp_path: Path, std: str, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, SMALL), [f"data.std={std}"])
    message = str(caught.value)
    assert "data.std: must be positive numbers" in message
    assert message.endswith(f"got {shown}")


def test_unset_variable_in_a_path_is_named(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("LEANSEG_TEST_UNSET", raising=False)
    text = "data: {dataset: folder, root: $LEANSEG_TEST_UNSET/camvid}\n"
    with pytest.raises(ConfigError, match=r"data.root: .*\$LEANSEG_TEST_UNSET, which is not set"):
        load_config(_config(tmp_path, text))
    with pytest.raises(ConfigError, match=r"work_dir: .*\$LEANSEG_TEST_UNSET, which is not set"):
        load_config(_config(tmp_path, SMALL), ["work_dir=${LEANSEG_TEST_UNSET}/run"])


def test_variables_and_home_are_expanded(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("LEANSEG_TEST_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = "data:\n  dataset: folder\n  root: ${LEANSEG_TEST_DATA}/camvid\nwork_dir: ~/runs/x\n"
    cfg = load_config(_config(tmp_path, text))
    assert cfg.data.root == str(tmp_path / "d" / "camvid")
    assert cfg.work_dir == str(tmp_path / "home" / "runs" / "x")
    cfg = load_config(_config(tmp_path, SMALL), ["data.root=~/data"])
    assert cfg.data.root == str(tmp_path / "home" / "data")


def test_symlink_loop_as_data_root_reads(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    cfg = load_config(_config(tmp_path, "data: {dataset: folder, root: loop}\n"))
    assert cfg.data.root == str(tmp_path / "loop")  # the dataset then names the loop


@pytest.mark.parametrize(
    ("head", "key"),
    [
        ("{name: ldn, aux_weight: -0.4}", "aux_weight"),
        ("{name: qgn, gamma: -1}", "gamma"),
        ("{name: ladder, class_weights: [-1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}", "class_weights"),
    ],
)
def test_negative_loss_parameters_are_refused(tmp_path: Path, head: str, key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"model\.head\.{key}: a loss weight or parameter must be 0 or more"
    ):
        load_run_config(_config(tmp_path, SMALL), [f"model.head={head}"])


# ---------------------------------------------------------------------- the command line


def test_unexpected_error_is_one_line_and_debug_shows_it(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    def broken(args: Any) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(demo_command, "_cmd_demo", broken)
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("leanseg: error: unexpected error: KeyError: 'boom'")
    assert "--debug" in err[0]
    for argv in (["--debug", "demo"], ["demo", "--debug"]):
        with pytest.raises(KeyError):
            cli.main([*argv, "--out", str(tmp_path / "d")])


def test_null_byte_in_a_command_line_path(monkeypatch: Any, capsys: Any) -> None:
    assert cli.main(["train", "a\0b.yaml"]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("leanseg: error: config file not found: a")

    def opens(args: Any) -> int:
        return len(open(args.out, "rb").read())  # noqa: SIM115 - raises before opening

    monkeypatch.setattr(demo_command, "_cmd_demo", opens)
    assert cli.main(["demo", "--out", "x\0y"]) == cli.EXIT_BAD_INPUT
    assert "a path given contains a null byte" in capsys.readouterr().err


def test_empty_config_on_the_command_line(tmp_path: Path, capsys: Any) -> None:
    path = _config(tmp_path, "")
    assert cli.main(["train", str(path)]) == cli.EXIT_BAD_INPUT
    assert f"{path}: the config file is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- checkpoints


def _bare_trainer(tmp_path: Path, state: dict[str, Any]) -> Trainer:
    """A Trainer with only what ``_save`` uses."""
    trainer = object.__new__(Trainer)
    trainer.is_main = True
    trainer.iteration = 8
    trainer._state = lambda: state  # type: ignore[method-assign]
    return trainer


def test_full_disk_during_a_checkpoint_write(tmp_path: Path, monkeypatch: Any) -> None:
    trainer = _bare_trainer(tmp_path, {"weights": torch.arange(1000.0)})
    path = tmp_path / "checkpoints" / "last.pt"
    trainer._save(path)
    before = path.read_bytes()

    def full_disk(payload: Any, handle: Any) -> None:
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(TrainingError) as caught:
        trainer._save(path)
    message = str(caught.value)
    assert "No space left on device" in message
    assert "the previous last.pt is intact" in message
    assert "--resume" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_other_write_errors_pass_through(tmp_path: Path, monkeypatch: Any) -> None:
    trainer = _bare_trainer(tmp_path, {"weights": torch.zeros(2)})

    def broken(payload: Any, handle: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoint_module.torch, "save", broken)
    with pytest.raises(OSError, match="Input/output error"):
        trainer._save(tmp_path / "last.pt")


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ({"iteration": "10"}, "'iteration' is a str"),
        ({"iteration": -1}, "'iteration' is a int"),
        ({"iteration": True}, "'iteration' is a bool"),
        ({"model": [1, 2]}, "'model' is a list"),
        ({"model": {"w": "x"}}, "'model.w' is a str"),
        ({"optimizer": "adam"}, "'optimizer' is a str"),
        ({"best": "0.5"}, "'best' is a str"),
        ({"best": {"value": None}}, "'best' is a dict"),
        ({"rng": [1]}, "'rng' is a list"),
    ],
)
def test_mistyped_training_state_is_refused(entries: dict[str, Any], named: str) -> None:
    payload = {
        "model": {"w": torch.zeros(1)},
        "iteration": 4,
        "optimizer": {},
        "best": {"metric": "miou", "value": 0.5, "iteration": 4},
        "rng": {},
        **entries,
    }
    with pytest.raises(CheckpointError, match=named):
        trainer_module._check_training_state(payload, Path("last.pt"))


def test_well_typed_training_state_passes() -> None:
    payload = {"model": {"w": torch.zeros(1)}, "iteration": 0, "optimizer": {}, "best": None}
    trainer_module._check_training_state(payload, Path("last.pt"))


def test_nan_best_of_a_resumed_checkpoint_is_dropped() -> None:
    best = {"metric": "miou", "value": 0.5, "iteration": 4}
    assert trainer_module._usable_best(best) is best
    assert trainer_module._usable_best({**best, "value": float("nan")}) is None
    assert trainer_module._usable_best(None) is None


# ---------------------------------------------------------------------- labels


def test_negative_label_ids_are_refused() -> None:
    label = np.array([[0, 1], [-1, 255]], np.int32)
    with pytest.raises(DatasetError, match=r"label values \[-1\]"):
        check_label_values(label, 2, "l.png")
    check_label_values(np.array([[0, 1], [255, 1]], np.uint8), 2, "l.png")


class _Labels:
    """A dataset with ``load_raw`` of the given label maps."""

    def __init__(self, labels: list[np.ndarray]) -> None:
        self.labels = labels
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def load_raw(self, index: int) -> dict[str, Any]:
        self.reads += 1
        return {"label": self.labels[index]}


def _cfg(ignore_index: int = 255) -> Any:
    return load_config(None, ["data.dataset=folder", f"data.ignore_index={ignore_index}"])


def test_all_ignored_split_is_refused_naming_it() -> None:
    dataset = _Labels([np.full((4, 4), 255, np.uint8)] * 3)
    with pytest.raises(DatasetError, match="split 'train'.*every label pixel of its 3 sample"):
        trainer_module._refuse_all_ignored(dataset, "train", _cfg())
    zeros = _Labels([np.zeros((4, 4), np.uint8)] * 2)
    with pytest.raises(DatasetError, match=r"values \[0, 255\]"):
        trainer_module._refuse_all_ignored(zeros, "val", _cfg(ignore_index=0))


def test_labelled_split_costs_one_read() -> None:
    labelled = np.full((4, 4), 255, np.uint8)
    labelled[0, 0] = 1
    dataset = _Labels([labelled] + [np.full((4, 4), 255, np.uint8)] * 50)
    trainer_module._refuse_all_ignored(dataset, "train", _cfg())
    assert dataset.reads == 1
