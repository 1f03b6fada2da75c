"""Config loading: types, unknown keys, one level of base, overrides."""

import re
from pathlib import Path

import pytest

import leanseg
from leanseg.config import (
    IMAGENET_MEAN,
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    save_config,
)
from leanseg.models import load_run_config, run_config_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.data.crop_size == (512, 512)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_run_config(path)


def test_unknown_key_lists_valid_keys(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "train.lrr" in message
    assert "max_iters" in message and "lr" in message


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path / "c.yaml", "trian: {}\n")
    with pytest.raises(ConfigError, match="unknown key trian; valid keys: model, data"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  max_iters: ten\n", "train.max_iters"),
        ("train:\n  max_iters: 1.5\n", "train.max_iters"),
        ("train:\n  optimizer: rmsprop\n", "train.optimizer"),
        ("data:\n  crop_size: [1, 2, 3]\n", "data.crop_size"),
        ("data:\n  hflip: 'yes'\n", "data.hflip"),
        ("eval:\n  scales: 1.0\n", "eval.scales"),
    ],
)
def test_wrong_type_names_key(tmp_path, text, key):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


def test_component_options_are_checked_against_builders(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  head: {name: bilinear, dropuot: 0.1}\n")
    with pytest.raises(ConfigError, match=r"model\.head\.dropuot.*valid keys: name, in_stride"):
        load_run_config(path)
    path = write(tmp_path / "d.yaml", "model:\n  backbone: {name: resnet19}\n")
    with pytest.raises(ConfigError, match="resnet19.*resnet18"):
        load_run_config(path)
    path = write(tmp_path / "e.yaml", "model:\n  backbone: {name: resnet18, deep_stem: 3}\n")
    with pytest.raises(ConfigError, match=r"model\.backbone\.deep_stem"):
        load_run_config(path)


def test_plain_config_leaves_the_model_section_to_the_run_config_loader(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  head: {name: bilinear, dropuot: 0.1}\n")
    cfg = load_config(path)  # types and ranges only: config sits below the builder tables
    assert cfg.model.head == {"name": "bilinear", "dropuot": 0.1}
    assert cfg.data.mean is None and cfg.data.std is None
    with pytest.raises(ConfigError, match=r"<dict>: unknown key model\.head\.dropuot"):
        run_config_from_dict(cfg.to_dict())
    assert leanseg.load_config is load_run_config
    assert load_run_config().data.mean == IMAGENET_MEAN


def test_base_is_merged_and_only_one_level(tmp_path):
    write(
        tmp_path / "base.yaml",
        "train: {lr: 0.5, max_iters: 7}\nmodel:\n  head: {name: bilinear, dropout: 0.1}\n",
    )
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {lr: 0.25}\n")
    cfg = load_config(child)
    assert cfg.train.lr == 0.25 and cfg.train.max_iters == 7
    assert cfg.model.head == {"name": "bilinear", "dropout": 0.1}
    write(tmp_path / "grand.yaml", "base: child.yaml\n")
    with pytest.raises(ConfigError, match="may not have a base"):
        load_config(tmp_path / "grand.yaml")


def test_component_with_another_name_replaces_base_options(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  head: {name: bilinear, dropout: 0.1}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\nmodel:\n  head: {name: ladder}\n")
    assert load_config(child).model.head == {"name": "ladder"}


def test_overrides(tmp_path):
    cfg = load_config(None, ["train.lr=0.125", "data.crop_size=[64, 96]", "model.head.dropout=0.2"])
    assert cfg.train.lr == 0.125
    assert cfg.data.crop_size == (64, 96)
    assert cfg.model.head["dropout"] == 0.2
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.nope"):
        load_config(None, ["train.nope=1"])


def test_missing_and_invalid_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"^config file not found: {re.escape(str(missing))}"):
        load_config(missing)
    bad = write(tmp_path / "bad.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: not valid YAML: line 2"):
        load_config(bad)


def test_saved_config_reproduces_the_run(tmp_path):
    path = CONFIGS / "baseline" / "rn18_bilinear_camvid.yaml"
    cfg = load_run_config(path, ["train.lr=0.003"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_run_config(tmp_path / "config.yaml")
    assert again == cfg
    assert run_config_from_dict(cfg.to_dict()) == cfg
    plain = load_config(path, ["train.lr=0.003"])
    assert config_from_dict(plain.to_dict()) == plain
