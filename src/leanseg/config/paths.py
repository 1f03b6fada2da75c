"""Where the paths in a config point, and what a saved run config stores to find them again.

The input paths of a config are ``data.root``, every ``data.datasets[*].root`` and
``model.backbone.pretrained`` (unless it names a weight source such as ``efficientnet-lite0``).
Each is made absolute when the config is read, so that a run works from any folder and every
message names the exact path tried:

- in a YAML file a relative path is relative to the folder of that file (a ``base:`` file's
  paths to the base file's folder), wherever the command runs;
- on the command line (``--set data.root=...``) and in override mappings given in Python, it is
  relative to the current folder, as for any other command-line path;
- a leading ``~`` is the home folder and ``$NAME`` / ``${NAME}`` the value of an environment
  variable, as a shell expands them; a variable that is not set is an error naming it (so is
  one in ``work_dir``, which is expanded the same way).

``work_dir`` is an output, not an input: it stays relative to the folder the command runs in.

A config saved in a folder (a run's ``config.yaml``, :func:`leanseg.config.save_config`) states
each input path absolute and, under the top-level key ``relative_paths``, the same path relative
to that folder. Reading it tries the absolute path first, then the relative one, so a run folder
that was moved on its own, or moved together with its data (a copied tree), still finds the data.
When neither exists the config keeps the absolute path and the dataset's error names both
(:func:`other_paths_tried`); ``--set data.root=...`` then says where the data is now.

Run configs of leanseg versions before this rule have no ``relative_paths`` and their relative
paths meant the folder the run was started from. Such a config (a ``config.yaml`` beside a run
marker or a ``checkpoints/`` folder) tries the current folder first, then the run folder.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from leanseg.config.weight_sources import PRETRAINED_SOURCES

# The top-level key of a saved config that holds its input paths relative to its folder.
RELATIVE_PATHS_KEY = "relative_paths"
# The file that marks a folder as a run folder of ``leanseg train`` (``files.run_dir.MARKER``).
RUN_MARKER = ".leanseg-run"

# Every path tried for an input path that none of its candidates found, by the path the config
# kept (the first candidate), so that whoever fails to open it can name them all.
_TRIED: dict[str, tuple[str, ...]] = {}


def input_path_slots(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """The input paths set in a nested config mapping.

    Returns:
        ``(dotted key, mapping holding the value, key in that mapping)`` for every input path
        whose value is a non-empty string without a null byte; named weight sources are left
        out.
    """
    slots: list[tuple[str, dict[str, Any], str]] = []
    data = raw.get("data")
    if isinstance(data, dict):
        slots.append(("data.root", data, "root"))
        datasets = data.get("datasets")
        if isinstance(datasets, list):
            for index, entry in enumerate(datasets):
                if isinstance(entry, dict):
                    slots.append((f"data.datasets[{index}].root", entry, "root"))
    model = raw.get("model")
    backbone = model.get("backbone") if isinstance(model, dict) else None
    if isinstance(backbone, dict) and not _is_weight_name(backbone.get("pretrained")):
        slots.append(("model.backbone.pretrained", backbone, "pretrained"))
    # A value with a null byte names no file: left as it is, for the config's check to refuse.
    return [
        slot
        for slot in slots
        if isinstance(slot[1].get(slot[2]), str)
        and slot[1][slot[2]]
        and "\x00" not in slot[1][slot[2]]
    ]


# ``$NAME`` or ``${NAME}`` in a path, as a shell reads it.
_VARIABLE = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


class PathExpansionError(ValueError):
    """A path that names an environment variable which is not set."""


def expand_path(value: str) -> str:
    """``value`` with a leading ``~`` and every ``$NAME`` / ``${NAME}`` expanded, as a shell
    expands them.

    Raises:
        PathExpansionError: naming the variable, when one is not set (a shell would put an
            empty string there, which turns ``$DATA/camvid`` into ``/camvid``).
    """
    for match in _VARIABLE.finditer(value):
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise PathExpansionError(
                f"{value!r} uses the environment variable ${name}, which is not set"
            )
    return os.path.expanduser(os.path.expandvars(value))


def absolute_path(value: str, folder: Path) -> str:
    """``value`` (``~`` and ``$VAR`` expanded) as an absolute path, relative paths taken from
    ``folder``; symbolic links resolved where they lead somewhere (a loop stays as written, for
    the reader of the path to report)."""
    path = folder / expand_path(value)
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return os.path.abspath(path)


def resolve_file_paths(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Make the input paths of a config read from the file ``path`` absolute (module rules).

    Args:
        raw: the file's mapping (without ``base:``); changed in place, and its
            ``relative_paths`` entry is removed.
        path: the YAML file it was read from.

    Returns:
        ``raw``.

    Raises:
        ValueError: ``relative_paths`` is not a mapping of dotted keys to path strings.
    """
    folder = path.parent
    relative = raw.pop(RELATIVE_PATHS_KEY, None)
    if relative is not None and not (
        isinstance(relative, dict) and all(isinstance(v, str) for v in relative.values())
    ):
        raise ValueError(f"{RELATIVE_PATHS_KEY}: expected a mapping of keys to paths")
    legacy_run = relative is None and _is_run_config(path)
    for key, holder, name in input_path_slots(raw):
        try:
            value = expand_path(holder[name])
            if legacy_run and not Path(value).is_absolute():
                candidates = [absolute_path(value, Path.cwd()), absolute_path(value, folder)]
            else:
                candidates = [absolute_path(value, folder)]
            if relative and key in relative:
                candidates.append(absolute_path(relative[key], folder))
        except PathExpansionError as err:
            raise PathExpansionError(f"{key}: {err}") from None
        holder[name] = _first_existing(list(dict.fromkeys(candidates)))
    return raw


def resolve_override_paths(key: str, value: Any) -> Any:
    """The value of the ``--set`` override ``key=value`` with its input paths made absolute
    against the current folder (``data.root``, or a whole ``data`` / ``model`` section)."""
    parts = key.split(".")
    nested: Any = copy.deepcopy(value)
    for part in reversed(parts):
        nested = {part: nested}
    for slot, holder, name in input_path_slots(nested):
        try:
            holder[name] = absolute_path(holder[name], Path.cwd())
        except PathExpansionError as err:
            raise PathExpansionError(f"{slot}: {err}") from None
    for part in parts:
        nested = nested[part]
    return nested


def store_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The mapping to save in a config file in ``folder``: input paths absolute (relative ones
    taken from the current folder) and again relative to ``folder`` under ``relative_paths``.

    Args:
        raw: a plain config mapping (``Config.to_dict()``); not changed.
        folder: where the file is written.
    """
    stored = copy.deepcopy(raw)
    stored.pop(RELATIVE_PATHS_KEY, None)
    relative: dict[str, str] = {}
    home = folder.resolve()
    for key, holder, name in input_path_slots(stored):
        holder[name] = absolute_path(holder[name], Path.cwd())
        try:
            relative[key] = Path(os.path.relpath(holder[name], home)).as_posix()
        except ValueError:  # another drive (Windows): no relative path exists
            continue
    if relative:
        stored[RELATIVE_PATHS_KEY] = relative
    return stored


def other_paths_tried(path: str | Path) -> list[str]:
    """The paths, besides ``path``, that reading a saved config tried for the same input and
    did not find (none for a path that had only one candidate)."""
    kept = str(path)
    return [tried for tried in _TRIED.get(kept, ()) if tried != kept]


def _first_existing(candidates: list[str]) -> str:
    """The first candidate that exists; else the first, noting every candidate tried."""
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    if len(candidates) > 1:
        _TRIED[candidates[0]] = tuple(candidates)
    return candidates[0]


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is the ``config.yaml`` of a run folder of ``leanseg train``."""
    folder = path.parent
    return path.name == "config.yaml" and (
        (folder / RUN_MARKER).exists() or (folder / "checkpoints").is_dir()
    )


def _is_weight_name(value: Any) -> bool:
    """Whether a ``pretrained`` value names a packaged weight source instead of a file."""
    if not isinstance(value, str):
        return False
    return value in PRETRAINED_SOURCES
