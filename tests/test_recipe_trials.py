"""``benchmarks/training/recipe_trials.py`` (issue 26): the results file keeps earlier rows."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def trials(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "training"))
    return importlib.import_module("recipe_trials")


def test_rows_of_runs_that_are_gone_are_kept_and_fresh_ones_replace_them(trials, tmp_path):
    path = tmp_path / "trials.json"
    earlier = [
        {"trial": "lr_12e-4", "seed": 0, "val_miou": 70.1, "command": "old"},
        {"trial": "recipe", "seed": 1, "val_miou": 68.6, "command": "old"},
        {"trial": "a_trial_since_removed", "seed": 0, "val_miou": 1.0, "command": "old"},
    ]
    path.write_text(json.dumps({"rows": earlier}))
    fresh = [{"trial": "lr_12e-4", "seed": 0, "val_miou": 70.5, "command": "new"}]
    rows = trials.merged_rows(path, fresh)
    assert [(r["trial"], r["seed"], r["command"]) for r in rows] == [
        ("recipe", 1, "old"),
        ("lr_12e-4", 0, "new"),
    ]


def test_without_an_earlier_file_the_fresh_rows_are_all(trials, tmp_path):
    fresh = [{"trial": "recipe", "seed": 0, "val_miou": 69.3}]
    assert trials.merged_rows(tmp_path / "missing.json", fresh) == fresh


def test_every_trial_changes_only_keys_the_recipe_accepts(trials):
    for name in trials.TRIALS:
        assert trials.max_iters(name) > 0, name
