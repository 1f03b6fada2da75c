"""Where the report may be written: never over a file leanseg did not write, unless forced.

The same standard as ``leanseg predict`` and ``data convert``, for one file: a previous report
is recognised by the ``generator`` meta tag :mod:`leanseg.report.html` writes near its top, and
only such a file is replaced without ``--force``. Even with ``--force``, the report never
replaces a folder, nor a file a run directory is made of (its config, metrics log, checkpoints,
marker), which would lose the run. The file is written atomically
(:func:`leanseg.utils.atomic_write_text`): a reader sees the old report or the new one, and a
symlink in the way is replaced, not followed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leanseg.config import ConfigError
from leanseg.engine.run_dir import owned_kind
from leanseg.report.html import GENERATOR
from leanseg.utils import atomic_write_text

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


def check_output(out: Path, runs: Sequence[Path], *, force: bool) -> None:
    """Refuse ``out`` before any work is done; writes nothing.

    Raises:
        ConfigError: naming ``out``, when it is a folder, a file of one of ``runs``, or a file
            leanseg report did not write (without ``force``).
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
    exists = out.exists() or out.is_symlink()
    if exists and not force and not is_report(out):
        raise ConfigError(
            f"--out {out} exists and was not written by leanseg report; move it, choose "
            "another name, or pass --force to replace it"
        )


def write_output(out: Path, document: str) -> Path:
    """Write the report atomically (creating its folder)."""
    try:
        return atomic_write_text(out, document)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write it ({err.strerror or err})") from None
