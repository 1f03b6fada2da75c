"""Small file helpers: every file leanseg writes appears whole or not at all."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], *, fsync: bool = False
) -> Path:
    """Write through ``write(handle)`` to a temporary file beside ``path``, then rename it over.

    A crash or exception at any moment leaves either the old file or the new one, never a torn
    one, and no temporary file behind (on exceptions). ``fsync`` also flushes the data to disk
    before the rename, for files whose loss would cost work (checkpoints).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened with the usual permissions (unlike mkstemp's 0600): outputs are meant to be shared.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))
