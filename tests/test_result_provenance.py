"""Every result file says how it was made (issue 30): command, date, commit, machine.

``benchmarks/common.py`` writes them (:func:`write_result`) and checks them
(:func:`missing_provenance`); this test runs the check over every JSON file under
``benchmarks/results/``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Result files written before their scripts recorded everything, kept until they are re-run,
# each with what re-running it needs. The list only shrinks: a file that now has every field
# must leave it (test_awaiting_files_still_lack_a_field).
AWAITING_RERUN: dict[str, str] = {
    # Figures that are times: not re-measured while other jobs share the 2 cores.
    "fast_training.json": (
        "its train part (steps re-run quietly on 2026-12-08), a 46 min training: "
        "python benchmarks/training/fast_training.py train --runs no_frozen_bn_or_stages --seeds 0"
    ),
    # Times, and the checkpoint of a CamVid recipe training (67 min on 2 quiet threads) first.
    "inference_options.json": (
        "latency figures: needs a quiet machine, after a recipe training (python "
        "benchmarks/training/camvid_recipe.py): python benchmarks/speed/inference_options.py "
        "--threads 2 --compile"
    ),
    "inference_options_onnxruntime.json": (
        "latency figures: needs a quiet machine, after a recipe training: python "
        "benchmarks/speed/inference_options.py --threads 2 --onnxruntime --json "
        "benchmarks/results/inference_options_onnxruntime.json"
    ),
    "subnormal_step.json": (
        "step times: needs a quiet machine, after a 2-thread recipe training "
        "(runs/lite0/ladder_camvid_2t_slow): python benchmarks/speed/subnormal_step.py "
        "--checkpoint runs/lite0/ladder_camvid_2t_slow/checkpoints/last.pt --threads 2 --repeats 6"
    ),
    "dense_crf.json": (
        "CRF times beside mIoU, after a recipe training (runs/lite0/ladder_camvid_2t): python "
        "benchmarks/papers/dense_crf.py --settings 5/70/6 1/70/6/1 10/90/3"
    ),
    "dense_crf_reference.json": (
        "after a recipe training and a pydensecrf2 build (~20 min): the export / reference / "
        "compare steps of benchmarks/papers/dense_crf_reference.py"
    ),
    # Trainings longer than 10 minutes.
    "camvid_recipe.json": (
        "training, 67 min quiet on 2 threads: python benchmarks/training/camvid_recipe.py --force "
        "--set train.num_threads=2 work_dir=runs/lite0/ladder_camvid_2t"
    ),
    "camvid_recipe_1thread.json": (
        "training, 91 min on 1 thread: python benchmarks/training/camvid_recipe.py --force --set "
        "train.max_iters=1800 train.num_threads=1 --json "
        "benchmarks/results/camvid_recipe_1thread.json"
    ),
    "camvid_recipe_unweighted.json": (
        "training, 80 min on 1 thread: python benchmarks/training/camvid_recipe.py --force --set "
        "model.head.class_weights=null train.max_iters=1800 train.num_threads=1 --json "
        "benchmarks/results/camvid_recipe_unweighted.json"
    ),
    "camvid_recipe_scratch.json": (
        "training, 86 min on 2 threads: python benchmarks/training/camvid_recipe.py --force --set "
        "model.backbone.pretrained=null work_dir=runs/lite0/ladder_camvid_scratch --json "
        "benchmarks/results/camvid_recipe_scratch.json"
    ),
    "multi_domain.json": (
        "three trainings, ~4.5 h on 1 thread: python benchmarks/papers/multi_domain.py --iters 600"
    ),
    "nrd_train_compare.json": (
        "six trainings, ~65 min on 1 thread: python benchmarks/papers/nrd_train_compare.py, then "
        "--report-only --out benchmarks/results/nrd_train_compare.json"
    ),
    "scale_selection.json": (
        "eight trainings, 71 min on 2 threads: python benchmarks/papers/scale_selection.py --jobs 2"
    ),
}


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("common")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def result_files() -> list[Path]:
    return sorted(RESULTS.rglob("*.json"))


@pytest.mark.parametrize("path", result_files(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_result_file_records_how_it_was_made(common, path):
    name = str(path.relative_to(RESULTS))
    if name in AWAITING_RERUN:
        pytest.skip(f"awaiting a re-run: {AWAITING_RERUN[name]}")
    missing = common.missing_provenance(json.loads(path.read_text()))
    assert missing == [], f"{name} lacks {missing}; write it with common.write_result"


def test_awaiting_files_still_lack_a_field(common):
    for name in AWAITING_RERUN:
        path = RESULTS / name
        assert path.is_file(), f"{name} is listed but gone: take it off the list"
        assert common.missing_provenance(json.loads(path.read_text())), (
            f"{name} records everything now: take it off AWAITING_RERUN"
        )


def test_write_result_adds_command_date_and_machine(common, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "x.py"), "--fast", "a b"])
    path = tmp_path / "out" / "r.json"
    common.write_result(path, {"miou": 71.5})
    record = json.loads(path.read_text())
    assert record["miou"] == 71.5
    assert record["command"] == "python benchmarks/x.py --fast 'a b'"
    assert common.missing_provenance(record) == []
    # A command the figures state (a script that ran another) is kept.
    common.write_result(path, {"miou": 1.0, "command": "leanseg train c.yaml"})
    assert json.loads(path.read_text())["command"] == "leanseg train c.yaml"


@pytest.mark.parametrize(
    "field, change",
    [
        ("command", lambda r: r.pop("command")),
        ("date", lambda r: r.update(date="yesterday")),
        ("commit", lambda r: r["machine"]["leanseg"].update(commit=None)),
        ("dirty", lambda r: r["machine"]["leanseg"].pop("dirty")),
        ("cores", lambda r: r["machine"].pop("cpu_count")),
        ("cpu or gpu model", lambda r: r["machine"].update(device_name="")),
        ("threads", lambda r: r["machine"].pop("num_threads")),
        ("torch version", lambda r: r["machine"].pop("torch_version")),
        ("device", lambda r: r["machine"].pop("device")),
    ],
)
def test_each_missing_field_is_named(common, tmp_path, field, change):
    path = tmp_path / "r.json"
    common.write_result(path, {"x": 1})
    record = json.loads(path.read_text())
    change(record)
    assert common.missing_provenance(record) == [field]


def test_a_file_that_is_not_an_object_lacks_everything(common):
    assert common.missing_provenance([1, 2]) == list(common.PROVENANCE_FIELDS)


def test_a_file_written_in_parts_says_when_and_where_each_part_was_made(common, tmp_path):
    common.write_result(tmp_path / "r.json", {"steps": {}, "train": {}})
    record = json.loads((tmp_path / "r.json").read_text())
    assert common.missing_provenance(record) == []
    record["commands"] = {"steps": "python a.py steps", "train": "python a.py train"}
    record["machines"] = {"steps": {"cpu": "x"}}
    record["dates"] = {"steps": "2026-12-08T01:20:46+00:00"}
    assert common.missing_provenance(record) == ["machines.train", "dates.train"]
    record["machines"]["train"] = {"cpu": "x"}
    record["dates"]["train"] = "2026-12-08T02:00:00+00:00"
    assert common.missing_provenance(record) == []
