"""Small file helpers: every file leanseg writes appears whole or not at all.

Fault injection (tests and ``benchmarks/robustness/fault_injection.py`` only): with the
environment variable ``LEANSEG_KILL_IN_WRITE=NAME:N``, the process kills itself with SIGKILL
during its ``N``-th atomic write of a file called ``NAME`` (e.g. ``last.pt:2``), after half of
the data has reached the temporary file and before the rename, as a power cut or ``kill -9`` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

KILL_IN_WRITE_ENV = "LEANSEG_KILL_IN_WRITE"
_writes_by_name: dict[str, int] = {}


def temp_path(path: Path) -> Path:
    """Where :func:`atomic_write` puts the data for ``path`` before renaming it over."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def is_temp_of(name: str, target: str) -> bool:
    """Whether the file name ``name`` is one of :func:`temp_path`'s names for ``target``."""
    return re.fullmatch(rf"\.{re.escape(target)}\.[0-9a-f]{{8}}\.tmp", name) is not None


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], *, fsync: bool = False
) -> Path:
    """Write through ``write(handle)`` to a temporary file beside ``path``, then rename it over.

    A crash or exception at any moment leaves either the old file or the new one, never a torn
    one, and no temporary file behind (on exceptions, Ctrl-C and SIGTERM, see
    :func:`terminate_raises`; a process killed with SIGKILL leaves its temporary file, which the
    run directory removes on the next start, see
    :meth:`leanseg.files.run_dir.RunDirectory.remove_stale_temp_files`). ``fsync`` also flushes
    the data to disk before the rename, for files whose loss would cost work (checkpoints).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_open(path, fsync=fsync) as handle:
        write(handle)
    return Path(path)


@contextlib.contextmanager
def atomic_open(path: str | Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """:func:`atomic_write` for a writer that pushes its data over time: the block writes into
    the temporary file, which is renamed over ``path`` when the block ends and removed when it
    raises.

    For files written piece by piece as their data is computed (``leanseg predict`` writes its
    PNGs band by band). Several may be open at once; the same rules hold for each.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened with the usual permissions (unlike mkstemp's 0600): outputs are meant to be shared.
    tmp = temp_path(path)
    with terminate_raises():
        try:
            with open(tmp, "xb") as handle:
                yield handle
                _maybe_kill_in_write(path.name, handle)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` instead of ending the process at once.

    So the ``finally`` and ``except BaseException`` clauses that remove temporary files run
    when a command is terminated (``kill``, a job scheduler's time limit), as they do on Ctrl-C;
    the process still ends, with the status a shell gives a terminated one. Only the main thread
    can set a handler, and a handler someone else set (a launcher's) is left alone: there the
    block changes nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def _maybe_kill_in_write(name: str, handle: BinaryIO) -> None:
    """The fault-injection hook described in the module docstring."""
    target = os.environ.get(KILL_IN_WRITE_ENV)
    if not target or target.rpartition(":")[0] != name:
        return
    _writes_by_name[name] = _writes_by_name.get(name, 0) + 1
    if str(_writes_by_name[name]) != target.rpartition(":")[2]:
        return
    handle.flush()
    handle.truncate(handle.tell() // 2)  # half the data written, as when killed mid-write
    os.kill(os.getpid(), signal.SIGKILL)


def read_output_manifest(manifest: Path, tag: str) -> set[str] | None:
    """File names an earlier leanseg command recorded in its output ``manifest``.

    Commands that write into a user's folder (``predict``, ``data convert``) record their outputs
    there first, tagged with ``tag``, and later replace only those. Returns the empty set when
    there is no manifest, and ``None`` when the file is not such a record (or is a link), which
    the caller refuses with its own message.
    """
    if not (manifest.exists() or manifest.is_symlink()):
        return set()
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        manifest.is_symlink()
        or not isinstance(record, dict)
        or record.get("written_by") != tag
        or not isinstance(record.get("files"), list)
    ):
        return None
    return {name for name in record["files"] if isinstance(name, str)}
