"""What hangs on the training loop: small hooks, each with one job (detectron2's hooks).

:meth:`leanseg.training.trainer.Trainer.train` runs the optimisation steps and, after each, calls
its hooks in order with a :class:`Step`. A hook decides *when* (its interval, the last step) and
calls the piece that does the work, passed in: the metrics log, the BN recompute, the evaluation,
the checkpoint writer. The trainer's order matters: log the step, recompute BN statistics on the
last step, evaluate, then write ``last.pt`` (which then holds the evaluated state);
:func:`build_hooks` puts them in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from leanseg.config import TrainConfig
from leanseg.metrics.semantic import SegmentationScores
from leanseg.runtime.cpu_share import ThreadGovernor
from leanseg.training.metrics_log import MetricsLog


@dataclass
class Step:
    """The step the loop has just finished.

    Attributes:
        iteration: steps done so far (1 after the first).
        max_iters: where the run ends.
        logs: loss terms and learning rate of the step, averaged over ranks.
        progress: the run's progress display (hooks may add their own tasks to it).
    """

    iteration: int
    max_iters: int
    logs: dict[str, float]
    progress: Progress | None = None

    @property
    def last(self) -> bool:
        return self.iteration == self.max_iters

    def due(self, interval: int) -> bool:
        """Every ``interval`` steps, and on the last one."""
        return self.iteration % interval == 0 or self.last


class Hook:
    """Base of the hooks: ``after_step`` does nothing unless overridden."""

    def after_step(self, step: Step) -> None:
        """Called after every optimisation step."""


class LogTrainStep(Hook):
    """Writes the step's losses and learning rate every ``interval`` steps and on the last
    (``split: train``)."""

    def __init__(self, log: MetricsLog, interval: int) -> None:
        self.log = log
        self.interval = interval

    def after_step(self, step: Step) -> None:
        if step.due(self.interval):
            self.log.write({"iteration": step.iteration, "split": "train", **step.logs})


class RecomputeBNStatistics(Hook):
    """On the last step, before the final evaluation: BN statistics as exact averages over
    ``num_batches`` training batches (thesis 4.6.1); nothing when ``num_batches`` is 0."""

    def __init__(self, recompute: Callable[[int], None], num_batches: int) -> None:
        self.recompute = recompute
        self.num_batches = num_batches

    def after_step(self, step: Step) -> None:
        if step.last and self.num_batches > 0:
            self.recompute(self.num_batches)


class Evaluate(Hook):
    """Every ``interval`` steps and on the last: ``validate(progress)``."""

    def __init__(
        self, validate: Callable[[Progress | None], SegmentationScores], interval: int
    ) -> None:
        self.validate = validate
        self.interval = interval

    def after_step(self, step: Step) -> None:
        if step.due(self.interval):
            self.validate(step.progress)


class Checkpoint(Hook):
    """Every ``interval`` steps and on the last: ``save(path)`` (the latest training state)."""

    def __init__(self, save: Callable[[Path], None], path: Path, interval: int) -> None:
        self.save = save
        self.path = path
        self.interval = interval

    def after_step(self, step: Step) -> None:
        if step.due(self.interval):
            self.save(self.path)


class BalanceThreads(Hook):
    """``train.num_threads: auto``: lets the governor resize torch's thread pool to the cores
    other processes leave free, and records each change (``split: threads``) and says it."""

    def __init__(
        self, governor: ThreadGovernor, log: MetricsLog, say: Callable[[str], None]
    ) -> None:
        self.governor = governor
        self.log = log
        self.say = say

    def after_step(self, step: Step) -> None:
        change = self.governor.update()
        if change is None:
            return
        old, new = change
        others = self.governor.others_busy
        self.log.write(
            {
                "iteration": step.iteration,
                "split": "threads",
                "threads": new,
                "others_busy_cores": round(others, 2),
            }
        )
        self.say(
            f"threads {old} -> {new}: other processes keep {others:.1f} of "
            f"{self.governor.cores} cores busy"
        )


def build_hooks(
    train_cfg: TrainConfig,
    *,
    metrics: MetricsLog,
    validate: Callable[[Progress | None], SegmentationScores],
    recompute_bn_statistics: Callable[[int], None],
    save: Callable[[Path], None],
    last_checkpoint: Path,
    thread_governor: ThreadGovernor | None = None,
    say: Callable[[str], None] = print,
) -> list[Hook]:
    """The hooks of a configured run, in the order they must run: balance the threads (with a
    ``thread_governor``), log the step (``train.log_interval``), recompute BN statistics on the
    last step (``train.bn_recompute_batches``), evaluate (``train.eval_interval``), then save
    ``last_checkpoint`` (``train.checkpoint_interval``). ``say`` tells of thread changes."""
    hooks: list[Hook] = [
        LogTrainStep(metrics, train_cfg.log_interval),
        RecomputeBNStatistics(recompute_bn_statistics, train_cfg.bn_recompute_batches),
        Evaluate(validate, train_cfg.eval_interval),
        Checkpoint(save, last_checkpoint, train_cfg.checkpoint_interval),
    ]
    if thread_governor is not None:
        hooks.insert(0, BalanceThreads(thread_governor, metrics, say))
    return hooks
