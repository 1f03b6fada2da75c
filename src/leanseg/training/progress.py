"""What a training run shows while it runs: a live bar on a terminal, plain lines anywhere else.

A live progress bar redraws one line in place, which only a terminal can show; under ``nohup``,
in CI or with the output going to a file it would print nothing until the end. So
:class:`TrainProgress` draws the bar only where it can redraw (:func:`can_redraw`: a terminal,
not ``TERM=dumb``) and was asked to; anywhere else (or with ``leanseg train --no-progress``) it
prints one plain line every ``every_seconds``, and always for the first and the last iteration::

    iter 120/2000  loss 0.8123  lr 5.94e-04  0.412 s/iter  eta 12m54s

``s/iter`` is the time of the training steps alone (loading the batch, forward, backward,
update) averaged since the previous line; ``eta`` is the iterations left times the wall-clock
time per iteration since the run (or its resumption) started, so it counts evaluations and
checkpoints too. Each validation adds one summary line in both modes (:func:`validation_line`),
with mIoU in percent, as every number leanseg shows (:func:`leanseg.metrics.semantic.percent`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from leanseg.metrics.semantic import SegmentationScores, format_percent

__all__ = ["TrainProgress", "can_redraw", "format_duration", "say", "validation_line"]

# How often the plain lines come by default: often enough to see a run is alive, rarely enough
# that a day-long run's log stays readable (~3000 lines a day).
DEFAULT_EVERY_SECONDS = 30.0


class TrainProgress:
    """The progress display of one :meth:`~leanseg.training.trainer.Trainer.train` call.

    Use as a context manager around the loop and call :meth:`step` after every step.

    Args:
        console: where the bar or the lines go.
        max_iters: where the run ends.
        start: the iteration the run starts (or resumes) from.
        live: draw the live bar if ``console`` is a terminal; false prints plain lines always.
        every_seconds: seconds between two plain lines (the first and last iterations are
            always printed).
        enabled: false shows nothing at all (non-main ranks of a distributed run).
        clock: seconds from an arbitrary origin (tests pass a fake one).
    """

    def __init__(
        self,
        console: Console,
        *,
        max_iters: int,
        start: int,
        live: bool = True,
        every_seconds: float = DEFAULT_EVERY_SECONDS,
        enabled: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if every_seconds < 0:
            raise ValueError(f"every_seconds must be >= 0, got {every_seconds}")
        self.console = console
        self.max_iters = max_iters
        self.start = start
        self.every_seconds = every_seconds
        self.enabled = enabled
        self.live = enabled and live and can_redraw(console)
        self.clock = clock
        # Always a Progress, so that hooks can add their tasks (evaluation) to it; it draws
        # only in live mode.
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            disable=not self.live,
            transient=False,
        )
        self._task: TaskID | None = None
        self._started_at = 0.0
        self._last_line_at = 0.0
        self._step_seconds = 0.0  # summed since the last line
        self._steps = 0  # since the last line

    def __enter__(self) -> TrainProgress:
        self._task = self.bar.add_task(
            "train", total=self.max_iters, completed=self.start, status=""
        )
        self.bar.start()
        self._started_at = self._last_line_at = self.clock()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.bar.stop()

    def step(self, iteration: int, logs: dict[str, float], seconds: float) -> None:
        """Show the step that brought the run to ``iteration``.

        Args:
            iteration: steps done (1 after the first).
            logs: at least ``loss`` and ``lr``.
            seconds: how long the step took (batch loading included).
        """
        self._step_seconds += seconds
        self._steps += 1
        if self.live and self._task is not None:
            status = f"loss {logs['loss']:.3f} lr {logs['lr']:.2e}"
            self.bar.update(self._task, completed=iteration, status=status)
            return
        if not self.enabled:
            return
        now = self.clock()
        first = iteration == self.start + 1
        if first or iteration >= self.max_iters or now - self._last_line_at >= self.every_seconds:
            say(self.console, self._line(iteration, logs, now))
            self._last_line_at = now
            self._step_seconds, self._steps = 0.0, 0

    def _line(self, iteration: int, logs: dict[str, float], now: float) -> str:
        per_step = self._step_seconds / max(self._steps, 1)
        done = iteration - self.start
        wall_per_step = (now - self._started_at) / max(done, 1)
        eta = format_duration(wall_per_step * (self.max_iters - iteration))
        return (
            f"iter {iteration}/{self.max_iters}  loss {logs['loss']:.4f}  lr {logs['lr']:.2e}  "
            f"{per_step:.3f} s/iter  eta {eta}"
        )


def validation_line(
    iteration: int,
    max_iters: int,
    scores: SegmentationScores,
    best: dict[str, Any] | None,
    seconds: float,
) -> str:
    """One line summing up a validation: mIoU (and boundary mIoU) in percent, the best so far.

    Args:
        iteration: the iteration evaluated.
        max_iters: where the run ends.
        scores: what the evaluation measured.
        best: the trainer's best record (``{"value": miou, "iteration": ...}``), this one included.
        seconds: how long the evaluation took.
    """
    parts = [f"val iter {iteration}/{max_iters}  mIoU {format_percent(scores.miou)} %"]
    if scores.boundary_miou is not None:
        parts.append(f"boundary mIoU {format_percent(scores.boundary_miou)} %")
    parts.append(f"pixel accuracy {format_percent(scores.pixel_accuracy)} %")
    if best is not None:
        parts.append(f"best {format_percent(best['value'])} % (iter {best['iteration']})")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def can_redraw(console: Console) -> bool:
    """Whether a live bar can redraw itself on ``console``: rich's ``is_interactive`` (a
    terminal, not ``TERM=dumb``), and its file a terminal too (or ``TTY_COMPATIBLE=1``), since
    rich also takes ``FORCE_COLOR``, which CI setups set for colour, as a terminal."""
    if not console.is_interactive:
        return False
    if os.environ.get("TTY_COMPATIBLE") == "1":
        return True
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed file
        return False


def say(console: Console, line: str) -> None:
    """Print ``line`` as it is: no markup, no highlighting, never wrapped (a log line)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``12m54s``, ``3h05m``: a duration as a log line shows it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
