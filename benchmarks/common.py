"""What the benchmark scripts share: training runs, their logs, the machine, timing.

Benchmarks run as scripts from the folder of their group (``python benchmarks/GROUP/NAME.py``,
``benchmarks/README.md``); each puts this folder on ``sys.path`` before it imports this
module as ``common``.

- :class:`TrainJob` and :func:`train`: ``leanseg train`` runs, one process each, a few at a time;
- :func:`read_metrics` and :func:`last_validation`: what a run logged in ``metrics.jsonl``;
- :func:`machine`: the machine and the leanseg a figure was measured with; :func:`write_result`:
  a result file with the command, date, commit and machine beside its figures
  (:func:`missing_provenance` checks one), :func:`write_json`: any other JSON;
- :func:`round_robin` and :func:`summary`: timing several things on the same load, median and
  spread (:func:`leanseg.profiling.latency.measure_latency` times one thing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import leanseg
from leanseg.files.run_dir import RunDirectory
from leanseg.profiling.latency import Latency
from leanseg.profiling.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]

Key = TypeVar("Key", bound=Hashable)

# --------------------------------------------------------------------------- training runs


@dataclass(frozen=True)
class TrainJob:
    """One ``leanseg train`` run of a benchmark.

    Attributes:
        name: how progress lines and failures name the run.
        config: the YAML config.
        work_dir: the run directory.
        overrides: ``--set`` overrides, in order.
        log: file that takes the run's output (stdout and stderr); ``None``: the terminal.
        resume: continue the run in ``work_dir`` (``--resume``, the log is appended to) instead
            of replacing it (``--force``).
    """

    name: str
    config: str | Path
    work_dir: Path
    overrides: Sequence[str] = ()
    log: Path | None = None
    resume: bool = False

    def command(self) -> list[str]:
        """The ``leanseg train`` command line, run by the interpreter running the benchmark."""
        line = [sys.executable, "-m", "leanseg", "train", str(self.config)]
        line += ["--work-dir", str(self.work_dir), "--no-progress"]
        line.append("--resume" if self.resume else "--force")
        for item in self.overrides:
            line += ["--set", item]
        return line


@dataclass(frozen=True)
class TrainOutcome:
    """How one :class:`TrainJob` ended: its exit status and wall time in seconds."""

    job: TrainJob
    returncode: int
    seconds: float


def train(
    jobs: Sequence[TrainJob],
    *,
    parallel: int = 1,
    threads: int = 1,
    nice: int = 10,
    check: bool = True,
    on_done: Callable[[TrainOutcome], None] | None = None,
) -> list[TrainOutcome]:
    """Run ``leanseg train`` for every job, ``parallel`` processes at a time.

    Each process gets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to ``threads``: on shared
    cores, more OpenMP threads than free cores spin-wait and made training steps 10-30x slower.
    The command line goes to stderr before a run starts, its exit status and wall time after;
    a failed run's last log lines follow.

    Args:
        jobs: the runs.
        parallel: runs at a time.
        threads: OpenMP / MKL threads per run (set ``train.num_threads`` in the overrides too).
        nice: niceness of every run (``0``: not niced).
        check: after all runs ended, exit naming the failed ones (``SystemExit``); with
            ``False`` the caller reads the exit statuses.
        on_done: called with each outcome as soon as its run ends (in the pool's thread), to
            keep what a run produced before the next one starts.

    Returns:
        One outcome per job, in the order of ``jobs``.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    prefix = ["nice", "-n", str(nice)] if nice else []

    def run(job: TrainJob) -> TrainOutcome:
        command = [*prefix, *job.command()]
        print("+", shlex.join(command), file=sys.stderr, flush=True)
        start = time.perf_counter()
        if job.log is None:
            code = subprocess.call(command, cwd=REPO, env=env)
        else:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with job.log.open("a" if job.resume else "w") as log:
                code = subprocess.call(
                    command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        seconds = time.perf_counter() - start
        print(f"{job.name}: exit {code} after {seconds:.0f} s", file=sys.stderr, flush=True)
        if code and job.log is not None:
            tail = job.log.read_text(errors="replace").splitlines()[-20:]
            print("\n".join(tail), file=sys.stderr, flush=True)
        outcome = TrainOutcome(job, code, seconds)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        outcomes = list(pool.map(run, jobs))
    failed = [outcome.job for outcome in outcomes if outcome.returncode]
    if check and failed:
        where = ", ".join(f"{job.name} ({job.log or 'see above'})" for job in failed)
        raise SystemExit(f"failed runs: {where}")
    return outcomes


# --------------------------------------------------------------------------- what a run logged


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``, a line torn by a kill skipped; ``[]`` if none.

    Read by :meth:`leanseg.files.run_dir.RunDirectory.read_metrics`, as the trainer reads it.
    """
    return RunDirectory(run).read_metrics()


def last_validation(run: str | Path) -> dict[str, Any] | None:
    """The last validation record (``"split": "val"``) of a run, ``None`` if it has none."""
    records = [record for record in read_metrics(run) if record.get("split") == "val"]
    return records[-1] if records else None


# --------------------------------------------------------------------------- the machine


def machine(device: str = "cpu", **extra: Any) -> dict[str, Any]:
    """The machine and the leanseg a benchmark ran on, to store beside its figures.

    :func:`leanseg.profiling.machine.describe_machine` (CPU or GPU, threads, CPUs, load, versions),
    the ``OMP_NUM_THREADS`` the script was given, which leanseg ran (:func:`leanseg_source`), and
    ``extra``.
    """
    return {
        **describe_machine(device),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "leanseg": leanseg_source(),
        **extra,
    }


def leanseg_source() -> dict[str, Any]:
    """Which leanseg ran: its folder, the git commit of that checkout, and whether the checkout
    had uncommitted changes in the package (``dirty``)."""
    folder = Path(leanseg.__file__).parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
        except OSError:  # no git on this machine
            return ""
        return done.stdout.strip()

    return {
        "path": str(folder),
        "version": leanseg.__version__,
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--", ".")),
    }


def write_json(path: str | Path, payload: Any, indent: int = 2) -> None:
    """Write results as JSON (values JSON does not know as text), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=indent, default=str) + "\n")


# --------------------------------------------------------------------------- provenance

# Where each provenance field of a result file is, as a path of keys (issue 30).
PROVENANCE_FIELDS: dict[str, tuple[str, ...]] = {
    "command": ("command",),
    "date": ("date",),
    "commit": ("machine", "leanseg", "commit"),
    "dirty": ("machine", "leanseg", "dirty"),
    "device": ("machine", "device"),
    "cpu or gpu model": ("machine", "device_name"),
    "cores": ("machine", "cpu_count"),
    "threads": ("machine", "num_threads"),
    "torch version": ("machine", "torch_version"),
}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that is running, as one would type it in the repository's root
    (``python benchmarks/GROUP/NAME.py ARGS``)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return shlex.join(["python", str(shown), *argv[1:]])


def write_result(
    path: str | Path, figures: Mapping[str, Any], device: str = "cpu", **machine_extra: Any
) -> None:
    """Write a benchmark's result file: its figures, and how they were made.

    Adds what :data:`PROVENANCE_FIELDS` names: the command line (unless ``figures`` states
    one, e.g. a script that ran others), the date and time (UTC), and :func:`machine` (CPU or GPU
    model, cores, threads, torch version, the git commit of the leanseg that ran and whether
    its checkout was dirty), unless ``figures`` brings its own. ``tests/test_result_provenance.py``
    checks every file in ``benchmarks/results/`` for these fields.
    """
    record = dict(figures)
    record.setdefault("command", command_line())
    record["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record.setdefault("machine", machine(device, **machine_extra))
    write_json(path, record)


def missing_provenance(record: Any) -> list[str]:
    """The :data:`PROVENANCE_FIELDS` a result file lacks (``[]``: it says how it was made)."""
    if not isinstance(record, dict):
        return list(PROVENANCE_FIELDS)
    missing = []
    for field, keys in PROVENANCE_FIELDS.items():
        value: Any = record
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if field == "commit":
            ok = isinstance(value, str) and len(value) == 40
        elif field == "dirty":
            ok = isinstance(value, bool)
        elif field == "date":
            ok = isinstance(value, str) and _is_iso_date(value)
        else:
            ok = value is not None and value != ""
        if not ok:
            missing.append(field)
    # A file written in parts, each by its own command (``fast_training.py``'s steps and train),
    # says when and where each part was made.
    parts, machines, dates = (record.get(key) for key in ("commands", "machines", "dates"))
    if isinstance(parts, dict) and isinstance(machines, dict):
        for part in parts:
            if not machines.get(part):
                missing.append(f"machines.{part}")
            if not (isinstance(dates, dict) and dates.get(part)):
                missing.append(f"dates.{part}")
    return missing


def _is_iso_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- timing


def round_robin(
    calls: Mapping[Key, Callable[[], object]],
    warmup: int,
    repeats: int,
    after: Callable[[Key, int, float], None] | None = None,
) -> dict[Key, list[float]]:
    """Wall time of every call, timed one call of each per round.

    ``warmup`` untimed rounds, then ``repeats`` timed ones: a change of load on a shared machine
    then affects every call alike, instead of whichever was timed at the time, so the ratios of
    their times hold. Gradient mode is the caller's (wrap in ``torch.no_grad()`` for inference).

    Args:
        calls: the things to time, by name.
        warmup: untimed rounds first.
        repeats: timed rounds.
        after: called after each timed call with its name, round (from 0) and milliseconds,
            outside the timing (for progress lines, or freeing memory between calls).

    Returns:
        Milliseconds of each timed call, by name, in round order; :func:`summary` sums them up.
    """
    times: dict[Key, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if round_index >= warmup:
                times[name].append(elapsed_ms)
                if after is not None:
                    after(name, round_index - warmup, elapsed_ms)
    return times


def summary(times_ms: Sequence[float], warmup: int = 0) -> dict[str, float | int]:
    """Median and spread of timed calls (:meth:`leanseg.profiling.latency.Latency.from_times`) as a
    dict: ``median_ms``, ``min_ms``, ``max_ms``, ``iqr_ms``, ``mean_ms``, ``std_ms``, ``repeats``,
    ``warmup``."""
    return dataclasses.asdict(Latency.from_times(times_ms, warmup=warmup))
