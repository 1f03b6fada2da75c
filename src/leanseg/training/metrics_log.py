"""Where a run's records go: ``metrics.jsonl`` in the run directory and TensorBoard scalars."""

from __future__ import annotations

import time
from typing import Any

from leanseg.files.run_dir import RunDirectory


class MetricsLog:
    """Appends records (``{"iteration": ..., "split": ..., ...}``) to the run's ``metrics.jsonl``
    with a ``time`` stamp, and their numbers to TensorBoard when it is installed (an optional
    extra) as ``{split}/{key}``, and those of a mapping as ``{split}/{key}/{name}`` (per-class
    IoU: ``val/iou_percent/road``). Writes nothing when ``enabled`` is false (non-main ranks).
    """

    def __init__(self, run_dir: RunDirectory, *, enabled: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._tensorboard = _tensorboard_writer(run_dir) if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self.run_dir.append_metrics(record)
        if self._tensorboard is not None:
            split, step = record.get("split", "train"), record["iteration"]
            for tag, value in _scalars(record):
                self._tensorboard.add_scalar(f"{split}/{tag}", value, step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The numbers of ``record`` as ``(tag, value)``: its numeric values, and those of its
    mappings as ``key/name``; lists (the class-indexed ``iou``), ``None`` and flags left out."""
    scalars = []
    for key, value in record.items():
        if key in ("iteration", "time"):
            continue
        if _is_number(value):
            scalars.append((key, value))
        elif isinstance(value, dict):
            scalars += [(f"{key}/{name}", item) for name, item in value.items() if _is_number(item)]
    return scalars


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tensorboard_writer(run_dir: RunDirectory) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(run_dir.root))
