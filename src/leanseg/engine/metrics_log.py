"""Where a run's records go: ``metrics.jsonl`` in the run directory and TensorBoard scalars."""

from __future__ import annotations

import time
from typing import Any

from leanseg.engine.run_dir import RunDirectory


class MetricsLog:
    """Appends records (``{"iteration": ..., "split": ..., ...}``) to the run's ``metrics.jsonl``
    with a ``time`` stamp, and their numbers to TensorBoard when it is installed (an optional
    extra) as ``{split}/{key}``. Writes nothing when ``enabled`` is false (non-main ranks).
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
            split = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("iteration", "time"):
                    self._tensorboard.add_scalar(f"{split}/{key}", value, record["iteration"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _tensorboard_writer(run_dir: RunDirectory) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(run_dir.root))
