"""Threads that follow the cores other processes leave free (``leanseg.runtime.cpu_share``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from leanseg.config import TrainConfig
from leanseg.models import run_config_from_dict
from leanseg.runtime.cpu_share import (
    CpuTimes,
    ThreadGovernor,
    busy_cores_of_others,
    free_cores,
    read_cpu_times,
)
from leanseg.training.hooks import BalanceThreads, Step
from leanseg.training.trainer import Trainer

LINUX_PROC = Path("/proc/stat").exists() and hasattr(os, "sched_getaffinity")


@pytest.fixture
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _stat_line(pid: int, command: str, ppid: int, utime: int, stime: int) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    return f"{pid} ({command}) R {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0\n"


def test_reads_busy_time_of_allowed_cpus_and_own_time_with_children(tmp_path: Path) -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    allowed = sorted(os.sched_getaffinity(0))
    outside = max(allowed) + 1
    tick = os.sysconf("SC_CLK_TCK")
    lines = ["cpu  999 999 999 999 999 999 999 999 0 0\n"]  # the all-CPU total: not summed
    for index in allowed:
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{index} 10 1 5 1000 7 2 3 4 50 0\n")
    lines.append(f"cpu{outside} 500 500 500 0 0 0 0 0 0 0\n")  # not ours: not counted
    (tmp_path / "stat").write_text("".join(lines) + "intr 1 2 3\n")
    for pid, command, ppid, utime, stime in [
        (100, "python (main) x", 1, 30, 10),  # this process; its name holds ") "
        (101, "pt_data_worker", 100, 20, 5),  # a data-loader worker: ours
        (102, "other", 1, 900, 900),  # someone else's
        (103, "grandchild", 101, 7, 7),  # a child of the worker: not direct, not counted
    ]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_stat_line(pid, command, ppid, utime, stime))
    (tmp_path / "self").mkdir()  # not a pid: skipped

    times = read_cpu_times(tmp_path, pid=100)

    assert times is not None
    busy_per_cpu = 10 + 1 + 5 + 2 + 3 + 4  # iowait, idle and guest excluded
    assert times.busy == pytest.approx(len(allowed) * busy_per_cpu / tick)
    assert times.own == pytest.approx((30 + 10 + 20 + 5) / tick)


def test_unreadable_proc_gives_none(tmp_path: Path) -> None:
    assert read_cpu_times(tmp_path / "missing", pid=1) is None
    (tmp_path / "stat").write_text("cpu0 1 2 3 4 5 6 7 8\n")
    assert read_cpu_times(tmp_path, pid=4242) is None  # no such process


def test_busy_cores_of_others_subtracts_own_time() -> None:
    before = CpuTimes(wall=10.0, busy=100.0, own=40.0)
    after = CpuTimes(wall=12.0, busy=103.0, own=41.0)  # 3 s busy in 2 s, 1 s of it ours
    assert busy_cores_of_others(before, after) == pytest.approx(1.0)
    assert busy_cores_of_others(after, after) == 0.0  # no time passed
    # Clock ticks are coarse: own time can run ahead of the busy total; never negative.
    assert busy_cores_of_others(before, CpuTimes(12.0, 100.5, 41.0)) == 0.0


@pytest.mark.parametrize(
    ("cores", "others", "expected"),
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 1.6, 1), (2, 3.0, 1), (8, 2.4, 6)],
)
def test_free_cores_counts_a_core_taken_from_half_busy(
    cores: int, others: float, expected: int
) -> None:
    assert free_cores(cores, others) == expected


class FakeMachine:
    """Clocks advanced by hand: ``run(seconds, others_cores)`` lets time pass."""

    def __init__(self) -> None:
        self.now = CpuTimes(wall=0.0, busy=0.0, own=0.0)
        self.reads = 0
        self.threads: list[int] = []

    def read(self) -> CpuTimes:
        self.reads += 1
        return self.now

    def run(self, seconds: float, others_cores: float, own_cores: float = 1.5) -> None:
        busy = (others_cores + own_cores) * seconds
        self.now = CpuTimes(
            self.now.wall + seconds, self.now.busy + busy, self.now.own + own_cores * seconds
        )

    def governor(self) -> ThreadGovernor:
        return ThreadGovernor(
            2,
            first_check=3.0,
            interval=15.0,
            read=self.read,
            set_threads=self.threads.append,
            clock=lambda: self.now.wall,
        )


def test_governor_follows_other_processes() -> None:
    machine = FakeMachine()
    governor = machine.governor()
    assert governor.start() == 2 and machine.threads == [2] and governor.active

    machine.run(2.0, others_cores=1.0)
    assert governor.update() is None and machine.reads == 1  # before first_check: no read
    machine.run(1.0, others_cores=1.0)
    assert governor.update() == (2, 1)  # another process took a core
    assert machine.threads == [2, 1] and governor.others_busy == pytest.approx(1.0)

    machine.run(14.0, others_cores=0.0)
    assert governor.update() is None and machine.reads == 2  # 15 s between later decisions
    machine.run(1.0, others_cores=0.0)
    assert governor.update() == (1, 2)  # the other process has gone
    assert machine.threads == [2, 1, 2]

    machine.run(15.0, others_cores=0.3)  # light work beside: no change
    assert governor.update() is None and governor.threads == 2 and machine.threads == [2, 1, 2]


def test_governor_does_nothing_where_clocks_cannot_be_read() -> None:
    applied: list[int] = []
    governor = ThreadGovernor(2, read=lambda: None, set_threads=applied.append, clock=lambda: 99.0)
    governor.start()
    assert not governor.active and governor.update() is None and applied == [2]


@pytest.mark.skipif(not LINUX_PROC, reason="reads /proc (Linux)")
def test_real_clocks_see_own_work_as_own_and_an_orphan_busy_loop_as_others() -> None:
    """On this machine: spinning here is own time; a busy process that is not our child is
    somebody else's (the loop's parent exits at once, so it is re-parented)."""
    before = read_cpu_times()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    after = read_cpu_times()
    assert before is not None and after is not None
    assert after.own - before.own > 0.05

    # The loop must not hold the spawner's output pipe, or reading it would wait for the loop.
    spawner = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time\\nend = time.time() + 4\\nwhile time.time() < end: pass'], "
        "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, "
        "start_new_session=True)\n"
        "print(child.pid)\n"
    )
    loop_pid = int(
        subprocess.run(
            [sys.executable, "-c", spawner], capture_output=True, text=True, check=True
        ).stdout
    )
    try:
        time.sleep(0.3)  # the loop's interpreter starts
        before = read_cpu_times()
        time.sleep(1.5)
        after = read_cpu_times()
        assert before is not None and after is not None
        others = busy_cores_of_others(before, after)
        assert others >= 0.7, f"a busy loop measured as {others:.2f} cores of others"
        cores = len(os.sched_getaffinity(0))
        assert free_cores(cores, others) <= max(cores - 1, 1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(loop_pid, 9)


def _tiny_config(tmp_path: Path, num_threads: object) -> object:
    return run_config_from_dict(
        {
            "model": {"backbone": {"name": "ssn_encoder"}, "head": {"name": "bilinear"}},
            "data": {
                "dataset": "synthetic",
                "options": {"num_samples": 4, "size": [32, 64], "seed": 0},
                "crop_size": [32, 64],
                "batch_size": 2,
                "num_workers": 0,
            },
            "train": {
                "optimizer": "adam",
                "max_iters": 3,
                "eval_interval": 3,
                "checkpoint_interval": 3,
                "num_threads": num_threads,
                "device": "cpu",
            },
            "eval": {"max_images": 1},
            "work_dir": str(tmp_path / "run"),
        },
        source="test",
    )


def test_auto_is_the_default_and_a_fixed_count_has_no_governor(
    tmp_path: Path, keep_threads: None
) -> None:
    cfg = _tiny_config(tmp_path, "auto")
    assert TrainConfig().num_threads == "auto"
    trainer = Trainer.from_config(cfg, show_progress=False)
    assert trainer.thread_governor is not None
    assert isinstance(trainer.hooks()[0], BalanceThreads)

    fixed = Trainer.from_config(_tiny_config(tmp_path / "fixed", 1), show_progress=False)
    assert fixed.thread_governor is None and torch.get_num_threads() == 1
    assert not any(isinstance(hook, BalanceThreads) for hook in fixed.hooks())


def test_balance_threads_records_and_says_each_change(tmp_path: Path, keep_threads: None) -> None:
    machine = FakeMachine()
    trainer = Trainer.from_config(_tiny_config(tmp_path, "auto"), show_progress=False)
    governor = machine.governor()
    said: list[str] = []
    hook = BalanceThreads(governor, trainer.metrics, said.append)
    governor.start()
    machine.run(3.0, others_cores=1.0)
    hook.after_step(Step(iteration=7, max_iters=10, logs={}))
    machine.run(1.0, others_cores=1.0)
    hook.after_step(Step(iteration=8, max_iters=10, logs={}))  # not due: nothing new
    trainer.metrics.close()

    records = [
        line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line
    ]
    assert len(records) == 1 and '"split": "threads"' in records[0]
    assert '"threads": 1' in records[0] and '"iteration": 7' in records[0]
    assert said == ["threads 2 -> 1: other processes keep 1.0 of 2 cores busy"]
