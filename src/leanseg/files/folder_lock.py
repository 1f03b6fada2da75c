"""One writer per output folder: an exclusive lock held by the process that writes the folder.

``leanseg train`` holds the lock of its run directory from before its first check of the folder
until the run ends (:class:`~leanseg.training.trainer.Trainer`), ``leanseg predict`` that of its
``--out`` folder while it runs. A second process asking for a folder that is held is refused with
:class:`FolderInUseError`, whose message names the holder. Two files in the folder carry the lock:

- ``.leanseg-lock``, locked with :class:`filelock.FileLock` (``flock`` on Unix). The operating
  system drops the lock when the holding process ends, however it ends (an exception, Ctrl-C, a
  crash, ``kill -9``), so the lock of a dead process is free and the next process takes it over.
- ``.leanseg-lock.json``: who holds the lock (process id, host, command, since when), written as
  soon as the lock is taken. It is read only to name the holder in a refusal; while the lock is
  free it means nothing (a killed holder leaves it behind) and the next holder overwrites it.

The holder removes both files before it unlocks, then the folders it made to hold them if they are
still empty: a process that stops before writing anything leaves the place as it found it. A
process that opened the lock file just before its removal and locks it just after finds it gone
from the folder; filelock then reports the lock as not taken, so that process is refused (run it
again) and never holds a lock file that is no longer there.

Within one process the lock is shared: a :class:`FolderLock` for a folder the process already holds
counts as one more holder, and the lock goes with the last one (or when the process exits). It keeps
processes apart, not threads of one process.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

LOCK_FILE = ".leanseg-lock"
HOLDER_FILE = ".leanseg-lock.json"
LOCK_NAMES = (LOCK_FILE, HOLDER_FILE)


class FolderInUseError(RuntimeError):
    """Another process holds the lock of the folder (the message names it)."""


@dataclass
class _Hold:
    """This process's hold on one folder: the locked file, how many holders share it, and the
    folders made to hold the lock files (innermost first)."""

    lock: FileLock
    holders: int
    made: list[Path]


# Folder (resolved) -> this process's hold on it.
_HOLDS: dict[Path, _Hold] = {}


class FolderLock:
    """The exclusive lock of one output folder, for this process (see the module docstring).

    Use it as a context manager, or call :meth:`acquire` and :meth:`release` (both may be called
    again; only the first call of each acts).

    Args:
        folder: the folder; it and its missing parents are made to hold the lock files. A path
            that exists and is not a folder is left alone and nothing is locked: the caller
            refuses it with its own message.
        command: what holds the folder, for the message of a refused process
            (e.g. ``"leanseg train"``).
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder = Path(folder)
        self.command = command
        self._key: Path | None = None

    @property
    def held(self) -> bool:
        """Whether this lock holds its folder."""
        return self._key is not None

    def acquire(self) -> FolderLock:
        """Take the folder's lock, or raise at once if another process holds it.

        Raises:
            FolderInUseError: another process holds it; the message names the process.
        """
        if self._key is not None:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            return self
        made = _make_folders(self.folder)
        key = self.folder.resolve()
        hold = _HOLDS.get(key)
        if hold is None:
            hold = _take(key, self.folder, self.command, made)
            _HOLDS[key] = hold
        hold.holders += 1
        self._key = key
        return self

    def release(self) -> None:
        """Let go of the folder; the last holder in this process unlocks it."""
        if self._key is None:
            return
        key, self._key = self._key, None
        hold = _HOLDS[key]
        hold.holders -= 1
        if hold.holders == 0:
            del _HOLDS[key]
            _let_go(key, hold)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def read_holder(folder: str | Path) -> dict[str, object] | None:
    """What ``.leanseg-lock.json`` in ``folder`` says of the holder; ``None`` if it says nothing
    readable. Meaningful only while the lock is held."""
    try:
        holder = json.loads((Path(folder) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _take(key: Path, folder: Path, command: str, made: list[Path]) -> _Hold:
    """Lock ``key`` for this process and say so in its holder file."""
    lock = FileLock(str(key / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        _remove_empty(made)
        raise FolderInUseError(_refusal(folder, read_holder(key))) from None
    except BaseException:
        _remove_empty(made)
        raise
    hold = _Hold(lock, 0, made)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "argv": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        # Written in place: a reader that finds it half-written says the holder is unknown.
        (key / HOLDER_FILE).write_text(json.dumps(holder) + "\n")
    except BaseException:
        _let_go(key, hold)
        raise
    return hold


def _let_go(key: Path, hold: _Hold) -> None:
    """Remove the lock files while still holding the lock, unlock, remove the folders made."""
    if hold.lock.is_locked:  # (not when filelock's own exit handler unlocked it first)
        for name in (HOLDER_FILE, LOCK_FILE):
            with suppress(FileNotFoundError):
                (key / name).unlink()
        hold.lock.release()
    _remove_empty(hold.made)


def _refusal(folder: Path, holder: dict[str, object] | None) -> str:
    advice = "wait for it to end or stop it, or choose another folder"
    if holder is None:
        return f"{folder} is in use by another process (it has not said which yet); {advice}"
    where = f"process {holder.get('pid')} on {holder.get('host')}"
    since = f", since {holder['since']}" if holder.get("since") else ""
    argv = f"; command line: {holder['argv']}" if holder.get("argv") else ""
    return (
        f"{folder} is in use by {holder.get('command', 'another leanseg')} ({where}{since}{argv}); "
        f"{advice}"
    )


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; return those made, innermost first."""
    missing = []
    path = folder.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made by another process meanwhile: not ours to remove
            continue
        made.append(path)
    return made[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for path in folders:
        try:
            path.rmdir()
        except OSError:  # not empty (the run was written, or another process uses it) or gone
            return


@atexit.register
def _release_all() -> None:
    """At exit, let go of every folder still held (the system would unlock them anyway; this
    also removes the lock files)."""
    for key in list(_HOLDS):
        _let_go(key, _HOLDS.pop(key))
