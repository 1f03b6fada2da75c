"""Output flags never overwrite what they did not write (issue 27, item 1; leanseg.files.outputs).

For every flag that names one output file (``eval``, ``bench`` and ``quadtree stats`` ``--json``,
``export --out``, ``report --out``): an existing file is refused without ``--force``; ``--force``
replaces only a file of the same kind leanseg wrote, never a checkpoint, a config, a run's file
or another file; a write stopped midway leaves the old file and no temporary file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
from pathlib import Path

import pytest

from leanseg.cli import main
from leanseg.commands.predict import PREDICT_MANIFEST
from leanseg.config import ConfigError
from leanseg.files.atomic import terminate_raises
from leanseg.files.outputs import (
    OutputExistsError,
    check_output_path,
    json_kind,
    json_result,
    write_output,
)
from leanseg.files.run_dir import MARKER
from leanseg.report.output import REPORT, check_output
from leanseg.report.output import write_output as write_report_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EVAL = json_kind("eval")
FOREIGN = b"my notes\n"
QUADTREE_CONFIG = (
    "model:\n  backbone: {name: resnet18}\n  head: {name: qgn}\n"
    "data:\n  dataset: synthetic\n  options: {num_samples: 2, size: [64, 96], seed: 0}\n"
)
SIGTERM_IS_DEFAULT = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _marked(path: Path, command: str, **payload: object) -> bytes:
    """Write ``path`` as an earlier ``leanseg COMMAND --json`` result; return its bytes."""
    path.write_text(json.dumps(json_result(command, {"earlier": True, **payload})))
    return path.read_bytes()


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def _fake_run(folder: Path, checkpoint: Path) -> Path:
    """A run directory: marker, config, a real checkpoint as checkpoints/best.pt."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / MARKER).write_text("{}\n")
    (folder / "config.yaml").write_text("model: {}\n")
    (folder / "metrics.jsonl").write_text(json.dumps(json_result("eval", {})) + "\n")
    shutil.copy(checkpoint, folder / "checkpoints" / "best.pt")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("leanseg: error: "), err
    return err


# ---------------------------------------------------------------------- the rule


def test_a_new_path_is_written_and_the_marker_keeps_every_key(tmp_path):
    target = tmp_path / "sub" / "scores.json"
    assert check_output_path(target, EVAL, force=False) == target
    payload = json_result("eval", {"miou": 0.5, "checkpoint": "x.pt"})
    assert list(payload) == ["leanseg", "miou", "checkpoint"]
    assert payload["leanseg"]["kind"] == "eval" and payload["leanseg"]["version"]
    write_output(target, EVAL, lambda h: h.write(json.dumps(payload).encode()), force=False)
    assert json.loads(target.read_text())["miou"] == 0.5
    assert EVAL.recognise(target) and not json_kind("bench").recognise(target)


@pytest.mark.parametrize("force", [False, True])
def test_an_unrelated_file_is_never_replaced(tmp_path, force):
    for name, content in [("notes.txt", FOREIGN), ("other.json", b'{"miou": 1}'), ("e", b"")]:
        target = tmp_path / name
        target.write_bytes(content)
        with pytest.raises(OutputExistsError) as raised:
            check_output_path(target, EVAL, force=force, flag="--json")
        message = str(raised.value)
        assert f"--json {target}" in message and "not even --force" in message
        assert target.read_bytes() == content


def test_an_earlier_result_of_the_same_kind_needs_force(tmp_path):
    target = tmp_path / "scores.json"
    before = _marked(target, "eval")
    with pytest.raises(OutputExistsError, match=r"already holds a leanseg eval --json.*--force"):
        check_output_path(target, EVAL, force=False, flag="--json")
    assert check_output_path(target, EVAL, force=True) == target
    write_output(target, EVAL, lambda h: h.write(b'{"new": 1}'), force=True)
    assert target.read_bytes() != before
    # A result of another command is another kind.
    _marked(target, "bench")
    with pytest.raises(OutputExistsError, match="not even --force"):
        check_output_path(target, EVAL, force=True)


def test_folders_links_and_paths_below_a_file_are_refused(tmp_path):
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_output_path(tmp_path, EVAL, force=True)
    result = tmp_path / "scores.json"
    _marked(result, "eval")
    link = tmp_path / "link.json"
    link.symlink_to(result)
    with pytest.raises(OutputExistsError, match="not even --force"):
        check_output_path(link, EVAL, force=True)
    blocker = tmp_path / "afile"
    blocker.write_bytes(FOREIGN)
    with pytest.raises(OutputExistsError, match=re.escape(f"{blocker} is a file, not a folder")):
        check_output_path(blocker / "scores.json", EVAL, force=True)


def test_checkpoints_configs_and_run_files_are_never_replaced(tmp_path, tiny_ladder_checkpoint):
    run = _fake_run(tmp_path / "run", tiny_ladder_checkpoint)
    before = _snapshot(run)
    # metrics.jsonl even holds a marked line: a run's file is refused by its name.
    for name in (
        "config.yaml",
        "metrics.jsonl",
        MARKER,
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        with pytest.raises(OutputExistsError, match=f"run {re.escape(str(run))}.*not even --force"):
            check_output_path(run / name, EVAL, force=True)
    loose = tmp_path / "best.pt"
    shutil.copy(tiny_ladder_checkpoint, loose)
    config = tmp_path / "config.yaml"
    config.write_text("model: {}\n")
    for path in (loose, config):
        for kind in (EVAL, json_kind("bench"), REPORT):
            with pytest.raises(OutputExistsError, match="not even --force"):
                check_output_path(path, kind, force=True)
    assert _snapshot(run) == before


@pytest.mark.parametrize("stop", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_write_stopped_midway_leaves_the_old_file_and_no_temporary(tmp_path, stop):
    target = tmp_path / "scores.json"
    before = _marked(target, "eval")

    def half_then_stop(handle):
        handle.write(b'{"half": ')
        raise stop

    with pytest.raises(type(stop)):
        write_output(target, EVAL, half_then_stop, force=True)
    assert target.read_bytes() == before and _temp_files(tmp_path) == []


@pytest.mark.skipif(not SIGTERM_IS_DEFAULT, reason="someone else handles SIGTERM here")
def test_sigterm_midway_removes_the_temporary_file(tmp_path):
    target = tmp_path / "scores.json"
    before = _marked(target, "eval")

    def half_then_terminated(handle):
        handle.write(b'{"half": ')
        handle.flush()
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as raised:
        write_output(target, EVAL, half_then_terminated, force=True)
    assert raised.value.code == 128 + signal.SIGTERM
    assert target.read_bytes() == before and _temp_files(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the write
    with terminate_raises():  # the handler that raises is set only within the block
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_new_output_gets_the_mode_of_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        target = write_output(tmp_path / "s.json", EVAL, lambda h: h.write(b"{}"), force=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


# ---------------------------------------------------------------------- eval --json


def test_eval_json_refuses_before_loading_anything(
    tmp_path, tiny_ladder_checkpoint, capsys, monkeypatch
):
    import leanseg.inference.loading

    loaded = []

    def no_loading(*args, **kwargs):
        loaded.append(args)
        raise AssertionError("the checkpoint was loaded before the --json target was checked")

    monkeypatch.setattr(leanseg.inference.loading, "load_trained_model", no_loading)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(FOREIGN)
    base = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--no-progress"]
    for force in ([], ["--force"]):
        assert main([*base, "--json", str(notes), *force]) == 2
        err = _one_line_error(capsys)
        assert str(notes) in err and "--force" in err
    assert notes.read_bytes() == FOREIGN
    earlier = tmp_path / "earlier.json"
    before = _marked(earlier, "eval")
    assert main([*base, "--json", str(earlier)]) == 2
    assert "pass --force to replace it" in _one_line_error(capsys)
    assert earlier.read_bytes() == before
    # The run's own checkpoint and config, named as the output of an eval of that run.
    run = _fake_run(tmp_path / "run", tiny_ladder_checkpoint)
    files = _snapshot(run)
    for name in ("checkpoints/best.pt", "config.yaml"):
        assert main(["eval", str(run), "--json", str(run / name), "--force"]) == 2
        assert "file of the run" in _one_line_error(capsys)
    assert _snapshot(run) == files
    assert loaded == []


def test_eval_json_force_replaces_an_earlier_result(tmp_path, tiny_ladder_checkpoint, capsys):
    earlier = tmp_path / "scores.json"
    _marked(earlier, "eval", miou=-1)
    base = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--no-progress"]
    assert main([*base, "--json", str(earlier), "--force"]) == 0
    scores = json.loads(earlier.read_text())
    assert scores["leanseg"]["kind"] == "eval" and "earlier" not in scores
    assert 0 <= scores["miou"] <= 1 and scores["checkpoint"] == str(tiny_ladder_checkpoint)
    assert _temp_files(tmp_path) == []
    capsys.readouterr()
    assert main([*base, "--json", "-"]) == 0  # stdout: never checked, still marked
    printed = capsys.readouterr().out
    record = json.loads(printed[printed.index("\n{") :])
    assert record["leanseg"]["kind"] == "eval" and record["miou"] == scores["miou"]


# ---------------------------------------------------------------------- bench --json


def test_bench_json_is_refused_or_replaced_by_the_rule(tmp_path, capsys):
    from leanseg.report.gather import read_bench_json

    config = str(CONFIGS / "baseline" / "rn18_bilinear_synthetic.yaml")
    base = ["bench", config, "--size", "64x96", "--repeats", "1", "--warmup", "0"]
    notes = tmp_path / "notes.txt"
    notes.write_bytes(FOREIGN)
    for force in ([], ["--force"]):
        assert main([*base, "--json", str(notes), *force]) == 2
        assert str(notes) in _one_line_error(capsys)
    assert notes.read_bytes() == FOREIGN
    earlier = tmp_path / "bench.json"
    before = _marked(earlier, "bench")
    assert main([*base, "--json", str(earlier)]) == 2
    assert "--force" in _one_line_error(capsys) and earlier.read_bytes() == before
    eval_result = tmp_path / "scores.json"
    before_eval = _marked(eval_result, "eval")
    assert main([*base, "--json", str(eval_result), "--force"]) == 2
    assert "is not a leanseg bench --json result" in _one_line_error(capsys)
    assert eval_result.read_bytes() == before_eval
    assert main([*base, "--json", str(earlier), "--force"]) == 0
    figures = read_bench_json(earlier)  # the report still reads a marked result
    assert figures["leanseg"]["kind"] == "bench" and figures["parameters"] > 0


# ---------------------------------------------------------------------- quadtree stats --json


def test_quadtree_json_is_refused_or_replaced_by_the_rule(tmp_path, capsys):
    config = tmp_path / "syn.yaml"
    config.write_text(QUADTREE_CONFIG)
    base = ["quadtree", "stats", str(config), "--split", "val"]
    for force in ([], ["--force"]):
        assert main([*base, "--json", str(config), *force]) == 2
        assert str(config) in _one_line_error(capsys)
    assert config.read_text() == QUADTREE_CONFIG
    earlier = tmp_path / "stats.json"
    before = _marked(earlier, "quadtree stats")
    assert main([*base, "--json", str(earlier)]) == 2
    assert "--force" in _one_line_error(capsys) and earlier.read_bytes() == before
    assert main([*base, "--json", str(earlier), "--force"]) == 0
    record = json.loads(earlier.read_text())
    assert record["leanseg"]["kind"] == "quadtree stats" and len(record["rows"]) == 1


def test_quadtree_json_write_stopped_midway_changes_nothing(tmp_path, monkeypatch, capsys):
    import leanseg.files.atomic

    def stopped(name, handle):  # called after the data reached the temporary file
        if name == "stats.json":
            raise KeyboardInterrupt

    monkeypatch.setattr(leanseg.files.atomic, "_maybe_kill_in_write", stopped)
    config = tmp_path / "syn.yaml"
    config.write_text(QUADTREE_CONFIG)
    earlier = tmp_path / "stats.json"
    before = _marked(earlier, "quadtree stats")
    argv = ["quadtree", "stats", str(config), "--split", "val", "--json", str(earlier), "--force"]
    assert main(argv) == 130
    assert earlier.read_bytes() == before and _temp_files(tmp_path) == []


# ---------------------------------------------------------------------- export --out


def test_export_refuses_what_it_did_not_write(tmp_path, tiny_ladder_checkpoint, capsys):
    config = str(CONFIGS / "baseline" / "rn18_bilinear_synthetic.yaml")
    loose = tmp_path / "best.pt"
    shutil.copy(tiny_ladder_checkpoint, loose)
    notes = tmp_path / "model.onnx"
    notes.write_bytes(FOREIGN)
    for out in (notes, loose):
        before = out.read_bytes()
        for force in ([], ["--force"]):
            argv = ["export", config, "--random-init", "--out", str(out), *force]
            assert main(argv) == 2
            err = _one_line_error(capsys)
            assert f"--out {out}" in err and "--force" in err
        assert out.read_bytes() == before
    run = _fake_run(tmp_path / "run", tiny_ladder_checkpoint)
    files = _snapshot(run)
    out = str(run / "checkpoints" / "best.pt")
    assert main(["export", str(run), "--out", out, "--force"]) == 2
    assert "file of the run" in _one_line_error(capsys)
    assert _snapshot(run) == files


def test_export_force_replaces_an_earlier_export_and_a_stopped_one_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import leanseg.export

    config = str(CONFIGS / "baseline" / "rn18_bilinear_synthetic.yaml")
    out = tmp_path / "model.onnx"
    argv = ["export", config, "--random-init", "--out", str(out), "--check-sizes", "64x96", "70x90"]
    assert main(argv) == 0
    assert leanseg.export.is_leanseg_onnx(out)
    first = out.read_bytes()
    assert main(argv) == 2
    assert "already holds an ONNX model" in _one_line_error(capsys)
    assert out.read_bytes() == first
    assert main([*argv, "--force"]) == 0
    assert leanseg.export.is_leanseg_onnx(out)

    # Stopped while exporting: the temporary file goes, the earlier export stays.
    kept = out.read_bytes()
    real_export = leanseg.export._export

    def export_then_stop(*args, **kwargs):
        real_export(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(leanseg.export, "_export", export_then_stop)
    assert main([*argv, "--force"]) == 130
    assert out.read_bytes() == kept and _temp_files(tmp_path) == []
    if SIGTERM_IS_DEFAULT:

        def export_then_terminated(*args, **kwargs):
            real_export(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(leanseg.export, "_export", export_then_terminated)
        with pytest.raises(SystemExit):
            main([*argv, "--force"])
        assert out.read_bytes() == kept and _temp_files(tmp_path) == []
    assert list(tmp_path.iterdir()) == [out]


# ---------------------------------------------------------------------- report --out


def test_report_out_is_refused_or_replaced_by_the_rule(tmp_path, tiny_ladder_checkpoint):
    run = _fake_run(tmp_path / "run", tiny_ladder_checkpoint)
    files = _snapshot(run)
    notes = tmp_path / "notes.html"
    notes.write_bytes(FOREIGN)
    for force in (False, True):
        with pytest.raises(ConfigError, match=f"{re.escape(str(notes))} exists.*not even --force"):
            check_output(notes, [run], force=force)
    # Another run's files too, though the report is not about that run.
    other = tmp_path / "other"
    for name in ("config.yaml", "checkpoints/best.pt"):
        with pytest.raises(ConfigError, match="file of the run"):
            check_output(run / name, [other], force=True)
    assert _snapshot(run) == files and notes.read_bytes() == FOREIGN

    earlier = tmp_path / "report.html"
    earlier.write_text('<!DOCTYPE html>\n<meta name="generator" content="leanseg report 0.1">\n')
    with pytest.raises(ConfigError, match="already holds an HTML report.*--force"):
        check_output(earlier, [run], force=False)
    check_output(earlier, [run], force=True)
    write_report_file(earlier, "<p>new</p>", force=True)
    assert earlier.read_text() == "<p>new</p>" and _temp_files(tmp_path) == []


# ---------------------------------------------------------------------- predict --out


def test_predict_never_replaces_a_file_it_did_not_write(tmp_path, tiny_ladder_checkpoint, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (48, 32), (10, 200, 30)).save(images / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(FOREIGN)
    argv = ["predict", str(images), "--checkpoint", str(tiny_ladder_checkpoint)]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 2
    assert str(out / "a.png") in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == FOREIGN and not (out / PREDICT_MANIFEST).exists()
