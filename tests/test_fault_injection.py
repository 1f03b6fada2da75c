"""Fault injection: ``leanseg train`` killed with SIGKILL at random moments and inside checkpoint
writes, then resumed, must lose nothing.

After every kill the run must hold a loadable checkpoint to go on from; after the last resume it
must hold no temporary file and its losses and evaluations must equal those of an uninterrupted
run. Runs are tiny (SSN encoder, 32x64 synthetic scenes, 12 iterations, one thread) and go
through ``leanseg.cli.main`` in processes of their own, forked from a server that has imported
torch once (a fresh interpreter spends seconds on imports); kills inside writes use the
``LEANSEG_KILL_IN_WRITE`` hook of :mod:`leanseg.files.atomic`. ``LEANSEG_FAULT_SEED`` picks other
random kill moments. ``benchmarks/robustness/fault_injection.py`` runs more faults through the real
``leanseg`` command.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from leanseg.files.atomic import KILL_IN_WRITE_ENV
from leanseg.files.checkpoint import load_checkpoint
from leanseg.files.run_dir import RunDirectory
from leanseg.models import load_run_config
from leanseg.training.trainer import Trainer

pytestmark = pytest.mark.slow

CONFIG = {
    "model": {"backbone": {"name": "ssn_encoder"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 8, "size": [32, 64], "seed": 0},
        "crop_size": [32, 64],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {
        "optimizer": "adam",
        "lr": 0.002,
        "max_iters": 12,
        "eval_interval": 4,
        "checkpoint_interval": 4,
        "log_interval": 1,
        "seed": 0,
        "num_threads": 1,
    },
    "eval": {"max_images": 2, "boundary_width": 2},
}
SEED = int(os.environ.get("LEANSEG_FAULT_SEED", "0"))


def write_config(tmp_path: Path) -> Path:
    raw = {**CONFIG, "work_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_PRELOAD = ["torch", "torch._dynamo", "leanseg.cli", "leanseg.training.trainer", __name__]


class Training:
    """``leanseg train CONFIG --no-progress ARGS`` in a process of its own; output to a file."""

    def __init__(self, config: Path, *args: str, kill_in_write: str | None = None) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        self.log = config.parent / f"train-{time.monotonic_ns()}.log"
        argv = ["train", str(config), "--no-progress", *args]
        self.process = context.Process(target=_cli, args=(argv, str(self.log), kill_in_write))
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=30)


def _cli(argv: list[str], log: str, kill_in_write: str | None) -> None:
    """Child side of :class:`Training`: the CLI with the fault hook, exiting with its status."""
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop(KILL_IN_WRITE_ENV, None)
    if kill_in_write:
        os.environ[KILL_IN_WRITE_ENV] = kill_in_write
    from leanseg.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def train(config: Path, *args: str, kill_in_write: str | None = None) -> Training:
    return Training(config, *args, kill_in_write=kill_in_write)


def finish(training: Training) -> tuple[int, str]:
    training.process.join(timeout=120)
    output = training.log.read_text(errors="replace") if training.log.exists() else ""
    return training.process.exitcode, output


def kill_at_random(process: Training, run: RunDirectory, rng: random.Random) -> bool:
    """SIGKILL once training has (re)started, after a random delay; False if it ended first."""
    started = run.metrics_path.stat().st_mtime if run.metrics_path.exists() else 0.0
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if run.metrics_path.exists() and run.metrics_path.stat().st_mtime != started:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.0))
    if process.poll() is not None:
        return False
    process.kill()
    return True


def records(run: RunDirectory) -> list[dict]:
    """The log without timestamps, in file order."""
    return [{k: v for k, v in r.items() if k != "time"} for r in run.read_metrics()]


def assert_resumable(run: RunDirectory) -> None:
    """After a kill: whatever checkpoint the run resumes from loads and holds a whole state."""
    checkpoint = run.resume_checkpoint()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        assert state["iteration"] in (4, 8, 12) and "optimizer" in state


def assert_same_as_reference(run: RunDirectory, reference: list[dict]) -> None:
    assert records(run) == reference
    assert load_checkpoint(run.last_checkpoint)["iteration"] == 12
    assert not [p.name for p in run.root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """The uninterrupted run's log, trained in this process."""
    threads = torch.get_num_threads()
    cfg = load_run_config(write_config(tmp_path_factory.mktemp("reference")))
    try:
        Trainer.from_config(cfg, show_progress=False).train()
    finally:
        torch.set_num_threads(threads)
    logged = records(RunDirectory(cfg.work_dir))
    assert [r["iteration"] for r in logged if r["split"] == "train"] == list(range(1, 13))
    return logged


def test_kills_in_checkpoint_writes_and_at_random_moments_lose_nothing(tmp_path, reference):
    config = write_config(tmp_path)
    run = RunDirectory(tmp_path / "run")
    rng = random.Random(SEED)

    # 1. Killed inside the first write of last.pt (best.pt, written just before, is whole),
    #    as if in the middle of its last log line too.
    code, output = finish(train(config, kill_in_write="last.pt:1"))
    assert code == -signal.SIGKILL, output
    assert [p.name.startswith(".last.pt.") for p in run.checkpoint_dir.iterdir()].count(True) == 1
    assert_resumable(run)
    with run.metrics_path.open("a") as handle:
        handle.write('{"time": 1.0, "iteration": 5, "split": "tr')

    # 2. Resumed and killed at random moments (training, evaluation or a checkpoint write).
    for _ in range(2):
        process = train(config, "--resume")
        if not kill_at_random(process, run, rng):
            assert finish(process)[0] == 0
            break
        assert_resumable(run)

    # 3. Resumed and killed inside its first write of last.pt, if the run has one left.
    code, output = finish(train(config, "--resume", kill_in_write="last.pt:1"))
    assert code in (0, -signal.SIGKILL), output
    assert_resumable(run)

    # 4. Resumed to the end: the same log as the uninterrupted run, nothing left over.
    code, output = finish(train(config, "--resume"))
    assert code == 0, output
    assert_same_as_reference(run, reference)


def test_kill_in_the_first_checkpoint_write_is_recovered_by_a_plain_rerun(tmp_path, reference):
    config = write_config(tmp_path)
    run = RunDirectory(tmp_path / "run")
    code, output = finish(train(config, kill_in_write="best.pt:1"))
    assert code == -signal.SIGKILL, output
    assert run.resume_checkpoint() is None and run.is_run()
    assert any(p.name.endswith(".tmp") for p in run.checkpoint_dir.iterdir())

    code, output = finish(train(config))
    assert code == 0, output
    assert "started it again" in output
    assert_same_as_reference(run, reference)
