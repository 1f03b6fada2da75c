"""The README's generated tables match the JSON they are written from (issue 26).

Fix a failure with ``python benchmarks/tables.py``, which rewrites the README's block between
the ``heads-table`` markers from ``benchmarks/results/heads_camvid.json``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def tables(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("tables")


def test_readme_heads_table_is_written_from_the_json(tables):
    record = json.loads(tables.HEADS_JSON.read_text())
    text = tables.README.read_text()
    assert tables.replace_block(text, tables.readme_block(record)) == text, (
        "README.md's heads table differs from benchmarks/results/heads_camvid.json: "
        "run python benchmarks/tables.py"
    )


def test_heads_json_holds_every_row_and_the_verdicts(tables):
    record = json.loads(tables.HEADS_JSON.read_text())
    assert record["budget"]["recipe"] == "configs/lite0/ladder_camvid_fast.yaml"
    rows = record["heads"]
    assert {f"sandf_{row}" for row in "abcdefghi"} <= set(rows)
    for name, row in rows.items():
        finished = len(row["seeds"])
        if finished < record["budget"]["required_seeds"]:
            assert row["status"] == f"pending ({finished} of 3 seeds)", name
    assert all(row["source"] and row["verdict"] for row in record["verdicts"])
