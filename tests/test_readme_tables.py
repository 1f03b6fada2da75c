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


# --------------------------------------------------------------------------- quoted figures


@pytest.fixture
def figures(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("figures")


def test_every_page_is_what_tables_py_writes(tables):
    record = json.loads(tables.HEADS_JSON.read_text())
    for page, text in tables.written_pages(record).items():
        assert page.read_text() == text, f"{page} is stale: run python benchmarks/tables.py"


def test_every_marked_figure_is_known_and_every_known_figure_is_quoted(figures):
    marked = set()
    for page in figures.PAGES:
        marked |= set(figures.marked_names(page.read_text()))
    assert marked <= set(figures.FIGURES)
    assert set(figures.FIGURES) <= marked, "a figure nobody quotes: remove it from FIGURES"


def test_a_changed_result_file_changes_the_quoted_figure(figures, tmp_path):
    (tmp_path / "camvid_recipe.json").write_text(json.dumps({"val_miou": 70.04}))
    text = "recipe <!-- fig:recipe.miou -->72.1<!-- /fig --> % and prose 3 %"
    assert (
        figures.fill(text, tmp_path)
        == "recipe <!-- fig:recipe.miou -->70.0<!-- /fig --> % and prose 3 %"
    )
    with pytest.raises(KeyError, match="no figure"):
        figures.fill("<!-- fig:recipe.nope -->1<!-- /fig -->", tmp_path)


# Sizes in the README that are limits leanseg sets (leanseg.config.limits), not measured figures.
SETTINGS = ("a file over 1 MiB", "weight files | 4 GiB", "structure at most 64 MiB")


def test_no_measured_looking_number_outside_the_markers(figures):
    """Percentages, milliseconds, minutes and MiB / GiB in the pages' prose come from result
    files: each sits in a figure marker or the generated heads block (code blocks are examples),
    unless it is a setting (:data:`SETTINGS`), not a measurement."""
    import re

    text = "\n".join(page.read_text() for page in figures.PAGES)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    start, end = text.find("<!-- heads-table:start"), text.find("<!-- heads-table:end -->")
    text = figures.MARKER.sub("", text[:start] + text[end:])
    for setting in SETTINGS:
        assert setting in text, f"{setting!r} is no longer in the README: drop it from SETTINGS"
        text = text.replace(setting, "")
    typed = re.findall(r"[^\n]{0,40}\b\d+(?:\.\d+)?\s?(?:%|ms\b|minutes\b|min\b|MiB\b|GiB\b)", text)
    assert typed == [], f"figures typed by hand (mark them, benchmarks/figures.py): {typed}"
