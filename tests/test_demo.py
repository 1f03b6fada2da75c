"""``leanseg demo`` end to end, at a tiny size (the real one trains for minutes)."""

import json

import pytest

from leanseg.cli import main
from leanseg.demo import run_demo
from leanseg.files.run_dir import RunDirError

pytestmark = pytest.mark.slow


def test_demo_pipeline_writes_everything(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(
        out, iters=4, show_progress=False, num_train=6, num_val=3, scene_size=(64, 128)
    )
    for name in ("data", "run", "predictions", "summary.json", "report.html"):
        assert (out / name).exists()
    assert "<img" in (out / "report.html").read_text()
    assert (out / "run" / "checkpoints" / "best.pt").is_file()
    assert len(list((out / "data" / "images" / "train").glob("*.png"))) == 6
    assert len(list((out / "predictions").glob("*.png"))) == 3
    written = json.loads((out / "summary.json").read_text())
    assert written["model"]["miou"] == pytest.approx(summary["model"]["miou"])
    assert 0.0 <= written["colour_baseline"]["miou"] <= 1.0
    assert len(written["model"]["iou"]) == 11

    # A second demo into the same folder needs --force; a folder with foreign files is refused.
    with pytest.raises(RunDirError, match="--force"):
        run_demo(out, iters=2, show_progress=False, num_train=2, num_val=1, scene_size=(64, 128))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="notes.txt"):
        run_demo(out, iters=2, force=True, show_progress=False, scene_size=(64, 128))
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()  # only the demo's own files, its report included: replaced
    run_demo(out, iters=2, force=True, show_progress=False, num_train=2, num_val=1,
             scene_size=(64, 128))  # fmt: skip


def test_demo_command_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "thesis.pdf").write_bytes(b"%PDF")
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "thesis.pdf" in capsys.readouterr().err
