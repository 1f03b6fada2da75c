"""``leanseg report``: one self-contained, escaped HTML file about tiny 2-iteration runs."""

from __future__ import annotations

import argparse
import base64
import builtins
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leanseg.commands.report import add_parser as add_report_parser
from leanseg.config import ConfigError
from leanseg.models import load_run_config
from leanseg.report import write_report
from leanseg.report.gather import run_name
from leanseg.training.trainer import Trainer

pytestmark = pytest.mark.slow

TINY = [
    "model.backbone.name=resnet18",
    "model.head.name=bilinear",
    "data.dataset=synthetic",
    "data.options={num_samples: 2, size: [64, 96], seed: 0}",
    "data.crop_size=[64, 96]",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_iters=2",
    "train.log_interval=1",
    "train.eval_interval=2",
    "train.checkpoint_interval=2",
    "train.num_threads=1",
    "eval.max_images=1",
]
# A run name that is markup: it must come out as text.
HOSTILE = "run<script>alert(1)<"
SMALL = {"max_images": 1, "num_panels": 1, "bench_size": (64, 96)}
RUN_HEADINGS = (
    "Training curves",
    "Per-class IoU",
    "Confusion matrix",
    "Prediction panels",
    "Cost",
)
IMG = re.compile(r"<img\b[^>]*>")
DATA_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _train(root: Path, *extra: str) -> Path:
    Trainer.from_config(
        load_run_config(None, [*TINY, *extra, f"work_dir={root}"]), show_progress=False
    ).train()
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("runs")
    first = _train(folder / HOSTILE)
    second = _train(folder / "second", "train.lr=0.001", "train.seed=1")
    return first, second


@pytest.fixture(scope="module")
def one_report(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report([runs[0]], out, **SMALL)
    return out, out.read_text(encoding="utf-8")


def _pngs(document: str) -> list[np.ndarray]:
    tags = IMG.findall(document)
    pictures = []
    for tag in tags:
        match = DATA_PNG.search(tag)
        assert match, f"an <img> that is not an embedded PNG: {tag[:80]}"
        data = base64.b64decode(match.group(1), validate=True)
        Image.open(io.BytesIO(data)).verify()
        pictures.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return pictures


def _blank(picture: np.ndarray) -> bool:
    return len(np.unique(picture.reshape(-1, 3), axis=0)) < 2


def test_one_run_gives_one_self_contained_file(one_report):
    out, document = one_report
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    for heading in RUN_HEADINGS:
        assert f">{heading}</h3>" in document, heading
    pictures = _pngs(document)
    # Curves, IoU bars, confusion matrix, one panel.
    assert len(pictures) == 4
    assert not any(_blank(picture) for picture in pictures)
    assert not re.search(r"https?:", document)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", document, re.IGNORECASE)
    assert re.findall(r"\b(?:src|href)=\"([^\"]*)\"", document) == [
        m for m in re.findall(r"\bsrc=\"([^\"]*)\"", document) if m.startswith("data:image/png")
    ]


def test_text_from_files_is_escaped(one_report):
    _, document = one_report
    assert "<script>" not in document
    assert "run&lt;script&gt;alert(1)&lt;" in document


def test_two_runs_give_a_side_by_side_table_and_a_latency_plot(runs, tmp_path):
    out = tmp_path / "two.html"
    write_report(list(runs), out, **SMALL)
    document = out.read_text(encoding="utf-8")
    assert ">Side-by-side comparison</h2>" in document
    assert ">Accuracy vs latency</h2>" in document
    plot = document.split(">Accuracy vs latency</h2>")[1].split("<h2")[0]
    assert len(_pngs(plot)) == 1, "no plot of the two runs under its heading"
    table = document.split(">Side-by-side comparison</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header and one row per run
    for run in runs:  # named by their folders (outside the working directory: absolute)
        assert f"<td>{html.escape(str(run.resolve()))}</td>" in table
    assert "run&lt;script&gt;alert(1)&lt;</td>" in table
    assert document.count(">Training curves</h3>") == 2
    assert not any(_blank(p) for p in _pngs(document))


def test_runs_are_named_by_their_folder_path(one_report, runs, tmp_path, monkeypatch):
    # Issue 28: a run was named by its folder's name alone: the demo's read "Run: run".
    _, document = one_report
    assert f">Run: {html.escape(str(runs[0].resolve()))}</h2>" in document
    (tmp_path / "demo" / "run").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert run_name(Path("demo/run")) == run_name(tmp_path / "demo" / "run") == "demo/run"
    assert run_name(Path(".")) == tmp_path.resolve().name
    monkeypatch.chdir(tmp_path / "demo")
    assert run_name(Path("..")) == str(tmp_path.resolve())


# Two datasets in one run (thesis ch. 5): the same generator with other scenes.
TWO_DATASETS = (
    "data.datasets=["
    "{dataset: synthetic, name: street, options: {num_samples: 2, size: [64, 96], seed: 0}}, "
    "{dataset: synthetic, name: town, options: {num_samples: 2, size: [64, 96], seed: 1}}]"
)


def _dataset_rows(document: str) -> list[list[str]]:
    table = document.split(">Scores per dataset</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]


def test_runs_on_several_datasets_get_a_row_per_dataset(runs, one_report, tmp_path):
    _, document = one_report
    assert "Scores per dataset" not in document  # one run, one dataset
    single = [o for o in TINY if not o.startswith(("data.dataset=", "data.options="))]
    multi = tmp_path / "multi"
    Trainer.from_config(
        load_run_config(None, [*single, TWO_DATASETS, f"work_dir={multi}"]), show_progress=False
    ).train()
    out = tmp_path / "datasets.html"
    write_report([runs[1], multi], out, **SMALL)
    rows = _dataset_rows(out.read_text(encoding="utf-8"))
    assert rows[0] == [
        "dataset",
        f"mIoU: {runs[1].resolve()}",
        f"mIoU: {multi.resolve()}",
        f"foreign pixels: {multi.resolve()}",
    ]
    assert [row[0] for row in rows[1:]] == ["synthetic", "street", "town"]
    assert rows[1][1] != "-" and rows[1][2:] == ["-", "-"]  # the first run: its one dataset
    for row in rows[2:]:
        assert row[1] == "-" and all(re.fullmatch(r"\d+\.\d", cell) for cell in row[2:])


def test_missing_matplotlib_names_the_extra(runs, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "r.html"
    with pytest.raises(ConfigError, match=re.escape('pip install "leanseg[report]"')):
        write_report([runs[0]], out, **SMALL)
    assert not out.exists()


def test_never_replaces_what_it_did_not_write(runs, one_report, tmp_path):
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>mine</p>")
    for force in (False, True):  # not even --force replaces a file the report did not write
        with pytest.raises(ConfigError, match="is not an HTML report.*not even --force"):
            write_report([runs[0]], foreign, force=force, **SMALL)
    assert foreign.read_text() == "<p>mine</p>"
    with pytest.raises(ConfigError, match="is a folder"):
        write_report([runs[0]], tmp_path, **SMALL)
    config = runs[0] / "config.yaml"
    before = config.read_bytes()
    with pytest.raises(ConfigError, match="file of the run"):
        write_report([runs[0]], config, force=True, **SMALL)
    assert config.read_bytes() == before
    # A previous report is replaced with --force, and only with it.
    previous = tmp_path / "previous.html"
    shutil.copy(one_report[0], previous)
    cheap = {"evaluate": False, "bench_size": None}
    with pytest.raises(ConfigError, match="already holds an HTML report.*--force"):
        write_report([runs[0]], previous, **cheap)
    assert previous.read_bytes() == one_report[0].read_bytes()
    write_report([runs[0]], previous, force=True, **cheap)
    assert ">Training curves</h3>" in previous.read_text(encoding="utf-8")
    assert previous.read_bytes() != one_report[0].read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_run_without_checkpoint_and_a_bench_file(runs, tmp_path):
    bare = tmp_path / "in-progress"
    bare.mkdir()
    for name in ("config.yaml", "metrics.jsonl", ".leanseg-run"):
        shutil.copy(runs[1] / name, bare / name)
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "parameters": 1234567,
                "gflops": 1.5,
                "latency_median_ms": 12.0,
                "input_shape": [1, 3, 64, 96],
                "peak_memory_mib": 100.0,
                "device_name": "a <b>GPU</b>",
            }
        )
    )
    out = tmp_path / "r.html"
    write_report([bare], out, bench_json=[bench])
    document = out.read_text(encoding="utf-8")
    assert "has no checkpoint yet" in document
    assert '<td class="num">1.235 M</td>' in document and "a &lt;b&gt;GPU&lt;/b&gt;" in document
    for heading in RUN_HEADINGS:
        assert f">{heading}</h3>" in document
    # Per-class IoU falls back to the logged validation; curves are drawn.
    assert "best logged validation" in document and len(_pngs(document)) == 2
    with pytest.raises(ConfigError, match="one file per run"):
        write_report([bare, runs[0]], out, bench_json=[bench])
    with pytest.raises(ConfigError, match="not a run directory"):
        write_report([tmp_path], tmp_path / "x.html")


def test_command_arguments_and_handler(runs, tmp_path, capsys):
    from leanseg.cli import main

    out = tmp_path / "cli.html"
    argv = ["report", str(runs[0]), "--out", str(out), "--no-eval", "--bench-size", "none"]
    assert main(argv) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    assert parser.parse_args(["report", "r", "--out", "o"]).bench_size == (256, 512)
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "r", "--out", "o", "--bench-size", "12"])


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def test_report_renders_in_a_headless_browser(one_report, tmp_path):
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        pytest.skip(
            "no Chromium/Chrome binary on PATH (looked for " + ", ".join(BROWSERS) + "); "
            "install one with the system package manager (e.g. apt-get install chromium) to "
            "run this check"
        )
    screenshot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={screenshot}",
            one_report[0].resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    picture = np.asarray(Image.open(screenshot).convert("RGB"))
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    assert not _blank(picture)
    # More than text on white: the embedded plots show colour.
    assert (picture.std(axis=2) > 30).mean() > 0.01


def test_panels_spread_over_the_split():
    from leanseg.report.measure import panel_indices

    assert panel_indices(101, 3) == [0, 50, 100]
    assert panel_indices(2, 3) == [0, 1]
    assert panel_indices(5, 1) == [0] and panel_indices(5, 0) == [] and panel_indices(0, 3) == []


def test_write_demo_report(runs, tmp_path):
    from leanseg.report import write_demo_report

    out = write_demo_report(runs[0], tmp_path / "report.html", bench_size=(64, 96))
    document = out.read_text(encoding="utf-8")
    assert "<title>leanseg demo:" in document and ">Cost</h3>" in document
    assert "1x3x64x96" in document
    write_demo_report(runs[0], out, bench_size=(64, 96))  # a rerun replaces its own report
