"""The run directory ``leanseg train`` writes, and the guards around reusing one.

Layout::

    RUN/
      .leanseg-run         marker: a small JSON leanseg writes when it creates the run
      config.yaml          resolved config: ``leanseg train RUN/config.yaml`` reproduces the run;
                           input paths absolute, and relative to RUN under ``relative_paths``
      metrics.jsonl        one JSON object per log or evaluation line
      checkpoints/last.pt  latest training state (atomic writes)
      checkpoints/best.pt  best validation mIoU so far
      events.*             TensorBoard events, when tensorboard is installed
      .leanseg-lock        while a process writes the run: its lock, and who holds it
      .leanseg-lock.json   (:mod:`.folder_lock`; the holder removes both when it ends)

Only a folder holding the marker is a leanseg run. ``--force`` removes from it only the names in
the layout above (and leanseg's temporary files), never the folder itself, never anything else,
and never through a symlink; in a folder without the marker it deletes nothing.

Everything is checked before anything is written (:meth:`RunDirectory.check`, then
:meth:`RunDirectory.carry_out` once the trainer has built all it needs): a request that fails
leaves the folder as it was, and a new run's folder appears only once the run can start.

``--resume`` continues under the run's own config. Of the run's ``config.yaml`` only these keys
may change, as none of them is part of the state the checkpoint holds (:data:`RESUMABLE_KEYS`):
how long the schedule runs (``train.max_iters``; the learning rate follows the new schedule from
the resumed iteration on), how often the run logs, evaluates and saves (``train.log_interval``,
``train.eval_interval``, ``train.checkpoint_interval``), how it evaluates (``eval.*``) and how many
threads and loader workers it uses (``train.num_threads``, ``data.num_workers``; samples do not
depend on them), and where the run folder is (``work_dir``, for a run moved with its folder).
Any other difference is refused, naming each key with its value in the run and now; ``--force``
resumes anyway, except for the keys the checkpoint cannot go on with (:data:`FIXED_ON_RESUME`:
``train.optimizer``, whose saved state belongs to the run's optimizer), which a new run must
change.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml

from leanseg.config import Config, safe_yaml, saved_config
from leanseg.config.paths import RELATIVE_PATHS_KEY, RUN_MARKER, resolve_file_paths
from leanseg.files.atomic import atomic_write_text, is_temp_of
from leanseg.files.folder_lock import LOCK_NAMES
from leanseg.version import __version__

MARKER = RUN_MARKER
_ROOT_FILES = (MARKER, "config.yaml", "metrics.jsonl")
_CHECKPOINT_FILES = ("last.pt", "best.pt")
_EVENTS_PREFIX = "events.out.tfevents."
_LEGACY_METRICS_TEMP = "metrics.jsonl.tmp"  # the temporary name of leanseg <= 0.x

# Config keys that may differ from the run's config.yaml on --resume; a key ending in "." stands
# for every key below it. None of them is part of the state a checkpoint holds, and none changes
# the samples (see the module docstring).
RESUMABLE_KEYS = (
    "train.max_iters",
    "train.eval_interval",
    "train.checkpoint_interval",
    "train.log_interval",
    "train.num_threads",
    "data.num_workers",
    "eval.",
    "work_dir",
)
# Keys that cannot change on --resume even with --force: the checkpoint holds state that fits
# only their value in the run (an Adam state does not drive SGD).
FIXED_ON_RESUME = ("train.optimizer",)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (holds another run, nothing to resume)."""


@dataclass(frozen=True)
class RunPlan:
    """What :meth:`RunDirectory.carry_out` does, as :meth:`RunDirectory.check` decided it.

    ``create``: a new run in an empty or missing folder; ``restart``: a run that holds no
    checkpoint yet, started again; ``replace``: a run replaced (``--force``); ``resume``: nothing
    until :meth:`RunDirectory.commit_resume`.
    """

    action: Literal["create", "restart", "replace", "resume"]


def may_change_on_resume(key: str) -> bool:
    """Whether the dotted config key may differ from the run's on ``--resume``."""
    return any(
        key.startswith(allowed) if allowed.endswith(".") else key == allowed
        for allowed in RESUMABLE_KEYS
    )


class RunDirectory:
    """Paths of one run and the checks made before writing into it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def marker_path(self) -> Path:
        return self.root / MARKER

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def is_run(self) -> bool:
        """Whether the folder carries the marker leanseg writes when it creates a run."""
        return _is_regular_file(self.marker_path)

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint ``--resume`` continues from: ``last.pt``, else ``best.pt``.

        ``best.pt`` stands in only when a kill hit the first write of ``last.pt`` (an evaluation
        writes ``best.pt`` just before); both hold the whole training state.
        """
        for path in (self.last_checkpoint, self.best_checkpoint):
            if _is_regular_file(path):
                return path
        return None

    def prepare(self, cfg: Config, *, resume: bool, force: bool) -> list[str]:
        """Create the directory for a new run, or check it for ``--resume``: :meth:`check`,
        then :meth:`carry_out`.

        Returns:
            Notes for the user (a restarted run, files ``--force`` left in place).
        """
        return self.carry_out(self.check(cfg, resume=resume, force=force), cfg)

    def check(self, cfg: Config, *, resume: bool, force: bool) -> RunPlan:
        """Decide what starting ``cfg`` in this directory does, or refuse it; writes nothing.

        For ``--resume`` the plan writes nothing either: :meth:`commit_resume` writes the config
        once the checkpoint has loaded. A run that holds no checkpoint yet (killed before its
        first one) is started again from iteration 0, by a plain rerun or by ``--resume``. The
        lock files of :mod:`.folder_lock` do not count as contents of the folder.

        Raises:
            RunDirError: resuming with no checkpoint; resuming with a config that differs in a
                key that may not change (see the module docstring); a new run into a directory
                that already holds a run (without ``force``); a non-empty directory without the
                marker (nothing is ever deleted from one); a run whose files ``force`` would
                remove include a symlink or something that is not what leanseg writes there.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"output directory {self.root} is a file, not a folder")
        occupied = self.root.is_dir() and any(
            entry.name not in LOCK_NAMES for entry in self.root.iterdir()
        )
        if resume and occupied and self.resume_checkpoint() is not None:
            self._check_resumable(cfg, force)
            return RunPlan("resume")
        if not occupied:
            if resume:
                raise RunDirError(
                    f"--resume: no checkpoint to resume from at {self.last_checkpoint}"
                )
            return RunPlan("create")
        if not self.is_run():
            raise RunDirError(self._not_a_run_message(resume))
        if self.resume_checkpoint() is None:
            self._survey()
            return RunPlan("restart")
        if not force:
            raise RunDirError(
                f"output directory {self.root} already holds a run; pass --resume to "
                "continue it or --force to replace it"
            )
        self._survey()
        return RunPlan("replace")

    def carry_out(self, plan: RunPlan, cfg: Config) -> list[str]:
        """Write what :meth:`check` planned: for a new run the marker, ``config.yaml`` and
        ``checkpoints/`` (after removing the run it replaces); nothing for ``resume``.

        Returns:
            Notes for the user (a restarted run, files ``--force`` left in place).
        """
        if plan.action == "resume":
            return []
        kept = self.clear() if plan.action in ("restart", "replace") else []
        self._create(cfg)
        if plan.action == "restart":
            return [f"{self.root} held a run with no checkpoint yet; started it again"] + kept
        return kept

    def commit_resume(self, cfg: Config, iteration: int) -> None:
        """After the checkpoint loaded: mark the run, save the config, drop what it lacks.

        Removes the temporary files of killed writes and the log lines past ``iteration``.
        """
        if not self.is_run():  # a run made before leanseg wrote markers
            self._write_marker()
        self.remove_stale_temp_files()
        atomic_write_text(self.config_path, _config_yaml(cfg, self.root))
        self.truncate_metrics(iteration)

    def clear(self) -> list[str]:
        """Remove every file leanseg writes in a run, and nothing else; keep the folder.

        Checks everything before deleting anything: a leanseg name that is a symlink or not a
        regular file is an error and nothing is deleted. The lock files stay: their holder
        removes them (:mod:`.folder_lock`).

        Returns:
            One note naming the other files left in place, or nothing.
        """
        owned, foreign = self._survey()
        for path in owned:
            path.unlink()
        if _is_dir(self.checkpoint_dir) and not any(self.checkpoint_dir.iterdir()):
            self.checkpoint_dir.rmdir()
        if not foreign:
            return []
        listed = ", ".join(sorted(foreign)[:3]) + (" ..." if len(foreign) > 3 else "")
        return [f"kept {len(foreign)} files in {self.root} that leanseg did not write: {listed}"]

    def _survey(self) -> tuple[list[Path], list[str]]:
        """The files :meth:`clear` removes, and the names of the others it leaves.

        Raises:
            RunDirError: a leanseg name is a symlink or not what leanseg writes there.
        """
        owned: list[Path] = []
        foreign: list[str] = []
        conflicts: list[str] = []
        for entry in _entries(self.root):
            relative = entry.relative_to(self.root)
            kind = owned_kind(relative)
            if relative.name in LOCK_NAMES and len(relative.parts) == 1:
                continue
            if kind is None:
                foreign.append(str(relative))
            elif not _has_kind(entry, kind):
                conflicts.append(str(relative))
            elif kind == "file":
                owned.append(entry)
        if conflicts:
            raise RunDirError(
                f"{self.root}: {conflicts[0]} is a symlink or not what leanseg writes there; "
                "remove it yourself (nothing was deleted)"
            )
        return owned, foreign

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files of writes that were killed before their rename.

        Only regular files named as :func:`leanseg.files.atomic.atomic_write` names its temporary
        files for the run's own files (and the metrics temporary name of older versions).
        """
        stale = []
        for folder, names in ((self.root, _ROOT_FILES), (self.checkpoint_dir, _CHECKPOINT_FILES)):
            if not _is_dir(folder):
                continue
            for path in folder.iterdir():
                temp = any(is_temp_of(path.name, name) for name in names)
                if folder == self.root and path.name == _LEGACY_METRICS_TEMP:
                    temp = True
                if temp and _is_regular_file(path):
                    path.unlink()
                    stale.append(path)
        return stale

    def _check_resumable(self, cfg: Config, force: bool) -> None:
        """Refuse a config that differs from the run's in a key that may not change."""
        if not _is_regular_file(self.config_path):
            return
        # Paths as reading each file makes them (absolute), so that the same data compares equal
        # however the two configs name it.
        try:
            saved = resolve_file_paths(self._saved_config(), self.config_path)
        except RunDirError:
            if force:
                return
            raise
        except ValueError as err:
            if force:
                return
            raise RunDirError(f"--resume: {self.config_path}: {err}") from None
        current = saved_config(cfg, self.root)
        current.pop(RELATIVE_PATHS_KEY, None)
        differences = [
            difference
            for difference in _config_differences(saved, current)
            if not may_change_on_resume(difference[0])
        ]
        fixed = [key for key, _, _ in differences if key in FIXED_ON_RESUME]
        if not differences or (force and not fixed):
            return
        listed = "; ".join(
            f"{key}: {_shown(old)} in the run, {_shown(new)} now" for key, old, new in differences
        )
        message = f"--resume: the config differs from the run's {self.config_path}: {listed}. "
        if fixed:
            raise RunDirError(
                message + f"{', '.join(fixed)} cannot change on resume, not even with --force "
                "(the checkpoint holds the state of the run's optimizer); start a new run in "
                "another work_dir to change it"
            )
        allowed = ", ".join(key + "*" if key.endswith(".") else key for key in RESUMABLE_KEYS)
        raise RunDirError(
            message + f"Only {allowed} may change on resume; pass --force to resume with the "
            "other changes anyway"
        )

    def _not_a_run_message(self, resume: bool) -> str:
        if resume:
            return f"--resume: no checkpoint to resume from at {self.last_checkpoint}"
        if _is_regular_file(self.config_path):
            return (
                f"output directory {self.root} holds a config.yaml but no {MARKER} marker, so "
                "it is not a leanseg run and nothing in it is replaced; choose another work_dir "
                "(a run of an older leanseg with a checkpoint continues with --resume)"
            )
        return (
            f"output directory {self.root} is not empty and is not a leanseg run; "
            "choose another work_dir"
        )

    def _create(self, cfg: Config) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_marker()  # first, so that a kill at any later moment leaves a marked run
        self.checkpoint_dir.mkdir(exist_ok=True)
        atomic_write_text(self.config_path, _config_yaml(cfg, self.root))

    def _write_marker(self) -> None:
        # Written in place, not atomically: a torn marker still marks the run, while a kill
        # before an atomic rename would leave a folder holding only a temporary file.
        marker = {"leanseg_version": __version__, "created": round(time.time(), 3)}
        self.marker_path.write_text(json.dumps(marker) + "\n")

    def _saved_config(self) -> dict[str, Any]:
        try:
            return safe_yaml.load_file(self.config_path) or {}
        except (yaml.YAMLError, UnicodeDecodeError, safe_yaml.YAMLFileTooLarge):
            raise RunDirError(f"--resume: {self.config_path} is not readable YAML") from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def truncate_metrics(self, iteration: int) -> None:
        """Drop log lines past ``iteration`` (written after the checkpoint a run resumes from).

        Lines that are not whole JSON objects (torn by a kill during their write) go too.
        """
        if not self.metrics_path.is_file():
            return
        kept = [
            line
            for line in self.metrics_path.read_text(errors="replace").splitlines()
            if (record := _parse_record(line)) is not None
            and record.get("iteration", 0) <= iteration
        ]
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged records, skipping a line torn by a kill."""
        if not self.metrics_path.is_file():
            return []
        lines = self.metrics_path.read_text(errors="replace").splitlines()
        return [record for line in lines if (record := _parse_record(line)) is not None]


def _config_yaml(cfg: Config, folder: Path) -> str:
    return yaml.safe_dump(saved_config(cfg, folder), sort_keys=False)


def _parse_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def owned_kind(relative: PurePath) -> str | None:
    """``"file"`` / ``"dir"`` for the names leanseg writes in a run, else ``None``."""
    parts = relative.parts
    if len(parts) == 1:
        name = parts[0]
        if name == "checkpoints":
            return "dir"
        owned = (
            name in _ROOT_FILES
            or name in LOCK_NAMES
            or name == _LEGACY_METRICS_TEMP
            or name.startswith(_EVENTS_PREFIX)
            or any(is_temp_of(name, target) for target in _ROOT_FILES)
        )
        return "file" if owned else None
    if len(parts) == 2 and parts[0] == "checkpoints":
        name = parts[1]
        owned = name in _CHECKPOINT_FILES or any(
            is_temp_of(name, target) for target in _CHECKPOINT_FILES
        )
        return "file" if owned else None
    return None


def _entries(root: Path) -> list[Path]:
    """The entries of ``root`` and of its ``checkpoints`` folder (unless that is a symlink)."""
    found = list(root.iterdir())
    if _is_dir(root / "checkpoints"):
        found += list((root / "checkpoints").iterdir())
    return found


def _has_kind(path: Path, kind: str) -> bool:
    return _is_regular_file(path) if kind == "file" else _is_dir(path)


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_ABSENT = object()  # a key one of two configs lacks


def _config_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for every leaf where the two differ; a key
    one config lacks counts as ``None`` there (a run saved before the key existed)."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _config_differences(a, b, dotted + ".")
        elif a != b:
            differences.append((dotted, saved.get(key, _ABSENT), current.get(key, _ABSENT)))
    return differences


def _shown(value: Any) -> str:
    """A config value as a message shows it (JSON, cut short)."""
    if value is _ABSENT:
        return "absent"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
