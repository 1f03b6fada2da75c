"""The configs that come with leanseg, found by name: ``leanseg train ldn/rn18_32to4_camvid``.

:func:`resolve_config_path` turns what a user typed into a YAML file: a path that exists, else a
shipped config of that name (:func:`shipped_config_names`), else an error listing close names.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from leanseg.config.errors import ConfigError

CONFIG_SUFFIX = ".yaml"


def shipped_config_dir() -> Path | None:
    """The folder of the configs that come with leanseg, or ``None`` when there is none.

    An installed wheel carries them as package data in ``leanseg/configs/`` (the build copies
    the repository's ``configs/`` there, see ``setup.py``); a source checkout (editable
    install) reads ``configs/`` at the repository root, so both see the same files.
    """
    # This file is leanseg/config/shipped.py: parents[1] is the package ``leanseg``, and
    # parents[3] the checkout that holds ``src/leanseg``.
    packaged = Path(__file__).parents[1] / "configs"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "configs"
    return checkout if checkout.is_dir() else None


def shipped_config_names() -> list[str]:
    """Names of the shipped configs, e.g. ``ldn/rn18_32to4_camvid``, sorted."""
    root = shipped_config_dir()
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """The YAML file a user means by ``name``: a path that exists, else a shipped config.

    A path that exists always wins, so a local ``ldn/x.yaml`` is never shadowed. Otherwise a
    name without ``.yaml`` is looked up among :func:`shipped_config_names`
    (``ldn/rn18_32to4_camvid`` -> ``<shipped>/ldn/rn18_32to4_camvid.yaml``).

    Raises:
        ConfigError: ``config file not found``, listing the shipped configs whose names are
            closest to ``name``.
    """
    path = Path(name)
    if path.exists():
        return path
    text = path.as_posix()
    root = shipped_config_dir()
    names = shipped_config_names()
    if root is not None and text in names:  # also keeps ``..`` and absolute paths out
        return root / f"{text}{CONFIG_SUFFIX}"
    wanted = text.removesuffix(CONFIG_SUFFIX)
    # A bare file name (``rn18_32to4_camvid``) matches the last part of a shipped name.
    close = [n for n in names if n.rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
    close += difflib.get_close_matches(wanted, names, n=5, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; shipped configs with close names: {', '.join(dict.fromkeys(close))}"
    elif names:
        hint = f"; none of the {len(names)} shipped configs is close (e.g. {names[0]})"
    raise ConfigError(f"config file not found: {path}{hint}")
