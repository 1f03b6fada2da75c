"""Where a command may write its output file: never over what it did not write (issue 27).

The rule for every flag that names one output file (``eval``, ``bench`` and ``quadtree stats``
``--json``; ``export --out``; ``report --out``):

- a path that does not exist is written;
- an existing path is refused without ``--force``, with a message that names it and says
  whether ``--force`` would replace it;
- ``--force`` replaces only a regular file (not a link, not a folder) of the same kind that
  leanseg wrote, recognised by its content (:class:`OutputKind`): a JSON result by its
  ``"leanseg"`` marker (:func:`json_result`), an ONNX model by the leanseg entries of its
  metadata (:func:`leanseg.export.is_leanseg_onnx`), a report by its generator meta tag
  (:func:`leanseg.report.output.is_report`). Never a file of a run directory (its config,
  metrics log, checkpoints, marker), never a checkpoint, a config or any other file;
- the file is written under a temporary name beside it and renamed over
  (:func:`leanseg.files.atomic.atomic_write`): an exception, Ctrl-C or SIGTERM midway leaves the old
  file as it was and no temporary file.

The path is checked before the command does its work, and again just before the rename, since
a long evaluation leaves time for a file to appear. ``-`` (stdout) for ``--json`` is no path and
is not checked. Folders of many outputs (``predict --out``, ``data convert``) follow the same
standard through their manifest (:func:`leanseg.files.atomic.read_output_manifest`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from leanseg.config import ConfigError
from leanseg.files.atomic import atomic_write
from leanseg.version import __version__

# The key that marks a JSON result as leanseg's: {"leanseg": {"kind": "eval", "version": ...}}.
MARKER_KEY = "leanseg"
# Results are a few KiB; a larger file is not read to find out (it is not one).
_JSON_READ_LIMIT = 16 * 2**20


class OutputExistsError(ConfigError):
    """An output path that holds something the command may not replace (exit status 2)."""


@dataclass(frozen=True)
class OutputKind:
    """One kind of file leanseg writes, and how to recognise a file leanseg wrote of that kind.

    Attributes:
        name: what such a file is, with its article, for messages ("a leanseg eval --json
            result").
        recognise: whether the regular file at a path is one leanseg wrote of this kind; it
            reads the content and never raises.
    """

    name: str
    recognise: Callable[[Path], bool]


def json_kind(command: str) -> OutputKind:
    """The kind of what ``leanseg COMMAND --json`` writes (``command``: ``"eval"`` ...)."""
    return OutputKind(
        f"a leanseg {command} --json result", lambda path: json_result_kind(path) == command
    )


def json_result(command: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the marker of a result of ``leanseg COMMAND`` in front; its keys kept."""
    return {MARKER_KEY: {"kind": command, "version": __version__}, **payload}


def json_result_kind(path: Path) -> str | None:
    """The command named by the marker of a JSON result at ``path``; ``None`` for other files."""
    try:
        if path.stat().st_size > _JSON_READ_LIMIT:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return None
    marker = record.get(MARKER_KEY) if isinstance(record, dict) else None
    kind = marker.get("kind") if isinstance(marker, dict) else None
    return kind if isinstance(kind, str) else None


def check_output_path(path: str | Path, kind: OutputKind, *, force: bool, flag: str = "") -> Path:
    """Refuse ``path`` unless the rule of this module lets it be written as ``kind``.

    Writes nothing.

    Args:
        path: the output file.
        kind: what will be written there.
        force: the command's ``--force``: replace an earlier file of ``kind``.
        flag: the flag that named ``path`` (``"--json"``), for messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputExistsError: naming ``flag`` and ``path``: a file of a run directory; a folder, or
            a path below a file; an existing path without ``force``; with ``force``, anything
            but a regular file of ``kind`` that leanseg wrote.
    """
    path = Path(path)
    where = f"{flag} {path}".strip()
    run = _run_owning(path)
    if run is not None:
        raise OutputExistsError(
            f"{where} is a file of the run {run}; choose another name (not even --force "
            "replaces it)"
        )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except NotADirectoryError:
        raise OutputExistsError(
            f"{where}: cannot write it, {_first_file_above(path)} is a file, not a folder"
        ) from None
    if stat.S_ISDIR(mode):
        raise OutputExistsError(f"{where} is a folder; name the file to write")
    if not (stat.S_ISREG(mode) and kind.recognise(path)):
        raise OutputExistsError(
            f"{where} exists and is not {kind.name}; move it or choose another name (not even "
            "--force replaces it)"
        )
    if not force:
        raise OutputExistsError(f"{where} already holds {kind.name}; pass --force to replace it")
    return path


def write_output(
    path: str | Path,
    kind: OutputKind,
    write: Callable[[BinaryIO], Any],
    *,
    force: bool,
    flag: str = "",
) -> Path:
    """Check ``path`` again (:func:`check_output_path`), then write it through ``write(handle)``
    into a temporary file renamed over it (:func:`leanseg.files.atomic.atomic_write`).

    Raises:
        OutputExistsError: as :func:`check_output_path`.
        ConfigError: naming ``flag`` and ``path``, when the system refuses the write.
    """
    path = check_output_path(path, kind, force=force, flag=flag)
    try:
        return atomic_write(path, write)
    except OSError as err:
        where = f"{flag} {path}".strip()
        raise ConfigError(f"{where}: cannot write it ({err.strerror or err})") from None


def _run_owning(path: Path) -> Path | None:
    """The run directory ``path`` is one of the files of (config, checkpoints ...), if any."""
    from leanseg.files.run_dir import MARKER, owned_kind

    try:
        absolute = path.parent.resolve() / path.name
    except OSError:  # a loop of links: no run is found there either
        return None
    for run in (absolute.parent, absolute.parent.parent):
        if (run / MARKER).is_file() and owned_kind(absolute.relative_to(run)) is not None:
            return run
    return None


def _first_file_above(path: Path) -> Path:
    """The nearest folder of ``path`` that is a file (why ``path`` cannot be written)."""
    for parent in path.parents:
        if parent.is_file():
            return parent
    return path.parent
