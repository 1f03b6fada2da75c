"""What a run directory holds, read for the report: config, logged metrics, checkpoints.

Nothing here builds a model or imports matplotlib. A run still in progress (no checkpoint yet,
or a metrics log cut by a kill) is read as far as it goes; the report says what is missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leanseg.config import ConfigError, safe_yaml
from leanseg.files.run_dir import RunDirectory


@dataclass
class RunLog:
    """One run directory as logged by ``leanseg train``.

    Attributes:
        name: how the report names the run (:func:`run_name`, or the name given).
        path: the run directory.
        config: the raw ``config.yaml`` (a dict; values as the user wrote or resolved them).
        train: the ``"split": "train"`` records of ``metrics.jsonl``, in order.
        val: the ``"split": "val"`` records, in order.
        checkpoint: ``checkpoints/best.pt``, else ``last.pt``, else None.
    """

    name: str
    path: Path
    config: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None

    @property
    def model_name(self) -> str:
        """``backbone + context + head`` names from the config, e.g. ``resnet18 + ladder``."""
        model = self.config.get("model") or {}
        parts = []
        for key in ("backbone", "context", "head"):
            part = model.get(key) if isinstance(model, dict) else None
            if isinstance(part, dict) and part.get("name"):
                parts.append(str(part["name"]))
        return " + ".join(parts) or "?"

    @property
    def datasets(self) -> list[str]:
        """The names of the datasets the run trained on: each ``data.datasets`` entry's name (or
        dataset) for a multi-dataset run, else ``data.dataset``; empty when the config says none."""
        data = self.config.get("data") or {}
        if not isinstance(data, dict):
            return []
        entries = data.get("datasets")
        if isinstance(entries, list):
            names = [e.get("name") or e.get("dataset") for e in entries if isinstance(e, dict)]
            return [str(name) for name in names if name]
        return [str(data["dataset"])] if data.get("dataset") else []

    @property
    def dataset(self) -> str:
        """:attr:`datasets` as one name, e.g. ``camvid + em``; ``?`` when there is none."""
        return " + ".join(self.datasets) or "?"

    @property
    def iterations(self) -> int | None:
        """The last iteration logged."""
        records = [r.get("iteration") for r in (*self.train, *self.val)]
        numbers = [r for r in records if isinstance(r, int)]
        return max(numbers) if numbers else None

    @property
    def best_val(self) -> dict[str, Any] | None:
        """The logged validation record with the highest mIoU (what ``best.pt`` holds)."""
        scored = [r for r in self.val if _finite(r.get("miou"))]
        return max(scored, key=lambda r: r["miou"]) if scored else None

    def curve(self, split: str, key: str) -> tuple[list[int], list[float]]:
        """Iterations and values of ``key`` in the records of ``split`` that have it."""
        records = self.train if split == "train" else self.val
        points = [
            (r["iteration"], float(r[key]))
            for r in records
            if isinstance(r.get("iteration"), int) and _finite(r.get(key))
        ]
        return [p[0] for p in points], [p[1] for p in points]

    def loss_terms(self) -> list[str]:
        """The logged loss names: ``loss`` (the sum) first, then its terms, as logged."""
        names: list[str] = []
        for record in self.train:
            names += [k for k in record if k.startswith("loss") and k not in names]
        return sorted(names, key=lambda k: (k != "loss", names.index(k)))


def read_run(path: str | Path, name: str | None = None) -> RunLog:
    """Read a run directory.

    Raises:
        ConfigError: naming the folder, when it is not a run directory of ``leanseg train``
            (no ``config.yaml``) or its config is not readable YAML.
    """
    run = RunDirectory(path)
    if not run.root.is_dir():
        raise ConfigError(f"run directory not found: {run.root}")
    if not run.config_path.is_file():
        raise ConfigError(
            f"{run.root} is not a run directory of leanseg train (it has no config.yaml)"
        )
    try:
        config = safe_yaml.load_file(run.config_path) or {}
    except (yaml.YAMLError, UnicodeDecodeError, safe_yaml.YAMLFileTooLarge) as err:
        raise ConfigError(f"{run.config_path} is not readable YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{run.config_path} does not hold a mapping")
    records = run.read_metrics()
    checkpoint = next((p for p in (run.best_checkpoint, run.last_checkpoint) if p.is_file()), None)
    return RunLog(
        name=name or run_name(run.root),
        path=run.root,
        config=config,
        train=[r for r in records if r.get("split") == "train"],
        val=[r for r in records if r.get("split") == "val"],
        checkpoint=checkpoint,
    )


def run_name(path: Path) -> str:
    """How the report names a run folder: its path relative to the working directory when it
    lies below it, else its absolute path. The folder's name alone can say little: the demo's
    run folder is called ``run``, and a heading read "Run: run"."""
    folder = path.resolve()
    try:
        relative = folder.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(folder)
    return str(relative) if relative.parts else folder.name


def read_bench_json(path: str | Path) -> dict[str, Any]:
    """A ``leanseg bench --json`` result.

    Raises:
        ConfigError: naming the file, when it is missing, not JSON, or lacks the numbers the
            report shows.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--bench-json {path}: file not found") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"--bench-json {path}: not readable JSON ({err})") from None
    needed = ("parameters", "gflops", "latency_median_ms", "input_shape")
    missing = [key for key in needed if not isinstance(data, dict) or key not in data]
    if missing:
        raise ConfigError(
            f"--bench-json {path}: not a leanseg bench result (missing {', '.join(missing)})"
        )
    return data


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
