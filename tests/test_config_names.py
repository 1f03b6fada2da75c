"""Shipped configs by name: ``leanseg train ldn/rn18_32to4_camvid`` from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanseg.config import (
    ConfigError,
    load_config,
    resolve_config_path,
    shipped_config_dir,
    shipped_config_names,
)

NAME = "ldn/rn18_32to4_camvid"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder outside the checkout, as for a user of the installed wheel."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_shipped_configs_are_the_repository_configs() -> None:
    root = shipped_config_dir()
    assert root is not None
    assert root == Path(__file__).resolve().parents[1] / "configs"  # editable: the checkout's
    names = shipped_config_names()
    assert NAME in names and "lite0/heads/qgn_camvid" in names
    assert names == sorted(names) and not any(n.endswith(".yaml") for n in names)


def test_name_resolves_to_the_shipped_config(elsewhere: Path) -> None:
    root = shipped_config_dir()
    assert root is not None
    assert resolve_config_path(NAME) == root / f"{NAME}.yaml"
    cfg = load_config(NAME)
    assert cfg.model.backbone["name"] == "resnet18" and cfg.data.dataset == "camvid"


def test_shipped_config_with_a_base_loads_by_name(elsewhere: Path) -> None:
    cfg = load_config("lite0/heads/ladder_camvid")  # base: base_camvid.yaml
    assert cfg.model.backbone["name"] == "efficientnet_lite0"


def test_an_existing_path_wins(elsewhere: Path) -> None:
    local = elsewhere / "ldn" / "rn18_32to4_camvid"
    local.parent.mkdir()
    local.write_text("work_dir: runs/mine\n")
    assert resolve_config_path(NAME) == Path(NAME)
    assert load_config(NAME).work_dir == "runs/mine"
    (elsewhere / "mine.yaml").write_text("work_dir: runs/yaml\n")
    assert load_config("mine.yaml").work_dir == "runs/yaml"


@pytest.mark.parametrize(
    "name",
    ["ldn/rn18_32to4_camvd", "rn18_32to4_camvid", f"{NAME}.yaml", f"../configs/{NAME}"],
)
def test_unknown_name_lists_close_names(elsewhere: Path, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(name)
    message = str(err.value)
    assert message.startswith(f"config file not found: {name}; shipped configs with close names:")
    assert NAME in message


def test_unknown_name_without_close_names(elsewhere: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: zzz; none of the \d+ shipped configs"):
        load_config("zzz")
