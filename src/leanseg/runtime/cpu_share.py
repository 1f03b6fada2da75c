"""How many CPU threads a run should use while other processes share the machine (issue 16).

torch's intra-op threads spin and then wait for each other at the end of every parallel region.
When another process keeps a core busy, one of the threads waits for its turn on that core and
every operator waits for it: a training step of the demo's model took 405 ms on 2 threads alone
and 1442 ms beside one busy process, while 1 thread went 652 -> 765 ms
(``benchmarks/speed/thread_contention.py``). No fixed count is right in both cases, so
``train.num_threads: auto`` (the default) uses the cores that other processes leave free and
looks again as the run goes on.

What "others" use is measured, not guessed from the load average (which counts this process
too and lags by a minute): the CPU time spent on this process's CPUs (``/proc/stat``) minus the
CPU time of this process and its children, such as data-loader workers (``/proc/PID/stat``),
over a window of wall time. Linux only; where ``/proc`` cannot be read, ``auto`` keeps torch's
default.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# Busy columns of a /proc/stat cpu line: user nice system idle iowait irq softirq steal ...
# (guest time is already inside user). Steal is time the hypervisor gave to someone else.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuTimes:
    """A reading of the CPU clocks.

    Attributes:
        wall: ``time.monotonic()`` at the reading, seconds.
        busy: CPU seconds spent so far by every process on the CPUs this process may use.
        own: CPU seconds spent so far by this process and its live children.
    """

    wall: float
    busy: float
    own: float


def read_cpu_times(proc: Path = Path("/proc"), pid: int | None = None) -> CpuTimes | None:
    """The clocks now, or ``None`` where ``/proc`` does not have them (not Linux)."""
    pid = os.getpid() if pid is None else pid
    try:
        allowed = {f"cpu{index}" for index in os.sched_getaffinity(0)}
        tick = os.sysconf("SC_CLK_TCK")
        busy_ticks = 0
        for line in (proc / "stat").read_text().splitlines():
            name, *columns = line.split()
            if name in allowed:
                busy_ticks += sum(int(columns[i]) for i in _BUSY_COLUMNS if i < len(columns))
        own_ticks = _process_ticks(proc / str(pid) / "stat")
        if own_ticks is None:
            return None
        own_ticks += sum(_children_ticks(proc, pid))
    except (OSError, ValueError, AttributeError, IndexError):
        return None
    return CpuTimes(time.monotonic(), busy_ticks / tick, own_ticks / tick)


def _split_stat(stat_file: Path) -> list[str] | None:
    """The fields of a ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    try:
        text = stat_file.read_text()
    except OSError:  # the process ended between listing and reading
        return None
    return text[text.rindex(")") + 2 :].split()


def _process_ticks(stat_file: Path) -> int | None:
    """User + system clock ticks of one process (fields 14 and 15 of ``proc(5)``)."""
    fields = _split_stat(stat_file)
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])


def _children_ticks(proc: Path, pid: int) -> list[int]:
    """Clock ticks of the live processes whose parent is ``pid`` (field 4 of ``proc(5)``)."""
    ticks = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        fields = _split_stat(entry / "stat")
        if fields is not None and int(fields[1]) == pid:
            ticks.append(int(fields[11]) + int(fields[12]))
    return ticks


def busy_cores_of_others(before: CpuTimes, after: CpuTimes) -> float:
    """How many cores other processes kept busy between two readings (0 when no time passed)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / wall)


def free_cores(cores: int, others_busy: float) -> int:
    """Cores left to this process: one counts as taken when others keep at least half of it
    busy (a thread that gets half a core holds the others up as much as a missing one)."""
    return max(1, cores - math.floor(others_busy + 0.5))


class ThreadGovernor:
    """Sets torch's thread count to the cores other processes leave free, and keeps it so.

    Call :meth:`update` often (after every training step); it reads the clocks only when
    ``first_check`` seconds have passed since :meth:`start` and every ``interval`` seconds after
    that, so a step costs a clock read at most. Each decision covers the whole window since the
    previous one, so a short burst of other work does not flip the count.

    Args:
        cores: the most threads to use; the CPUs this process may run on by default.
        first_check: seconds from :meth:`start` to the first decision.
        interval: seconds between later decisions.
        read: the clock reader (tests pass fakes).
        set_threads: applies a count (``torch.set_num_threads`` by default).
        clock: wall time in seconds, on the clock that ``read`` stamps its readings with.
    """

    def __init__(
        self,
        cores: int | None = None,
        *,
        first_check: float = 3.0,
        interval: float = 15.0,
        read: Callable[[], CpuTimes | None] = read_cpu_times,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cores = cores or len(os.sched_getaffinity(0))
        self.first_check = first_check
        self.interval = interval
        self.read = read
        self.set_threads = set_threads
        self.clock = clock
        self.threads = self.cores
        self.others_busy = 0.0
        self._last: CpuTimes | None = None
        self._wait = first_check

    @property
    def active(self) -> bool:
        """False where the clocks cannot be read: then nothing is ever changed."""
        return self._last is not None

    def start(self) -> int:
        """Use every core until the first decision; returns the thread count."""
        self._last = self.read()
        self._wait = self.first_check
        self.threads = self.cores
        self.set_threads(self.threads)
        return self.threads

    def update(self) -> tuple[int, int] | None:
        """Decide again if it is time; ``(old, new)`` thread counts when the count changed."""
        if self._last is None or self.clock() - self._last.wall < self._wait:
            return None
        now = self.read()
        if now is None:
            return None
        self.others_busy = busy_cores_of_others(self._last, now)
        self._last, self._wait = now, self.interval
        threads = free_cores(self.cores, self.others_busy)
        if threads == self.threads:
            return None
        old, self.threads = self.threads, threads
        self.set_threads(threads)
        return old, threads
