"""The run directory ``leanseg train`` writes, and the guards around reusing one.

Layout::

    RUN/
      config.yaml          resolved config: ``leanseg train RUN/config.yaml`` reproduces the run
      metrics.jsonl        one JSON object per log or evaluation line
      checkpoints/last.pt  latest training state (atomic writes)
      checkpoints/best.pt  best validation mIoU so far
      events.*             TensorBoard events, when tensorboard is installed
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from leanseg.config import Config, save_config


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (holds another run, nothing to resume)."""


class RunDirectory:
    """Paths of one run and the checks made before writing into it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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

    def prepare(self, cfg: Config, *, resume: bool, force: bool) -> None:
        """Create the directory for a new run, or check it for ``--resume``.

        Raises:
            RunDirError: resuming with no ``last.pt``; resuming with a different config; a new
                run into a directory that already holds a run (without ``force``); ``force`` on
                a non-empty directory that is not a leanseg run (never deleted).
        """
        if resume:
            if not self.last_checkpoint.is_file():
                raise RunDirError(
                    f"--resume: no checkpoint to resume from at {self.last_checkpoint}"
                )
            if self.config_path.is_file():
                differences = _config_differences(self._saved_config(), cfg.to_dict())
                if differences and not force:
                    raise RunDirError(
                        f"--resume: config differs from the run's {self.config_path} at "
                        f"{', '.join(differences[:5])} (pass --force to resume anyway)"
                    )
            save_config(cfg, self.config_path)
            return
        if self.root.exists() and any(self.root.iterdir()):
            if not self.config_path.is_file():
                raise RunDirError(
                    f"output directory {self.root} is not empty and is not a leanseg run; "
                    "choose another work_dir"
                )
            if not force:
                raise RunDirError(
                    f"output directory {self.root} already holds a run; pass --resume to "
                    "continue it or --force to replace it"
                )
            shutil.rmtree(self.root)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config_path)

    def _saved_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text()) or {}

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def truncate_metrics(self, iteration: int) -> None:
        """Drop log lines past ``iteration`` (written after the checkpoint a run resumes from)."""
        if not self.metrics_path.is_file():
            return
        kept = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("iteration", 0) <= iteration
        ]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.metrics_path)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]


def _config_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[str]:
    keys = sorted(set(saved) | set(current))
    differences = []
    for key in keys:
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _config_differences(a, b, dotted + ".")
        elif a != b:
            differences.append(dotted)
    return differences
