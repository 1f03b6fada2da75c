"""The training parts (``training/parts.py``) and hooks (``training/hooks.py``) on their own.

A trainer given parts built by hand with the builders trains exactly as one from
``Trainer.from_config``; :func:`build_hooks` returns the hooks in the order its docstring gives,
and they act in that order on the last step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from leanseg.data import dataset_classes
from leanseg.files.run_dir import RunDirectory
from leanseg.models import run_config_from_dict
from leanseg.runtime.cpu_share import ThreadGovernor
from leanseg.runtime.process import seed_everything, set_up_device
from leanseg.training.hooks import (
    BalanceThreads,
    Checkpoint,
    Evaluate,
    LogTrainStep,
    RecomputeBNStatistics,
    Step,
    build_hooks,
)
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
from leanseg.training.trainer import Trainer

# A ResNet-18 bilinear model on 6 synthetic scenes, 3 steps: a few seconds on the CPU. One
# thread, so that no thread governor changes the arithmetic between the two runs compared.
TINY = {
    "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 6, "size": [64, 96], "seed": 0},
        "crop_size": [64, 64],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {
        "optimizer": "sgd",
        "lr": 0.01,
        "max_iters": 3,
        "eval_interval": 3,
        "checkpoint_interval": 3,
        "log_interval": 1,
        "seed": 3,
        "num_threads": 1,
    },
    "eval": {"max_images": 2, "boundary_width": 2},
}


@pytest.fixture(autouse=True)
def _keep_thread_count() -> Iterator[None]:
    """``train.num_threads: 1`` sets torch's threads for the process; later tests get theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(work_dir: Path):
    return run_config_from_dict({**TINY, "work_dir": str(work_dir)})


def _hand_built_parts(cfg) -> TrainingParts:
    """The parts of ``cfg``'s run from the builders of ``training/parts.py``, in the order
    ``from_config`` builds them (seed first, then datasets, then the model), so that both
    draw the same random numbers."""
    device = set_up_device(cfg.train)
    run_dir = RunDirectory(cfg.work_dir)
    seed_everything(cfg.train.seed)
    class_names = dataset_classes(cfg.data)
    train_set, val_set = build_datasets(cfg, None, None)
    model = model_to_train(cfg, None, num_classes=len(class_names), resume=False)
    model = prepare_model(model, cfg.train, device, say=print)
    run_dir.prepare(cfg, resume=False, force=False)
    return TrainingParts(
        device=device,
        model=model,
        loss_module=build_loss_module(model, cfg.train, device),
        train_batches=build_train_batches(cfg, train_set, device),
        val_set=val_set,
        class_names=class_names,
        optimizer=build_optimizer(model, cfg.train),
        scaler=build_scaler(cfg.train, device),
        schedule=build_schedule(cfg.train),
        run_dir=run_dir,
        metrics=MetricsLog(run_dir, enabled=True),
        thread_governor=build_thread_governor(cfg.train, device),
    )


def _train_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}


def test_hand_built_parts_train_as_from_config(tmp_path):
    """Same losses at every step and the same final weights, to the last bit."""
    configured = Trainer.from_config(_config(tmp_path / "configured"), show_progress=False)
    configured.train()
    cfg = _config(tmp_path / "by_hand")
    by_hand = Trainer(cfg, _hand_built_parts(cfg), show_progress=False)
    result = by_hand.train()

    assert result.iteration == 3
    losses = _train_losses(tmp_path / "configured")
    assert sorted(losses) == [1, 2, 3]
    assert _train_losses(tmp_path / "by_hand") == losses
    ours, theirs = by_hand.model.state_dict(), configured.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name
    assert (tmp_path / "by_hand" / "checkpoints" / "last.pt").is_file()


class _Recorder:
    """Stand-ins for the pieces the hooks call, recording each call in one list."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def validate(self, progress) -> None:
        self.calls.append("validate")

    def recompute(self, num_batches: int) -> None:
        self.calls.append(f"recompute {num_batches}")

    def save(self, path: Path) -> None:
        self.calls.append(f"save {path.name}")

    def write(self, record: dict) -> None:
        self.calls.append(f"log {record['split']}")


class _Governor(ThreadGovernor):
    """A governor that always changes the thread count (1 -> 2) without looking at the CPU."""

    def __init__(self) -> None:
        self.cores, self.others_busy = 2, 0.0

    def update(self) -> tuple[int, int]:
        return 1, 2


def test_build_hooks_returns_the_documented_order(tmp_path):
    """Balance threads (with a governor), log, recompute BN, evaluate, save: each hook holds
    the piece and interval of its own config key."""
    cfg = _config(tmp_path / "run")
    cfg.train.log_interval, cfg.train.eval_interval = 2, 5
    cfg.train.checkpoint_interval, cfg.train.bn_recompute_batches = 7, 4
    recorder = _Recorder()
    pieces = {
        "metrics": recorder,
        "validate": recorder.validate,
        "recompute_bn_statistics": recorder.recompute,
        "save": recorder.save,
        "last_checkpoint": tmp_path / "last.pt",
    }
    hooks = build_hooks(cfg.train, **pieces)
    kinds = [LogTrainStep, RecomputeBNStatistics, Evaluate, Checkpoint]
    assert [type(hook) for hook in hooks] == kinds
    log, recompute, evaluate, checkpoint = hooks
    assert (log.log, log.interval) == (recorder, 2)
    assert (recompute.recompute, recompute.num_batches) == (recorder.recompute, 4)
    assert (evaluate.validate, evaluate.interval) == (recorder.validate, 5)
    assert (checkpoint.save, checkpoint.path, checkpoint.interval) == (
        recorder.save,
        tmp_path / "last.pt",
        7,
    )

    said: list[str] = []
    governed = build_hooks(cfg.train, **pieces, thread_governor=_Governor(), say=said.append)
    assert [type(hook) for hook in governed] == [BalanceThreads, *kinds]
    for hook in governed:  # the last step: every hook acts, in the list's order
        hook.after_step(Step(iteration=10, max_iters=10, logs={"loss": 1.0}))
    assert recorder.calls == ["log threads", "log train", "recompute 4", "validate", "save last.pt"]
    assert said and said[0].startswith("threads 1 -> 2")
