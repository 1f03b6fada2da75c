"""``benchmarks/common.py``: what the benchmark scripts share."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from leanseg.files.run_dir import RunDirectory

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def common(monkeypatch):
    """The module as the scripts import it: their folder is on the path when they run."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("common")


def test_round_robin_times_one_call_of_each_per_round(common):
    order: list[str] = []
    seen: list[tuple[str, int]] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    times = common.round_robin(
        calls, warmup=1, repeats=2, after=lambda n, r, ms: seen.append((n, r))
    )
    assert order == ["a", "b"] * 3
    assert seen == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]  # timed calls only
    assert {name: len(values) for name, values in times.items()} == {"a": 2, "b": 2}
    summary = common.summary([3.0, 1.0, 2.0], warmup=1)
    assert (summary["median_ms"], summary["min_ms"], summary["max_ms"]) == (2.0, 1.0, 3.0)
    assert summary["repeats"] == 3 and summary["warmup"] == 1


def test_last_validation_reads_the_log_as_the_trainer_writes_it(common, tmp_path):
    run = RunDirectory(tmp_path)
    assert common.last_validation(tmp_path) is None
    for record in (
        {"split": "train", "iteration": 1},
        {"split": "val", "iteration": 1, "miou": 0.1},
        {"split": "val", "iteration": 2, "miou": 0.2},
    ):
        run.append_metrics(record)
    with run.metrics_path.open("a") as handle:
        handle.write('{"split": "val", "iter')  # torn by a kill
    assert common.last_validation(tmp_path) == {"split": "val", "iteration": 2, "miou": 0.2}
    assert len(common.read_metrics(tmp_path)) == 3


def test_train_job_command(common, tmp_path):
    job = common.TrainJob("a", "c.yaml", tmp_path / "run", ["train.lr=0.1", "data.batch_size=2"])
    command = job.command()
    assert command[:5] == [sys.executable, "-m", "leanseg", "train", "c.yaml"]
    assert "--force" in command and "--resume" not in command
    assert command[-4:] == ["--set", "train.lr=0.1", "--set", "data.batch_size=2"]
    resumed = common.TrainJob("a", "c.yaml", tmp_path / "run", resume=True).command()
    assert "--resume" in resumed and "--force" not in resumed


def test_a_failed_run_names_itself_and_its_log(common, tmp_path):
    log = tmp_path / "logs" / "missing.log"
    job = common.TrainJob("missing", tmp_path / "missing.yaml", tmp_path / "run", log=log)
    with pytest.raises(SystemExit, match=r"missing \(.*missing\.log\)"):
        common.train([job], nice=0)
    assert "leanseg: error:" in log.read_text() and "missing.yaml" in log.read_text()


def test_machine_and_write_json(common, tmp_path):
    machine = common.machine(note="x")
    assert machine["note"] == "x" and machine["leanseg"]["path"].endswith("leanseg")
    target = tmp_path / "new" / "result.json"
    common.write_json(target, {"machine": machine, "path": tmp_path})
    assert json.loads(target.read_text())["path"] == str(tmp_path)
