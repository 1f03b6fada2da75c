"""Fault injection against the ``leanseg train`` command: faults injected / survived.

Tiny synthetic runs (SSN encoder, 32x64 scenes, 12 iterations, one thread) are started through
the real command line (``python -m leanseg.cli train``), hit by faults, and recovered with the
next ``leanseg train ... --resume`` (or a plain rerun where that is the documented recovery).
Faults, drawn in chains of a few per run:

- ``kill_random``: SIGKILL at a random moment of a process's life (start-up, run creation,
  resume, training, evaluation, checkpoint writes);
- ``kill_in_checkpoint_write``: SIGKILL inside a write of ``last.pt`` or ``best.pt``, half the
  data in the temporary file (the ``LEANSEG_KILL_IN_WRITE`` hook of ``leanseg.files.atomic``);
- ``kill_in_first_checkpoint``: the same during a fresh run's first ``best.pt`` / ``last.pt``;
  a ``best.pt`` kill is recovered by a plain rerun (the run holds no checkpoint);
- ``torn_metrics_line``: half a JSON line at the end of ``metrics.jsonl``;
- ``stale_temp_files``: extra ``.last.pt.<hex>.tmp`` / ``.best.pt.<hex>.tmp`` files beside a
  user's own ``checkpoints/keep.tmp``.

A fault is survived when the next command accepts the run, and the chain ends with a log equal
to the uninterrupted run's (losses and evaluations), a loadable ``last.pt`` at the last
iteration, no leanseg temporary file, and the user's files (``notes.txt``, ``keep.tmp``) intact.
A kill that comes after its process has already exited is not counted.

Concurrency cases (issue 27, item 2), each with a first process that holds its folder while a
second one starts:

- ``two_train``: two ``leanseg train`` of one config (one run folder);
- ``train_and_resume``: ``train`` and ``train --resume`` of the same run;
- ``two_predict``: two ``leanseg predict`` into one ``--out``;
- ``killed_train_holder``: a ``train`` killed with SIGKILL while it holds the run folder (after
  its first ``last.pt``), then ``train --resume``;
- ``killed_predict_holder``: the same for ``predict``, then ``predict`` again.

A case is survived when the second process is refused with a message naming the first one's
process id while the first still runs (or, after a kill, is accepted and finishes), the first
finishes, the log holds every training iteration once in order (no duplicated or interleaved
lines), ``last.pt`` loads at the last iteration, and a prediction folder's manifest parses and
names every file in the folder.

    OMP_NUM_THREADS=1 python benchmarks/robustness/fault_injection.py --faults 24 \\
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

from leanseg.commands.predict import PREDICT_MANIFEST
from leanseg.files.atomic import KILL_IN_WRITE_ENV, is_temp_of
from leanseg.files.checkpoint import CheckpointError, load_checkpoint
from leanseg.files.folder_lock import HOLDER_FILE, LOCK_NAMES
from leanseg.files.run_dir import RunDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import machine, write_result

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


# ---------------------------------------------------------------------- concurrency

# Long enough that a second process starts (imports torch, reads its config) while the first
# still holds the folder, on a loaded 2-core machine.
CONCURRENT_ITERS = 60


def concurrent_config(folder: Path) -> Path:
    """The config of :data:`CONFIG` trained for :data:`CONCURRENT_ITERS` iterations."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = json.loads(json.dumps(CONFIG))
    raw["train"].update(max_iters=CONCURRENT_ITERS, eval_interval=30, checkpoint_interval=30)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**raw, "work_dir": str(folder / "run")}))
    return path


def leanseg(*args: str) -> subprocess.Popen:
    """``python -m leanseg ARGS`` with its output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_IN_WRITE_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "leanseg", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for_holder(folder: Path, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Wait until ``process`` has written itself as the holder of ``folder``'s lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            holder = json.loads((folder / HOLDER_FILE).read_text())
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == process.pid:
            return True
        time.sleep(0.05)
    return False


def log_problems(run: RunDirectory, iterations: int) -> list[str]:
    """What is wrong with a finished run's log and last checkpoint."""
    problems = []
    steps = [r["iteration"] for r in run.read_metrics() if r.get("split", "train") == "train"]
    if steps != list(range(1, iterations + 1)):
        problems.append(f"training lines are not iterations 1..{iterations} once each: {steps}")
    lines = run.metrics_path.read_text().splitlines() if run.metrics_path.is_file() else []
    torn = [line for line in lines if not line.startswith("{") or not line.endswith("}")]
    if torn:
        problems.append(f"{len(torn)} torn or interleaved metrics line(s)")
    try:
        if load_checkpoint(run.last_checkpoint)["iteration"] != iterations:
            problems.append("last.pt is not at the last iteration")
    except CheckpointError as err:
        problems.append(str(err))
    return problems


def manifest_problems(out: Path, images: list[Path]) -> list[str]:
    """What is wrong with a finished prediction folder: its manifest and its files."""
    try:
        record = json.loads((out / PREDICT_MANIFEST).read_text())
        listed = set(record["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"manifest unreadable: {err!r}"]
    present = {p.name for p in out.iterdir()} - {PREDICT_MANIFEST, *LOCK_NAMES}
    problems = []
    if present - listed:
        problems.append(f"files not in the manifest: {sorted(present - listed)[:5]}")
    missing = [image.stem for image in images if not any(n.startswith(image.stem) for n in present)]
    if missing:
        problems.append(f"no output for {len(missing)} image(s), e.g. {missing[0]}")
    return problems


def second_refused(
    second: subprocess.Popen, first: subprocess.Popen, started: float
) -> dict[str, Any]:
    """Let ``second`` finish; was it refused naming ``first``, while ``first`` still ran?"""
    code, output = finish(second)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return {
        "second_exit": code,
        "second_message": last[:300],
        "second_seconds": round(time.monotonic() - started, 2),
        "first_running_when_second_ended": first.poll() is None,
        "second_refused_naming_first": code == 2 and f"process {first.pid}" in last,
    }


def two_commands(
    name: str,
    first_args: list[str],
    second_args: list[str],
    *,
    lock_folder: Path,
    check: Any,
) -> dict[str, Any]:
    """``first`` holds ``lock_folder``; ``second`` starts then and must be refused."""
    first = leanseg(*first_args)
    result: dict[str, Any] = {"case": name}
    if not wait_for_holder(lock_folder, first):
        code, output = finish(first)
        return {**result, "survived": False, "problems": [f"first never held: {output[-300:]}"]}
    result.update(second_refused(leanseg(*second_args), first, time.monotonic()))
    code, output = finish(first)
    result["first_exit"] = code
    problems = [] if code == 0 else [f"first exited {code}: {output.strip()[-300:]}"]
    if not result["second_refused_naming_first"]:
        problems.append(f"second not refused naming the first: {result['second_message']}")
    if not result["first_running_when_second_ended"]:
        problems.append("the first had ended before the second did (not a concurrent run)")
    problems += check()
    return {**result, "survived": not problems, "problems": problems}


def killed_holder(
    name: str,
    first_args: list[str],
    second_args: list[str],
    *,
    lock_folder: Path,
    ready: Any,
    check: Any,
) -> dict[str, Any]:
    """``first`` holds ``lock_folder`` and is killed once ``ready()``; ``second`` must take the
    folder over."""
    first = leanseg(*first_args)
    result: dict[str, Any] = {"case": name}
    if not wait_for_holder(lock_folder, first):
        code, output = finish(first)
        return {**result, "survived": False, "problems": [f"first never held: {output[-300:]}"]}
    deadline = time.monotonic() + 300
    while not ready() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = first.poll() is None
    first.send_signal(signal.SIGKILL)
    finish(first)
    code, output = finish(leanseg(*second_args))
    result.update(
        killed_while_holding=killed,
        stale_holder_file=(lock_folder / HOLDER_FILE).exists() or None,
        second_exit=code,
        second_message=(output.strip().splitlines() or [""])[-1][:300],
    )
    problems = [] if code == 0 else [f"second exited {code}: {output.strip()[-300:]}"]
    if not killed:
        problems.append("the first had ended before the kill")
    problems += check()
    return {**result, "survived": not problems, "problems": problems}


def write_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"img{index:02d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def concurrency_cases(root: Path) -> list[dict[str, Any]]:
    """Run the concurrency cases of the module docstring; one result per case."""
    results = []
    # two train on one run folder
    config = concurrent_config(root / "two_train")
    run = RunDirectory(root / "two_train" / "run")
    results.append(
        two_commands(
            "two_train",
            ["train", str(config), "--no-progress"],
            ["train", str(config), "--no-progress"],
            lock_folder=run.root,
            check=lambda run=run: log_problems(run, CONCURRENT_ITERS),
        )
    )
    # train, then train --resume of the same run while it runs
    config = concurrent_config(root / "resume")
    run = RunDirectory(root / "resume" / "run")
    results.append(
        two_commands(
            "train_and_resume",
            ["train", str(config), "--no-progress"],
            ["train", str(config), "--resume", "--no-progress"],
            lock_folder=run.root,
            check=lambda run=run: log_problems(run, CONCURRENT_ITERS),
        )
    )
    # a killed holder, then a resume
    config = concurrent_config(root / "killed")
    run = RunDirectory(root / "killed" / "run")
    results.append(
        killed_holder(
            "killed_train_holder",
            ["train", str(config), "--no-progress"],
            ["train", str(config), "--resume", "--no-progress"],
            lock_folder=run.root,
            ready=lambda run=run: run.last_checkpoint.is_file(),  # then --resume continues
            check=lambda run=run: log_problems(run, CONCURRENT_ITERS),
        )
    )
    # two predict into one --out (the checkpoint of the first run)
    checkpoint = str(root / "two_train" / "run" / "checkpoints" / "last.pt")
    images = write_images(root / "images", 24, (384, 512))
    out = root / "predictions"
    predict = ["predict", str(root / "images"), "--checkpoint", checkpoint, "--out", str(out)]
    results.append(
        two_commands(
            "two_predict",
            predict,
            predict,
            lock_folder=out,
            check=lambda: manifest_problems(out, images),
        )
    )
    out2 = root / "predictions_killed"
    predict2 = ["predict", str(root / "images"), "--checkpoint", checkpoint, "--out", str(out2)]
    results.append(
        killed_holder(
            "killed_predict_holder",
            predict2,
            predict2,
            lock_folder=out2,
            ready=lambda: len(list(out2.glob("*.png"))) >= 4,
            check=lambda: manifest_problems(out2, images),
        )
    )
    for result in results:
        print(f"{result['case']}: survived={result['survived']} {result['problems']}", flush=True)
    return results


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
    parser.add_argument(
        "--concurrency-only", action="store_true", help="only the concurrency cases"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        root = Path(scratch)
        concurrency = concurrency_cases(root / "concurrency")
        reference = [] if args.concurrency_only else reference_log(root / "reference")
        chains: list[Chain] = []
        while not args.concurrency_only and sum(len(c.faults) for c in chains) < args.faults:
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
        "command": "python benchmarks/robustness/fault_injection.py " + " ".join(sys.argv[1:]),
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
        "concurrency_cases": len(concurrency),
        "concurrency_survived": sum(case["survived"] for case in concurrency),
        "concurrency": concurrency,
        "seconds": round(time.perf_counter() - began, 1),
        "faults": faults,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("faults", "config")}, indent=2))
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()
