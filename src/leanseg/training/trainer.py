"""Iteration-based training with periodic evaluation, atomic checkpoints and exact resume.

The training step (:meth:`Trainer.run_step`) fits on one screen and :meth:`Trainer.train` is the
loop around it; logging, the final BN recompute, evaluation and checkpointing hang on the loop as
small hooks (:mod:`.hooks`), each calling the piece that does the work: :mod:`.metrics_log`,
:mod:`.bn_statistics`, :func:`~leanseg.evaluation.evaluator.evaluate`, the checkpoint state below
(:mod:`.rng_state`). The trainer receives its parts built (:mod:`.parts`);
:meth:`Trainer.from_config` builds those of a configured run, after setting up device, threads
and seeds (:mod:`.runtime`). What a configured run guarantees:

- with ``train.ema_decay``, validation, ``best.pt`` and the checkpoints' ``model`` are the
  moving average of the weights (:mod:`.weight_average`), and training continues from its own;
- same seed -> same loss curve on CPU (sample order and augmentation are functions of the seed and
  the sample's position, see :mod:`leanseg.training.sampling`);
- ``--resume`` continues the same schedule and gives the same next loss as the uninterrupted run
  (model, optimizer, gradient scaler and RNG states are in the checkpoint);
- checkpoints are written atomically, so a killed run loses at most the work since the last one
  (and ``--resume`` or a rerun recovers from a kill at any moment, see :mod:`.run_dir`);
- checkpoints hold tensors and plain values only, and are read with ``weights_only=True``;
- a NaN or infinite loss stops the run, naming the iteration and the last good checkpoint;
- one process at a time writes a run directory (:mod:`.folder_lock`), and nothing is written to
  it before the whole request is checked, the model built and a resumed checkpoint loaded.
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn
from torch.utils.data import Dataset

from leanseg.config import Config
from leanseg.data import dataset_classes
from leanseg.data.base import DatasetError
from leanseg.data.cache import cache_in_memory
from leanseg.data.transforms import input_statistics
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.files.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from leanseg.files.folder_lock import FolderLock
from leanseg.files.run_dir import RunDirectory, RunDirError
from leanseg.inference.model_inputs import check_dataset_inputs
from leanseg.metrics.semantic import SegmentationScores, percent_scores
from leanseg.nn.heads.base import EvaluationHook
from leanseg.nn.segmentor import Segmentor
from leanseg.runtime import distributed
from leanseg.runtime.process import seed_everything, select_device, set_up_device
from leanseg.structures.labels import IGNORE_INDEX
from leanseg.training import bn_statistics
from leanseg.training.hooks import Hook, Step, build_hooks
from leanseg.training.metrics_log import MetricsLog
from leanseg.training.parts import (
    TrainingParts,
    build_datasets,
    build_loss_module,
    build_optimizer,
    build_scaler,
    build_schedule,
    build_thread_governor,
    build_train_batches,
    model_to_train,
    prepare_model,
)
from leanseg.training.prefetch import Prefetcher
from leanseg.training.progress import DEFAULT_EVERY_SECONDS, TrainProgress, say, validation_line
from leanseg.training.rng_state import rng_state, set_rng_state
from leanseg.training.weight_average import WeightAverage
from leanseg.version import __version__

# select_device and seed_everything live in .runtime; the CLI imports them from here.
__all__ = ["Trainer", "TrainingError", "TrainResult", "select_device", "seed_everything"]


T = TypeVar("T")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class TrainResult:
    """What a finished run reports (``best_miou`` a fraction in ``[0, 1]``, as the scores)."""

    run_dir: Path
    iteration: int
    final_scores: SegmentationScores | None
    best_miou: float | None
    seconds: float


class Trainer:
    """Trains a model, built with its data and optimizer (:class:`~.parts.TrainingParts`), into
    a run directory; :meth:`from_config` builds the parts of a configured run.

    ``cfg.train`` and ``cfg.eval`` set how it trains and evaluates, ``cfg.data`` the ignore
    index and the image statistics of validation; the checkpoints carry ``cfg``.

    Besides :class:`Segmentor`, a model of another family with the same surface (``forward``,
    ``losses``, ``backbone``, ``num_classes``) trains too, e.g.
    :class:`~leanseg.nn.scale_selection.ScaleSelectionSegmentor`; one that declares
    :class:`~leanseg.nn.segmentor.ExtraInputs` gets them from the samples (every sample tensor
    reaches ``losses`` as a target). The checkpoints' ``cfg.model`` describes a hand-built model
    only if it was built from it; load their weights into the same hand-built model.

    Args:
        cfg: resolved configuration (:func:`leanseg.models.load_run_config`).
        parts: what it trains with; ``parts.run_dir`` is written from the first hook on.
        iteration: steps already done (a resumed run's, else 0).
        best: the best validation score so far (``{"metric", "value", "iteration"}``), if any.
        hooks: what runs after every step (:mod:`.hooks`); ``None`` for those of a configured
            run (:meth:`hooks`).
        console: where progress and messages go; ``None`` for the default console (stderr).
        show_progress: draw the live progress bar when ``console`` is a terminal; elsewhere, or
            when false, progress is a plain line every ``log_seconds`` (:mod:`.progress`).
            Non-main ranks show nothing.
        log_seconds: seconds between two plain progress lines; the first and the last
            iteration and every validation are always printed.
    """

    def __init__(
        self,
        cfg: Config,
        parts: TrainingParts,
        *,
        iteration: int = 0,
        best: dict[str, Any] | None = None,
        hooks: Sequence[Hook] | None = None,
        console: Console | None = None,
        show_progress: bool = True,
        log_seconds: float = DEFAULT_EVERY_SECONDS,
    ) -> None:
        self.cfg = cfg
        self.device = parts.device
        self.is_main = distributed.is_main_process()
        self.run_dir = parts.run_dir
        self._lock = parts.lock
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress and self.is_main
        self.log_seconds = log_seconds
        self.class_names = parts.class_names
        self.num_classes = len(self.class_names)
        self.train_batches = parts.train_batches
        self.val_set = parts.val_set
        self.model = parts.model
        self.loss_module = parts.loss_module
        self.optimizer = parts.optimizer
        self.scaler = parts.scaler
        self.use_amp = parts.scaler.is_enabled()
        self.schedule = parts.schedule
        self.metrics = parts.metrics
        self.thread_governor = parts.thread_governor
        self.weight_average = parts.weight_average
        self._hooks = None if hooks is None else list(hooks)
        self.iteration = iteration
        self.best = best
        self._latest_scores: SegmentationScores | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        model: Segmentor | nn.Module | None = None,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        resume: bool = False,
        force: bool = False,
        console: Console | None = None,
        show_progress: bool = True,
        log_seconds: float = DEFAULT_EVERY_SECONDS,
    ) -> Trainer:
        """The trainer of the run ``cfg`` describes, into the run directory ``cfg.work_dir``.

        By default the model is ``build_model(cfg)`` and the datasets are the splits of
        ``cfg.data``; a model or datasets passed in are trained and evaluated instead, so a
        hand-built :class:`Segmentor` trains like a configured one. Rank 0 locks the run
        directory first; the whole request is checked, the parts built and a resumed
        checkpoint loaded before anything is written to it. A start that fails lets go of
        the lock at once, leaving no trace.

        Args:
            cfg: resolved configuration (:func:`leanseg.models.load_run_config`).
            model: the model to train (see the class), predicting the classes of
                ``cfg.data``; ``None`` builds ``cfg.model``. The datasets are checked for the
                extra inputs it declares.
            train_set: training samples (as ``build_dataset(..., train=True)`` gives them);
                ``None`` builds ``cfg.data.train_split``.
            val_set: validation samples; ``None`` builds ``cfg.data.val_split``.
            resume: continue from ``work_dir/checkpoints/last.pt``.
            force: replace an existing run in ``work_dir`` (or resume despite a changed config,
                ``train.optimizer`` excepted; :mod:`.run_dir` says which keys may change
                anyway).
            console, show_progress, log_seconds: as for the constructor.
        """
        device = set_up_device(cfg.train)
        run_dir = RunDirectory(cfg.work_dir)
        lock = _lock_run_directory(run_dir, device)
        console = console or Console(stderr=True)
        say = console.print if distributed.is_main_process() else _say_nothing
        try:
            given = (model, train_set, val_set)
            parts, iteration, best = _build_run(
                cfg, device, run_dir, lock, *given, resume=resume, force=force, say=say
            )
            return cls(
                cfg,
                parts,
                iteration=iteration,
                best=best,
                console=console,
                show_progress=show_progress,
                log_seconds=log_seconds,
            )
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    # ------------------------------------------------------------------ parts

    @property
    def train_set(self) -> Dataset:
        """The training samples (those of :attr:`train_batches`)."""
        return self.train_batches.dataset

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless stream of training batches, starting where the run currently is."""
        return self.train_batches.stream(self.iteration)

    def hooks(self) -> list[Hook]:
        """What runs after every step, in order: those passed in, else those of a configured
        run (:func:`~.hooks.build_hooks`)."""
        if self._hooks is not None:
            return list(self._hooks)
        return build_hooks(
            self.cfg.train,
            metrics=self.metrics,
            validate=self.validate,
            recompute_bn_statistics=self.recompute_bn_statistics,
            save=self._save,
            last_checkpoint=self.run_dir.last_checkpoint,
            thread_governor=self.thread_governor,
            say=self.console.print if self.is_main else _say_nothing,
        )

    # ------------------------------------------------------------------ step

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(images, targets)`` of a loader batch on the training device."""
        images = batch["image"].to(self.device, non_blocking=True)
        targets = {
            key: value.to(self.device, non_blocking=True)
            for key, value in batch.items()
            if isinstance(value, torch.Tensor) and key != "image"
        }
        return images, targets

    def run_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step; returns the loss terms and the learning rate."""
        lr = self.schedule(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        images, targets = self._to_device(batch)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            terms = self.loss_module(images, targets)
            loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise _NonFiniteLoss(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.weight_average is not None:
            self.weight_average.update(self.model)
        self.iteration += 1
        logs = {name: float(value.detach()) for name, value in terms.items()}
        logs["loss"] = float(loss.detach())
        logs["lr"] = lr
        return logs

    # ------------------------------------------------------------------ loop

    def train(self) -> TrainResult:
        """Run to ``train.max_iters``, calling :meth:`hooks` after every step; then let go of
        the run directory (:meth:`close`)."""
        if self._lock is not None:
            self._lock.acquire()  # again, after an earlier train() or close()
        train_cfg = self.cfg.train
        start_time = time.perf_counter()
        self._latest_scores = None
        hooks = self.hooks()
        if self.thread_governor is not None:
            self.thread_governor.start()
        batches = self._batches()
        self.model.train()
        display = TrainProgress(
            self.console,
            max_iters=train_cfg.max_iters,
            start=self.iteration,
            live=self.show_progress,
            every_seconds=self.log_seconds,
            enabled=self.is_main,
        )
        with display:
            while self.iteration < train_cfg.max_iters:
                step_start = time.perf_counter()
                try:
                    logs = self.run_step(next(batches))
                except _NonFiniteLoss as err:
                    raise TrainingError(self._nan_message(err.value)) from None
                logs = distributed.mean_across_processes(logs, self.device)
                display.step(self.iteration, logs, time.perf_counter() - step_start)
                step = Step(self.iteration, train_cfg.max_iters, logs, display.bar)
                for hook in hooks:
                    hook.after_step(step)
        if isinstance(batches, Prefetcher):
            batches.close()
        self.metrics.close()
        distributed.barrier()
        self.close()
        return TrainResult(
            run_dir=self.run_dir.root,
            iteration=self.iteration,
            final_scores=self._latest_scores,
            best_miou=None if self.best is None else self.best["value"],
            seconds=time.perf_counter() - start_time,
        )

    def validate(self, progress: Progress | None = None) -> SegmentationScores:
        """Evaluate on the validation split, log it and keep ``best.pt`` up to date.

        The ``split: val`` record of ``metrics.jsonl`` holds the scores as fractions
        (:meth:`SegmentationScores.to_dict`, the confusion matrix left out) and, as printed,
        ``miou_percent`` and ``iou_percent`` (class name -> IoU %,
        :func:`~leanseg.metrics.semantic.percent_scores`); the summary line goes to the console.
        """
        started = time.perf_counter()
        task = None
        if progress is not None:
            task = progress.add_task("eval", total=None, status="")

        def on_batch(done: int, total: int) -> None:
            if progress is not None and task is not None:
                progress.update(task, completed=done, total=total)

        evaluators = default_evaluators(
            self.model,
            num_classes=self.num_classes,
            boundary_width=self.cfg.eval.boundary_width,
            ignore_index=self.cfg.data.ignore_index,
        )
        with self._evaluated_weights():
            scores = evaluate(
                self.model,
                self.val_set,
                evaluators,
                eval_cfg=self.cfg.eval,
                device=self.device,
                on_batch=on_batch,
                image_statistics=input_statistics(self.cfg.data),
            )
        if progress is not None and task is not None:
            progress.remove_task(task)
        self.model.train()
        record = {"iteration": self.iteration, "split": "val", **scores.to_dict()}
        record.pop("confusion", None)
        record.update(percent_scores(scores, self.class_names))
        self.metrics.write(record)
        # Heads that adapt to validation results (QGN A.2 class weighting) are told of them.
        if isinstance(self.model, Segmentor) and isinstance(self.model.head, EvaluationHook):
            self.model.head.on_evaluation(scores.iou)
        # A NaN mIoU (no labelled pixel was scored) is never a best: best.pt keeps a real score.
        if math.isfinite(scores.miou) and (self.best is None or scores.miou > self.best["value"]):
            self.best = {"metric": "miou", "value": float(scores.miou), "iteration": self.iteration}
            self._save(self.run_dir.best_checkpoint)
        self._latest_scores = scores
        if self.is_main:
            seconds = time.perf_counter() - started
            line = validation_line(
                self.iteration, self.cfg.train.max_iters, scores, self.best, seconds
            )
            say(self.console, line)
        return scores

    def recompute_bn_statistics(self, num_batches: int) -> None:
        """BN statistics as exact averages over ``num_batches`` training batches, drawn from
        where the run is (:func:`~leanseg.training.bn_statistics.recompute_bn_statistics`)."""
        source = self._batches()
        batches = (self._to_device(batch) for batch in source)
        with self._evaluated_weights():  # those of the averaged weights, with train.ema_decay
            bn_statistics.recompute_bn_statistics(self.model, batches, num_batches)
        if isinstance(source, Prefetcher):
            source.close()

    # ------------------------------------------------------------------ bookkeeping

    def close(self) -> None:
        """Let go of the run directory's lock (:mod:`.folder_lock`), so that another process
        may write the run; :meth:`train` does at its end. Until then, or until this process
        ends, other processes are refused the run directory."""
        if self._lock is not None:
            self._lock.release()

    def _evaluated_weights(self) -> AbstractContextManager[None]:
        """The model holds the weights that are evaluated and saved as ``model`` inside: the
        moving average with ``train.ema_decay``, else its own."""
        if self.weight_average is None:
            return nullcontext()
        return self.weight_average.applied(self.model)

    def _weights(self) -> dict[str, Any]:
        """The checkpoint's weights: ``model`` is what evaluation used (the average with
        ``train.ema_decay``, then ``training_model`` holds the weights training goes on from)."""
        state = self.model.state_dict()
        if self.weight_average is None:
            return {"model": state}
        return {
            "model": {**state, **self.weight_average.average},
            "training_model": state,
            "weight_average": self.weight_average.state_dict(),
        }

    def _state(self) -> dict[str, Any]:
        return {
            **self._weights(),
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "rng": rng_state(),
            "leanseg_version": __version__,
        }

    def _save(self, path: Path) -> None:
        if not self.is_main:
            return
        try:
            save_checkpoint(self._state(), path)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            kept = f"the previous {path.name} is intact" if path.is_file() else "nothing replaced"
            raise TrainingError(
                f"{err.strerror or 'disk full'} while writing {path} at iteration "
                f"{self.iteration}: the checkpoint was not written ({kept}, its temporary file "
                "removed); free some space, then continue with leanseg train CONFIG --resume"
            ) from None

    def _nan_message(self, value: float) -> str:
        step = self.iteration + 1
        last = self.run_dir.last_checkpoint
        if last.is_file():
            try:
                saved = load_checkpoint(last).get("iteration")
            except CheckpointError:
                saved = "unreadable"
            return (
                f"loss is {value} at iteration {step}; stopped. Last good checkpoint: {last} "
                f"(iteration {saved}); resume with --resume --force after lowering train.lr"
            )
        return f"loss is {value} at iteration {step}; stopped. No checkpoint was written yet"


# ---------------------------------------------------------------------- a configured run


def _say_nothing(message: str) -> None:
    """Where the messages of non-main ranks go."""


def _lock_run_directory(run_dir: RunDirectory, device: torch.device) -> FolderLock | None:
    """Rank 0's hold on ``run_dir``, taken before its first look at the folder: no other process
    checks or writes the run until this one lets go (at the end of :meth:`Trainer.train`, or
    :meth:`Trainer.close`). ``None`` on the other ranks, which write nothing."""
    if not distributed.is_main_process():
        _on_main_then_agree(lambda: None, device)
        return None
    lock = FolderLock(run_dir.root, "leanseg train")
    _on_main_then_agree(lock.acquire, device)
    return lock


def _build_run(
    cfg: Config,
    device: torch.device,
    run_dir: RunDirectory,
    lock: FolderLock | None,
    model: Segmentor | nn.Module | None,
    train_set: Dataset | None,
    val_set: Dataset | None,
    *,
    resume: bool,
    force: bool,
    say: Callable[[str], None],
) -> tuple[TrainingParts, int, dict[str, Any] | None]:
    """The parts of the run ``cfg`` describes, with the iteration and best score it starts
    from: the whole request checked, the parts built and a resumed checkpoint loaded before
    ``run_dir`` is written (:meth:`Trainer.from_config`)."""
    # Refused here, before anything is built: a run directory that cannot take this run, or
    # a resumed config that differs in a key that may not change.
    is_main = distributed.is_main_process()
    plan = _on_main_then_agree(
        lambda: run_dir.check(cfg, resume=resume, force=force) if is_main else None, device
    )
    seed_everything(cfg.train.seed)
    class_names = dataset_classes(cfg.data)
    train_set, val_set = _checked_datasets(cfg, train_set, val_set)
    model = model_to_train(cfg, model, num_classes=len(class_names), resume=resume)
    _check_model_inputs(model, cfg, train_set, val_set)
    distributed.barrier()
    resume_from = run_dir.resume_checkpoint() if resume else None
    model = prepare_model(model, cfg.train, device, say=say)
    loss_module = build_loss_module(model, cfg.train, device)
    optimizer = build_optimizer(model, cfg.train)
    scaler = build_scaler(cfg.train, device)
    average = None if cfg.train.ema_decay is None else WeightAverage(model, cfg.train.ema_decay)
    iteration, best = 0, None
    if resume_from is not None:
        iteration, best = _restore(
            resume_from, model, optimizer, scaler, average, cfg=cfg, device=device
        )
        say(f"resumed from {resume_from} at iteration {iteration}")
    # Everything is checked and built, a resumed checkpoint loaded: only now is the run
    # directory written (MetricsLog may open TensorBoard's file in it).
    _write_run_directory(run_dir, plan, cfg, resumed=resume_from is not None, at=iteration, say=say)
    parts = TrainingParts(
        device=device,
        model=model,
        loss_module=loss_module,
        train_batches=build_train_batches(cfg, train_set, device),
        val_set=val_set,
        class_names=class_names,
        optimizer=optimizer,
        scaler=scaler,
        schedule=build_schedule(cfg.train),
        run_dir=run_dir,
        metrics=MetricsLog(run_dir, enabled=is_main),
        lock=lock,
        thread_governor=build_thread_governor(cfg.train, device),
        weight_average=average,
    )
    return parts, iteration, best


def _checked_datasets(
    cfg: Config, train_set: Dataset | None, val_set: Dataset | None
) -> tuple[Dataset, Dataset]:
    """The run's datasets (:func:`~.parts.build_datasets`), each refused if every label pixel is
    ignored; the training samples kept in memory with ``data.cache``."""
    train_set, val_set = build_datasets(cfg, train_set, val_set)
    for dataset, split in ((train_set, cfg.data.train_split), (val_set, cfg.data.val_split)):
        _refuse_all_ignored(dataset, split, cfg)
    if cfg.data.cache:
        train_set = cache_in_memory(train_set)
    return train_set, val_set


def _check_model_inputs(
    model: nn.Module, cfg: Config, train_set: Dataset, val_set: Dataset
) -> None:
    """Refuse datasets without an input the model needs (disparity for scale selection),
    naming the dataset, the split and the key."""
    for dataset, split in ((train_set, cfg.data.train_split), (val_set, cfg.data.val_split)):
        where = f"data.dataset {cfg.data.dataset!r} (split {split!r})"
        check_dataset_inputs(model, dataset, name=where)


def _write_run_directory(
    run_dir: RunDirectory,
    plan: Any,
    cfg: Config,
    *,
    resumed: bool,
    at: int,
    say: Callable[[str], None],
) -> None:
    """Carry out rank 0's ``plan`` for the run directory (:meth:`RunDirectory.carry_out`,
    telling its notes) and record a resume at iteration ``at``; nothing without a plan."""
    if plan is None:
        return
    for note in run_dir.carry_out(plan, cfg):
        say(note)
    if resumed:
        run_dir.commit_resume(cfg, at)


# ---------------------------------------------------------------------- resume


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    average: WeightAverage | None,
    *,
    cfg: Config,
    device: torch.device,
) -> tuple[int, dict[str, Any] | None]:
    """Load the training state of ``path`` into the model, optimizer, scaler and weight
    average and set the random states; returns the iteration and the best score it holds. The
    caller then writes the run directory.

    A checkpoint with a weight average (``training_model`` beside ``model``) gives the model its
    training weights and ``average`` the averaged ones; one without starts ``average`` from the
    model's weights (``train.ema_decay`` set on resuming)."""
    payload = load_checkpoint(path, map_location=device)
    if "optimizer" not in payload or "iteration" not in payload:
        raise CheckpointError(f"{path}: holds weights only, no training state to resume")
    _check_training_state(payload, path)
    averaged = "training_model" in payload
    load_model_state(model, payload["training_model" if averaged else "model"], path)
    if average is not None and averaged:
        updates = (payload.get("weight_average") or {}).get("updates", 0)
        average.load(model.state_dict() | payload["model"], updates)
    elif average is not None:
        average.load(model.state_dict(), 0)
    # (config.yaml says so too, but a run of an older leanseg may not have one)
    saved = (payload.get("config") or {}).get("train", {}).get("optimizer")
    if saved not in (None, cfg.train.optimizer):
        raise CheckpointError(
            f"{path}: holds the state of optimizer {saved!r}, not of train.optimizer "
            f"{cfg.train.optimizer!r}; train.optimizer cannot change on --resume"
        )
    _load_optimizer_state(optimizer, payload["optimizer"], path)
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    iteration = int(payload["iteration"])
    best = _usable_best(payload.get("best"))
    set_rng_state(payload.get("rng") or {})
    return iteration, best


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path
) -> None:
    """Load the optimizer's state (moments, steps) but keep its configured hyperparameters: a
    ``--resume --force`` may change weight_decay, momentum or backbone_lr_mult, and
    config.yaml then says the new values."""
    configured = [
        {key: value for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as err:  # other parameter groups (e.g. other frozen layers)
        raise CheckpointError(
            f"{path}: its optimizer state does not fit this model's trainable parameters ({err})"
        ) from None
    for group, settings in zip(optimizer.param_groups, configured, strict=True):
        group.update(settings)


def _check_training_state(payload: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose training-state entries have the wrong types, naming the entry
    (a hand-edited or foreign file), before any of it is loaded.

    Raises:
        CheckpointError: naming the file, the entry, what it holds and what it should.
    """

    def refuse(entry: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: entry {entry!r} is a {type(value).__name__} ({str(value)[:40]!r}), "
            f"expected {expected}; not a checkpoint this version of leanseg wrote"
        )

    for entry in ("model", "training_model"):
        state = payload.get(entry)
        if state is None and entry == "training_model":
            continue  # saved without train.ema_decay
        if not isinstance(state, dict):
            raise refuse(entry, state, "a state dict (parameter name -> tensor)")
        for name, value in state.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                raise refuse(f"{entry}.{name}", value, "a tensor")
    iteration = payload.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise refuse("iteration", iteration, "an integer >= 0")
    for entry in ("optimizer", "scaler", "rng", "weight_average"):
        value = payload.get(entry)
        if value is not None and not isinstance(value, dict):
            raise refuse(entry, value, "a mapping")
    updates = (payload.get("weight_average") or {}).get("updates", 0)
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        raise refuse("weight_average.updates", updates, "an integer >= 0")
    best = payload.get("best")
    if best is not None:
        value = best.get("value") if isinstance(best, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse("best", best, "{metric, value: a number, iteration}")


def _usable_best(best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``best`` entry of a resumed checkpoint, or ``None`` for a NaN or infinite score (an
    older leanseg saved NaN mIoU as best): no score would beat it, so ``best.pt`` would never be
    written again."""
    if best is None or not math.isfinite(best["value"]):
        return None
    return best


class RefusedOnMainRank(RunDirError):
    """Rank 0 refused the run (its own message says why); the other ranks stop too."""


def _on_main_then_agree(step: Callable[[], T], device: torch.device) -> T:
    """Run ``step`` (rank 0's check of the run folder, or any step only rank 0 takes), then let
    every rank know whether it failed, so that no rank waits at a barrier for one that stopped.

    Rank 0 re-raises its own error; the others raise :class:`RefusedOnMainRank`. Without
    ``torch.distributed`` this is ``step()``.
    """
    error: BaseException | None = None
    result = None
    try:
        result = step()
    except Exception as err:  # noqa: BLE001 - told to every rank, then raised as it was
        error = err
    if distributed.broadcast_flag(error is not None, device):
        if error is not None:
            raise error
        raise RefusedOnMainRank("rank 0 refused this run (its message says why)")
    return result  # type: ignore[return-value]


def _refuse_all_ignored(dataset: Dataset, split: str, cfg: Config) -> None:
    """Refuse a split in which every label pixel is ignored, before anything is written.

    Training on it gives a loss of 0 and evaluating it an mIoU of NaN. The labels are read
    until one holds a labelled pixel: the first one in any usable dataset.

    Raises:
        DatasetError: naming the split, the sample count and the ignore values.
    """
    if _has_labelled_pixel(dataset, cfg.data.ignore_index) is not False:
        return
    ignored = sorted({IGNORE_INDEX, cfg.data.ignore_index})
    raise DatasetError(
        f"split {split!r} of data.dataset {cfg.data.dataset!r}: every label pixel of its "
        f"{len(dataset)} sample(s) is ignored (values {ignored}), so there is nothing to "
        "train on or score; check the label files, data.label_colors and data.ignore_index "
        "(leanseg data check CONFIG shows the label values)"
    )


def _has_labelled_pixel(dataset: Any, ignore_index: int) -> bool | None:
    """Whether some label of ``dataset`` has a pixel that is neither 255 nor ``ignore_index``;
    ``None`` for a dataset that cannot be read sample by sample without augmentation."""
    parts = getattr(dataset, "parts", None)
    if isinstance(parts, list | tuple):
        answers = [_has_labelled_pixel(part, ignore_index) for part in parts]
        return True if True in answers else (None if None in answers else False)
    load_raw = getattr(dataset, "load_raw", None)
    if load_raw is None:
        return None
    for index in range(len(dataset)):
        label = load_raw(index).get("label")
        if not isinstance(label, np.ndarray):
            return None
        if np.any((label != IGNORE_INDEX) & (label != ignore_index)):
            return True
    return False


class _NonFiniteLoss(Exception):
    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value
