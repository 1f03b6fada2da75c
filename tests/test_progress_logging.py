"""Progress that works where users run training, and one unit for mIoU (issue 28, items 3-4).

- ``leanseg train`` with stdout to a file prints plain progress lines, the last iteration and
  each validation's summary, while it runs (not only at the end);
- :class:`~leanseg.training.progress.TrainProgress` prints a line every ``every_seconds`` and
  always the first and last iteration, and on a terminal draws the bar instead;
- ``metrics.jsonl`` logs the last iteration and per-class IoU by class name, TensorBoard gets a
  scalar per class;
- mIoU is shown in percent with one decimal, and the JSON percent keys hold the printed number;
- ``leanseg eval`` takes ``--no-progress``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from leanseg.cli import main
from leanseg.files.run_dir import RunDirectory
from leanseg.metrics.semantic import SegmentationMetric, format_percent, percent, percent_scores
from leanseg.training import metrics_log
from leanseg.training.metrics_log import MetricsLog
from leanseg.training.progress import TrainProgress, can_redraw, format_duration
from test_train_e2e import val_records, write_config

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TerminalFile(StringIO):
    def isatty(self) -> bool:
        return True


def plain_console() -> Console:
    """A console writing to a file, as under nohup or in CI."""
    return Console(file=StringIO(), width=80)


def run_steps(display: TrainProgress, clock: FakeClock, steps: int, seconds: float) -> None:
    with display:
        for iteration in range(display.start + 1, display.start + steps + 1):
            clock.now += seconds
            display.step(iteration, {"loss": 1.0 / iteration, "lr": 1e-3}, seconds)


def iterations_printed(text: str) -> list[int]:
    lines = [line for line in text.splitlines() if line.startswith("iter ")]
    return [int(line.split()[1].split("/")[0]) for line in lines]


# ---------------------------------------------------------------------- the plain lines


def test_lines_every_interval_and_always_first_and_last() -> None:
    console, clock = plain_console(), FakeClock()
    display = TrainProgress(console, max_iters=20, start=0, every_seconds=10.0, clock=clock)
    run_steps(display, clock, 20, seconds=3.0)
    # 3 s a step, a line once 10 s have passed since the last: 1, 5, 9, 13, 17; and 20.
    assert iterations_printed(console.file.getvalue()) == [1, 5, 9, 13, 17, 20]


def test_line_holds_loss_lr_step_time_and_eta() -> None:
    console, clock = plain_console(), FakeClock()
    display = TrainProgress(console, max_iters=100, start=0, every_seconds=60.0, clock=clock)
    run_steps(display, clock, 40, seconds=2.0)
    first = console.file.getvalue().splitlines()[0]
    assert first == "iter 1/100  loss 1.0000  lr 1.00e-03  2.000 s/iter  eta 3m18s"


def test_resumed_run_counts_from_where_it_resumed() -> None:
    console, clock = plain_console(), FakeClock()
    display = TrainProgress(console, max_iters=10, start=6, every_seconds=100.0, clock=clock)
    run_steps(display, clock, 4, seconds=1.0)
    assert iterations_printed(console.file.getvalue()) == [7, 10]


def test_terminal_gets_the_bar_and_no_lines() -> None:
    console = Console(file=TerminalFile(), force_terminal=True, force_interactive=True)
    assert can_redraw(console)
    clock = FakeClock()
    display = TrainProgress(console, max_iters=5, start=0, every_seconds=0.0, clock=clock)
    assert display.live
    run_steps(display, clock, 5, seconds=1.0)
    drawn = console.file.getvalue()
    assert iterations_printed(drawn) == []
    # The bar, drawn up to the last step, with that step's loss (1 / 5) and learning rate.
    assert "━" in drawn and "5/5" in drawn and "loss 0.200 lr 1.00e-03" in drawn
    # Asked for no bar (--no-progress), the same terminal gets the lines.
    console = Console(file=TerminalFile(), force_terminal=True, force_interactive=True)
    display = TrainProgress(console, max_iters=5, start=0, live=False, clock=clock)
    run_steps(display, clock, 5, seconds=1.0)
    assert iterations_printed(console.file.getvalue()) == [1, 5]


def test_forced_colour_is_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI setups set FORCE_COLOR, which rich takes for a terminal; a file still gets lines."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    console = Console(file=StringIO())
    assert console.is_terminal and not can_redraw(console)


def test_other_ranks_show_nothing() -> None:
    console, clock = plain_console(), FakeClock()
    display = TrainProgress(console, max_iters=3, start=0, enabled=False, clock=clock)
    run_steps(display, clock, 3, seconds=1.0)
    assert console.file.getvalue() == ""


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 44.6, 60, 774, 3600, 11100)] == [
        "0s",
        "45s",
        "1m00s",
        "12m54s",
        "1h00m",
        "3h05m",
    ]


# ---------------------------------------------------------------------- units


def test_percent_is_the_printed_number() -> None:
    assert percent(0.72449) == 72.4
    assert percent(0.72451) == 72.5
    assert percent(1.0) == 100.0
    assert percent(None) is None and percent(math.nan) is None
    assert format_percent(0.72449) == "72.4" and format_percent(math.nan) == "-"


def test_percent_scores_name_the_classes() -> None:
    import torch

    metric = SegmentationMetric(num_classes=3, boundary_width=1)
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
    scores = metric.compute()
    record = percent_scores(scores, ["road", "car", "sky"])
    assert record["miou_percent"] == percent(scores.miou)
    assert record["iou_percent"] == {"road": 50.0, "car": 66.7, "sky": None}
    assert "boundary_miou_percent" in record
    with pytest.raises(ValueError, match="class names"):
        percent_scores(scores, ["road"])


# ---------------------------------------------------------------------- TensorBoard


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: dict[str, tuple[float, int]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag] = (value, step)

    def close(self) -> None:
        pass


def test_tensorboard_gets_a_scalar_per_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = FakeWriter()
    monkeypatch.setattr(metrics_log, "_tensorboard_writer", lambda run_dir: writer)
    log = MetricsLog(RunDirectory(tmp_path), enabled=True)
    log.write(
        {
            "iteration": 8,
            "split": "val",
            "miou": 0.5,
            "iou": [0.25, None],
            "miou_percent": 50.0,
            "iou_percent": {"road": 25.0, "sky": None},
        }
    )
    assert writer.scalars == {
        "val/miou": (0.5, 8),
        "val/miou_percent": (50.0, 8),
        "val/iou_percent/road": (25.0, 8),
    }


# ---------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_train_to_a_file_prints_progress_and_the_last_iteration(tmp_path: Path) -> None:
    """The issue's check: ``leanseg train > file`` (a file, as under nohup or in CI)."""
    config = write_config(tmp_path, train={"log_interval": 4})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    out_path = tmp_path / "train.log"
    with out_path.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "leanseg.cli", "train", str(config), "--log-every", "0.01"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr
    text = out_path.read_text()
    lines = text.splitlines()
    # A line per iteration at a 0.01 s interval, the 6th (last) among them; plain text only.
    assert iterations_printed(text) == [1, 2, 3, 4, 5, 6]
    assert "\x1b[" not in text
    step = next(line for line in lines if line.startswith("iter 6/6 "))
    assert "loss " in step and " lr " in step and " s/iter" in step and " eta " in step
    # A summary after each validation (eval_interval 3), after its step's line.
    summaries = [line for line in lines if line.startswith("val iter ")]
    assert [s.split()[2] for s in summaries] == ["3/6", "6/6"]
    assert lines.index(summaries[-1]) > lines.index(step)
    # mIoU in percent, one decimal, the same number as in metrics.jsonl's miou_percent.
    run_dir = tmp_path / "run"
    records = val_records(run_dir)
    for summary, record in zip(summaries, records, strict=True):
        assert f"mIoU {record['miou_percent']:.1f} %" in summary
        assert record["miou_percent"] == percent(record["miou"])
        assert list(record["iou_percent"]) == CLASS_NAMES
    best = max(records, key=lambda r: r["miou"])
    assert f"best mIoU {best['miou_percent']:.1f} % (iteration {best['iteration']})" in text
    # metrics.jsonl logs every log_interval steps and the last one.
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged if r["split"] == "train"] == [4, 6]


@pytest.mark.slow
def test_eval_takes_no_progress_and_prints_json_in_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leanseg.models import load_run_config
    from leanseg.training.trainer import Trainer

    cfg = load_run_config(write_config(tmp_path, train={"max_iters": 2, "eval_interval": 2}))
    Trainer.from_config(cfg, console=plain_console(), show_progress=False).train()
    capsys.readouterr()
    target = str(tmp_path / "run")
    assert main(["eval", target, "--no-progress", "--max-images", "2", "--json", "-"]) == 0
    out = capsys.readouterr().out
    table, json_text = out[: out.index("\n{") + 1], out[out.index("\n{") + 1 :]
    scores = json.loads(json_text)
    assert scores["miou_percent"] == percent(scores["miou"])
    assert list(scores["iou_percent"]) == CLASS_NAMES
    mean_row = next(line for line in table.splitlines() if "mean" in line)
    assert f"{scores['miou_percent']:.1f}" in mean_row
