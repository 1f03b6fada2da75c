"""Fault injection against the ``leanseg train`` command: faults injected / survived.

Tiny synthetic runs (SSN encoder, 32x64 scenes, 12 iterations, one thread) are started through
the real command line (``python -m leanseg.cli train``), hit by faults, and recovered with the
next ``leanseg train ... --resume`` (or a plain rerun where that is the documented recovery).
Faults, drawn in chains of a few per run:

- ``kill_random``: SIGKILL at a random moment of a process's life (start-up, run creation,
  resume, training, evaluation, checkpoint writes);
- ``kill_in_checkpoint_write``: SIGKILL inside a write of ``last.pt`` or ``best.pt``, half the
  data in the temporary file (the ``LEANSEG_KILL_IN_WRITE`` hook of ``leanseg.utils``);
- ``kill_in_first_checkpoint``: the same during a fresh run's first ``best.pt`` / ``last.pt``;
  a ``best.pt`` kill is recovered by a plain rerun (the run holds no checkpoint);
- ``torn_metrics_line``: half a JSON line at the end of ``metrics.jsonl``;
- ``stale_temp_files``: extra ``.last.pt.<hex>.tmp`` / ``.best.pt.<hex>.tmp`` files beside a
  user's own ``checkpoints/keep.tmp``.

A fault is survived when the next command accepts the run, and the chain ends with a log equal
to the uninterrupted run's (losses and evaluations), a loadable ``last.pt`` at the last
iteration, no leanseg temporary file, and the user's files (``notes.txt``, ``keep.tmp``) intact.
A kill that comes after its process has already exited is not counted.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --faults 24 \\
        --json benchmarks/results/fault_injection.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from common import machine, write_json
from leanseg.engine.checkpoint import CheckpointError, load_checkpoint
from leanseg.engine.run_dir import RunDirectory
from leanseg.utils import KILL_IN_WRITE_ENV, is_temp_of

MAX_ITERS = 12
CONFIG: dict[str, Any] = {
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
        "max_iters": MAX_ITERS,
        "eval_interval": 4,
        "checkpoint_interval": 4,
        "log_interval": 1,
        "seed": 0,
        "num_threads": 1,
    },
    "eval": {"max_images": 2, "boundary_width": 2},
}
USER_NOTE = b"the user's own notes\n"


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "work_dir": str(folder / "run")}))
    return path


def start(config: Path, *args: str, kill_in_write: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_IN_WRITE_ENV, None)
    if kill_in_write:
        env[KILL_IN_WRITE_ENV] = kill_in_write
    command = [sys.executable, "-m", "leanseg.cli", "train", str(config), "--no-progress", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output.decode(errors="replace")


def records(run: RunDirectory) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in run.read_metrics()]


def leanseg_temp_files(run: RunDirectory) -> list[str]:
    names = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", ".leanseg-run")
    return [
        str(path.relative_to(run.root))
        for path in run.root.rglob("*")
        if any(is_temp_of(path.name, name) for name in names) or path.name == "metrics.jsonl.tmp"
    ]


def after_kill(run: RunDirectory, temp_before: set[str] | None = None) -> dict[str, Any]:
    """Where a kill left the run: the checkpoint a resume reads, the log, new temporary files
    (a kill inside a write leaves one)."""
    checkpoint = run.resume_checkpoint()
    logged = [r.get("iteration", 0) for r in run.read_metrics()]
    temp = set(leanseg_temp_files(run)) if run.root.exists() else set()
    return {
        "resumable_after": resumable(run),
        "resume_from": None if checkpoint is None else checkpoint.name,
        "last_logged_iteration": max(logged, default=0),
        "temp_files_after_kill": sorted(temp - (temp_before or set())),
    }


def resumable(run: RunDirectory) -> bool:
    """After a kill: the checkpoint a resume would read loads and holds a training state."""
    checkpoint = run.resume_checkpoint()
    if checkpoint is None:
        return True
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError:
        return False
    return "optimizer" in state and state["iteration"] % 4 == 0


class Chain:
    """One run directory taken through a sequence of faults and recoveries."""

    def __init__(self, folder: Path, reference: list[dict[str, Any]], rng: random.Random) -> None:
        self.config = write_config(folder)
        self.run = RunDirectory(folder / "run")
        self.reference = reference
        self.rng = rng
        self.faults: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # injected, not yet followed by a command
        self.user_files: list[Path] = []  # must come through every command unchanged
        self.plain_rerun_next = False  # the next command omits --resume
        self.expected_duration = 8.0
        self.problems: list[str] = []
        self.commands = 0

    # ------------------------------------------------------------------ commands

    def command(self, *args: str, kill_in_write: str | None = None) -> subprocess.Popen:
        """Start the next command; the faults before it are survived if it accepts the run."""
        self.commands += 1
        return start(self.config, *args, kill_in_write=kill_in_write)

    def settle(self, code: int, output: str) -> None:
        """A command ended with ``code``: judge the faults that came before it."""
        if code == -signal.SIGKILL:  # killed, maybe before it looked at the run: judge later
            return
        accepted = code == 0 and "leanseg: error" not in output
        for fault in self.pending:
            fault["next_command_accepted"] = accepted
            if not accepted:
                fault["error"] = output.strip().splitlines()[-1:] if output.strip() else [code]
        self.pending = []

    def record(self, kind: str, **detail: Any) -> dict[str, Any]:
        fault = {"kind": kind, **detail}
        self.faults.append(fault)
        self.pending.append(fault)
        return fault

    def resume_args(self) -> tuple[str, ...]:
        plain, self.plain_rerun_next = self.plain_rerun_next, False
        return () if plain or not self.run.root.exists() else ("--resume",)

    def add_user_file(self, path: Path) -> None:
        path.write_bytes(USER_NOTE)
        self.user_files.append(path)

    # ------------------------------------------------------------------ faults

    def kill_in_first_checkpoint(self) -> None:
        target = self.rng.choice(["best.pt:1", "last.pt:1"])
        began = time.monotonic()
        code, output = finish(self.command(kill_in_write=target))
        self.expected_duration = time.monotonic() - began + 2.0
        if code != -signal.SIGKILL:
            self.settle(code, output)
            return
        self.record("kill_in_first_checkpoint", target=target, **after_kill(self.run))
        self.add_user_file(self.run.root / "notes.txt")
        # With no checkpoint at all, a plain rerun must accept the run (and start it again).
        self.plain_rerun_next = target == "best.pt:1"

    def kill_in_checkpoint_write(self) -> None:
        target = f"{self.rng.choice(['last.pt', 'best.pt'])}:{self.rng.choice([1, 2])}"
        code, output = finish(self.command(*self.resume_args(), kill_in_write=target))
        self.settle(code, output)
        if code == -signal.SIGKILL:
            self.record("kill_in_checkpoint_write", target=target, **after_kill(self.run))

    def kill_random(self) -> None:
        delay = self.rng.uniform(0.0, self.expected_duration)
        temp_before = set(leanseg_temp_files(self.run)) if self.run.root.exists() else set()
        process = self.command(*self.resume_args())
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code, output = finish(process)
        self.settle(code, output)
        if code == -signal.SIGKILL:
            fault = after_kill(self.run, temp_before)
            self.record("kill_random", after_seconds=round(delay, 2), **fault)

    def torn_metrics_line(self) -> None:
        if not self.run.metrics_path.exists():
            return
        line = json.dumps({"time": 1.0, "iteration": MAX_ITERS + 1, "split": "train"})
        with self.run.metrics_path.open("a") as handle:
            handle.write(line[: self.rng.randint(1, len(line) - 1)])
        self.record("torn_metrics_line")

    def stale_temp_files(self) -> None:
        if not self.run.checkpoint_dir.is_dir():
            return
        for name in ("last.pt", "best.pt"):
            stale = self.run.checkpoint_dir / f".{name}.{secrets.token_hex(4)}.tmp"
            stale.write_bytes(os.urandom(self.rng.randint(1, 1 << 20)))
        if not (self.run.checkpoint_dir / "keep.tmp").exists():
            self.add_user_file(self.run.checkpoint_dir / "keep.tmp")
        self.record("stale_temp_files")

    # ------------------------------------------------------------------ recovery

    def finish_chain(self) -> bool:
        """Resume to the end and check that nothing was lost."""
        code, output = finish(self.command(*self.resume_args()))
        self.settle(code, output)
        problems = []
        if code != 0:
            problems.append(f"final resume exited {code}: {output.strip()[-300:]}")
        if records(self.run) != self.reference:
            problems.append("log differs from the uninterrupted run")
        try:
            if load_checkpoint(self.run.last_checkpoint)["iteration"] != MAX_ITERS:
                problems.append("last.pt is not at the last iteration")
        except CheckpointError as err:
            problems.append(str(err))
        if leftovers := leanseg_temp_files(self.run):
            problems.append(f"temporary files left: {leftovers}")
        for path in self.user_files:
            if not path.is_file() or path.read_bytes() != USER_NOTE:
                problems.append(f"the user's {path.name} was deleted or changed")
        for fault in self.faults:
            fault["survived"] = (
                not problems
                and fault.get("next_command_accepted", False)
                and fault.get("resumable_after", True)
            )
        self.problems = problems
        return not problems


def reference_log(folder: Path) -> list[dict[str, Any]]:
    config = write_config(folder)
    code, output = finish(start(config))
    if code != 0:
        raise SystemExit(f"reference run failed:\n{output}")
    return records(RunDirectory(folder / "run"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=24, help="faults to inject (at least)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temp dir)")
    parser.add_argument("--note", default="", help="free text kept in the JSON (e.g. the commit)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        root = Path(scratch)
        reference = reference_log(root / "reference")
        chains: list[Chain] = []
        while sum(len(chain.faults) for chain in chains) < args.faults:
            chain = Chain(root / f"chain{len(chains)}", reference, rng)
            chain.kill_in_first_checkpoint()
            chain.torn_metrics_line()
            chain.stale_temp_files()
            steps = [chain.kill_random, chain.kill_random, chain.kill_in_checkpoint_write]
            for step in rng.sample(steps, len(steps)):
                step()
            chain.finish_chain()
            chains.append(chain)
            done = sum(len(c.faults) for c in chains)
            print(f"chain {len(chains)}: {len(chain.faults)} faults, total {done}", flush=True)
    faults = [fault | {"chain": i} for i, chain in enumerate(chains) for fault in chain.faults]
    random_kills = [f for f in faults if f["kind"] == "kill_random"]
    in_a_write = [f for f in random_kills if f["temp_files_after_kill"]]
    injected = Counter(fault["kind"] for fault in faults)
    survived = Counter(fault["kind"] for fault in faults if fault["survived"])
    result = {
        "machine": machine(),
        "command": "python benchmarks/fault_injection.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "note": args.note,
        "config": CONFIG,
        "faults_injected": len(faults),
        "faults_survived": sum(survived.values()),
        "by_kind": {
            kind: {"injected": n, "survived": survived[kind]} for kind, n in injected.items()
        },
        "commands_run": sum(chain.commands for chain in chains) + 1,
        "random_kills_inside_a_write": len(in_a_write),
        "chains": len(chains),
        "chain_problems": [chain.problems for chain in chains if chain.problems],
        "seconds": round(time.perf_counter() - began, 1),
        "faults": faults,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("faults", "config")}, indent=2))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
