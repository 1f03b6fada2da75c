"""Where the report may be written: the rule of :mod:`leanseg.files.outputs`, for one HTML file.

An existing ``--out`` is refused without ``--force``; ``--force`` replaces only a previous
report, recognised by the ``generator`` meta tag :mod:`leanseg.report.html` writes near its top,
never a folder, a link, a file a run directory is made of (its config, metrics log,
checkpoints, marker) or any other file. The file is written atomically
(:func:`leanseg.files.atomic.atomic_write`): a reader sees the old report or the new one, and an
error, Ctrl-C or SIGTERM midway leaves no temporary file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leanseg.config import ConfigError
from leanseg.files import outputs
from leanseg.files.run_dir import owned_kind
from leanseg.report.html import GENERATOR

# The generator tag lies within the first few hundred bytes of a report.
_HEAD_BYTES = 2048


def is_report(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link) that ``leanseg report`` wrote."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR} ' in head


# What ``--force`` may replace at ``--out`` (leanseg.files.outputs).
REPORT = outputs.OutputKind("an HTML report of leanseg report", is_report)


def check_output(out: Path, runs: Sequence[Path], *, force: bool) -> None:
    """Refuse ``out`` before any work is done; writes nothing.

    Raises:
        ConfigError: naming ``out``, when it is a folder or a file of one of ``runs``; when it
            exists, without ``force``; with ``force``, when it is not a previous report.
    """
    if out.is_dir() and not out.is_symlink():
        raise ConfigError(f"--out {out} is a folder; name the HTML file to write")
    for run in runs:
        try:
            relative = out.resolve().relative_to(run.resolve())
        except ValueError:
            continue
        if owned_kind(relative) is not None:
            raise ConfigError(
                f"--out {out} is a file of the run {run}; choose another name (not even "
                "--force replaces it)"
            )
    outputs.check_output_path(out, REPORT, force=force, flag="--out")


def write_output(out: Path, document: str, *, force: bool) -> Path:
    """Write the report atomically (creating its folder), checking ``out`` once more."""
    data = document.encode()
    return outputs.write_output(
        out, REPORT, lambda handle: handle.write(data), force=force, flag="--out"
    )
