"""Nothing lost, nothing executed: run folders, ``--force``, checkpoint loading, the demo folder.

Most tests work on run folders built by hand (no training); the ones through ``leanseg train``
stop before the first iteration. Fault injection against real runs is in
``test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.demo import MARKER as DEMO_MARKER
from leanseg.demo import _prepare_output
from leanseg.files.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from leanseg.files.run_dir import MARKER, RunDirectory, RunDirError
from leanseg.models import load_run_config, run_config_from_dict
from leanseg.training.rng_state import set_rng_state
from leanseg.training.trainer import Trainer

TINY = {
    "model": {"backbone": {"name": "ssn_encoder"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 4, "size": [32, 64], "seed": 0},
        "crop_size": [32, 64],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {"max_iters": 2, "eval_interval": 2, "checkpoint_interval": 2, "log_interval": 1},
    "eval": {"max_images": 2},
}


def tiny_config(work_dir: Path, **train) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    raw["work_dir"] = str(work_dir)
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry below ``folder``: file bytes, symlink targets, folders."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


def made_run(root: Path, **train) -> RunDirectory:
    """A run folder as ``leanseg train`` creates it, with fake checkpoints and log lines."""
    run = RunDirectory(root)
    cfg = run_config_from_dict(tiny_config(root, **train))
    assert run.prepare(cfg, resume=False, force=False) == []
    run.last_checkpoint.write_bytes(b"last")
    run.best_checkpoint.write_bytes(b"best")
    run.append_metrics({"iteration": 1, "split": "train", "loss": 1.0})
    return run


# ---------------------------------------------------------------------- --force (defect 1)


def test_force_on_a_user_folder_with_a_config_deletes_nothing(tmp_path, monkeypatch, capsys):
    """``cd proj && leanseg train config.yaml --work-dir . --force`` must not wipe ``proj``."""
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    (project / "data" / "scan.png").write_bytes(b"\x89PNG user data")
    (project / "notes.md").write_text("my notes")
    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "last.pt").write_bytes(b"someone else's model")
    raw = tiny_config(Path("."))
    write_yaml(project / "config.yaml", raw)
    before = snapshot(project)
    monkeypatch.chdir(project)
    assert main(["train", "config.yaml", "--work-dir", ".", "--force", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leanseg: error:") and "\n" not in err
    assert "not a leanseg run" in err and MARKER in err
    assert snapshot(project) == before


def test_force_removes_only_what_leanseg_wrote(tmp_path):
    run = made_run(tmp_path / "run")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (run.root / "notes.txt").write_text("mine")
    (run.root / "link").symlink_to(outside)
    (run.checkpoint_dir / "epoch3_copy.pt").write_bytes(b"kept by the user")
    (run.checkpoint_dir / ".last.pt.0123abcd.tmp").write_bytes(b"stale")
    (run.root / "events.out.tfevents.1.host").write_bytes(b"events")

    notes = run.prepare(run_config_from_dict(tiny_config(run.root)), resume=False, force=True)
    assert any("notes.txt" in note for note in notes)
    assert sorted(p.name for p in run.root.iterdir()) == sorted(
        [MARKER, "checkpoints", "config.yaml", "link", "notes.txt"]
    )
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["epoch3_copy.pt"]
    assert outside.read_text() == "precious" and (run.root / "link").is_symlink()
    assert not run.metrics_path.exists()


@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl", "checkpoints/last.pt"])
def test_force_never_follows_or_replaces_a_symlink(tmp_path, name):
    run = made_run(tmp_path / "run")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (run.root / name).unlink()
    (run.root / name).symlink_to(outside)
    before = snapshot(run.root)
    with pytest.raises(RunDirError, match="symlink"):
        run.prepare(run_config_from_dict(tiny_config(run.root)), resume=False, force=True)
    assert snapshot(run.root) == before and outside.read_text() == "precious"


def test_force_leaves_a_symlinked_checkpoints_folder_alone(tmp_path):
    run = made_run(tmp_path / "run")
    elsewhere = tmp_path / "models"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_bytes(b"another run's model")
    for path in run.checkpoint_dir.iterdir():
        path.unlink()
    run.checkpoint_dir.rmdir()
    run.checkpoint_dir.symlink_to(elsewhere)
    with pytest.raises(RunDirError, match="checkpoints"):
        run.prepare(run_config_from_dict(tiny_config(run.root)), resume=False, force=True)
    assert (elsewhere / "last.pt").read_bytes() == b"another run's model"


def test_a_run_without_force_is_refused_and_a_file_is_not_a_run_folder(tmp_path):
    run = made_run(tmp_path / "run")
    cfg = run_config_from_dict(tiny_config(run.root))
    with pytest.raises(RunDirError, match="--force"):
        run.prepare(cfg, resume=False, force=False)
    plain_file = tmp_path / "file"
    plain_file.write_text("x")
    with pytest.raises(RunDirError, match="not a folder"):
        RunDirectory(plain_file).prepare(cfg, resume=False, force=True)


# ---------------------------------------------------------------------- checkpoints (defect 2)


class _Payload:
    """Unpickling this creates a folder: a stand-in for any code a crafted file could run."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def crafted_checkpoints(tmp_path: Path) -> tuple[Path, list[Path]]:
    """``(target, files)``: a torch.save zip and a bare pickle, both with the payload."""
    target = tmp_path / "pwned"
    as_zip = tmp_path / "crafted.pt"
    torch.save({"model": {"w": torch.ones(1)}, "iteration": _Payload(target)}, as_zip)
    as_pickle = tmp_path / "crafted.pkl"
    with as_pickle.open("wb") as handle:
        pickle.dump({"model": _Payload(target)}, handle)
    return target, [as_zip, as_pickle]


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    target, files = crafted_checkpoints(tmp_path)
    for path in files:
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
    assert not target.exists()


def test_crafted_pickle_is_refused_by_eval_predict_resume_and_pretrained(tmp_path, capsys):
    target, (crafted, _) = crafted_checkpoints(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(images / "a.png")
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path / "run"))
    pretrained = tiny_config(tmp_path / "run2")
    pretrained["model"]["backbone"] = {"name": "resnet18", "pretrained": str(crafted)}
    pretrained_config = write_yaml(tmp_path / "pretrained.yaml", pretrained)
    run = made_run(tmp_path / "run")
    run.last_checkpoint.write_bytes(crafted.read_bytes())
    before = snapshot(run.root)
    commands = {
        "eval": ["eval", str(config), "--checkpoint", str(crafted)],
        "predict": ["predict", "--checkpoint", str(crafted), str(images), "--out", "out"],
        "resume": ["train", str(config), "--resume", "--no-progress"],
        "pretrained": ["train", str(pretrained_config), "--no-progress"],
    }
    for name, command in commands.items():
        assert main(command) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("leanseg: error:") and "Traceback" not in err, name
        assert ("last.pt" if name == "resume" else "crafted.pt") in err, name
    assert snapshot(run.root) == before
    assert not target.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    """The trainer's state, RNG included, reads back with ``weights_only=True``."""
    cfg = load_run_config(
        write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "run", max_iters=1))
    )
    trainer = Trainer.from_config(cfg, show_progress=False)
    path = save_checkpoint(trainer._state(), tmp_path / "state.pt")
    state = torch.load(path, weights_only=True)
    assert state["rng"]["numpy"]["keys"].shape == (624,)
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    saved = load_checkpoint(save_checkpoint(trainer._state(), tmp_path / "s.pt"))["rng"]
    np.random.seed(0)
    set_rng_state(saved)
    assert np.array_equal(np.random.rand(3), expected)


def test_checkpoint_of_an_older_version_with_a_numpy_rng_state_still_loads(tmp_path):
    legacy = {
        "model": {"w": torch.ones(2)},
        "iteration": 3,
        "rng": {"numpy": np.random.get_state(), "python": None},
        "best": {"metric": "miou", "value": np.float64(0.25), "iteration": 3},
    }
    torch.save(legacy, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded["iteration"] == 3 and loaded["best"]["value"] == 0.25
    assert np.array_equal(loaded["rng"]["numpy"][1], legacy["rng"]["numpy"][1])


# ---------------------------------------------------------------------- resume (defects 5, 7, 8)


def test_failed_resume_with_force_leaves_the_run_untouched(tmp_path, capsys):
    run = made_run(tmp_path / "run")
    run.last_checkpoint.write_bytes(b"not a checkpoint")
    before = snapshot(run.root)
    changed = write_yaml(tmp_path / "changed.yaml", tiny_config(run.root, lr=0.5))
    assert main(["train", str(changed), "--resume", "--force", "--no-progress"]) == 2
    assert "last.pt" in capsys.readouterr().err
    assert snapshot(run.root) == before


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    for resume in (False, True):
        run = made_run(tmp_path / f"run{resume}")
        run.last_checkpoint.unlink()
        run.best_checkpoint.unlink()
        (run.checkpoint_dir / ".last.pt.89abcdef.tmp").write_bytes(b"torn")
        cfg = run_config_from_dict(tiny_config(run.root, lr=0.1))
        notes = run.prepare(cfg, resume=resume, force=False)
        assert any("started it again" in note for note in notes)
        assert run.resume_checkpoint() is None
        assert sorted(p.name for p in run.root.iterdir()) == [MARKER, "checkpoints", "config.yaml"]
        assert list(run.checkpoint_dir.iterdir()) == []
        assert load_run_config(run.config_path).train.lr == 0.1


def test_resume_takes_best_pt_when_the_first_last_pt_write_was_killed(tmp_path):
    run = made_run(tmp_path / "run")
    run.last_checkpoint.unlink()
    cfg = run_config_from_dict(tiny_config(run.root))
    assert run.prepare(cfg, resume=True, force=False) == []
    assert run.resume_checkpoint() == run.best_checkpoint
    with pytest.raises(RunDirError, match="--resume"):
        run.prepare(cfg, resume=False, force=False)


def test_resume_removes_only_leanseg_temp_files_and_torn_metric_lines(tmp_path):
    run = made_run(tmp_path / "run")
    run.append_metrics({"iteration": 2, "split": "train", "loss": 0.5})
    with run.metrics_path.open("a") as handle:
        handle.write('{"time": 12.5, "iteration": 3, "spl')  # killed mid-write
    stale = [run.checkpoint_dir / ".last.pt.0123abcd.tmp", run.root / ".config.yaml.0a0b0c0d.tmp"]
    kept = [run.checkpoint_dir / "my.tmp", run.checkpoint_dir / ".last.pt.notours.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert [r["iteration"] for r in run.read_metrics()] == [1, 2]
    run.commit_resume(run_config_from_dict(tiny_config(run.root)), iteration=1)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert run.metrics_path.read_text().splitlines() == [
        json.dumps({"iteration": 1, "split": "train", "loss": 1.0})
    ]


def test_a_run_of_an_older_version_resumes_and_gets_a_marker(tmp_path):
    run = made_run(tmp_path / "run")
    run.marker_path.unlink()
    cfg = run_config_from_dict(tiny_config(run.root))
    with pytest.raises(RunDirError, match="not a leanseg run"):
        run.prepare(cfg, resume=False, force=True)
    assert run.prepare(cfg, resume=True, force=False) == []
    run.commit_resume(cfg, iteration=1)
    assert run.is_run()


# ---------------------------------------------------------------------- demo (defect 4)


def test_demo_force_never_deletes_a_users_data_folder(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "survey.csv").write_text("a,b")
    before = snapshot(out)
    with pytest.raises(RunDirError, match="data"):
        _prepare_output(out, force=True)
    assert snapshot(out) == before


def demo_folder(out: Path) -> None:
    """What an earlier (tiny) demo leaves behind, written by hand."""
    _prepare_output(out, force=False)
    for folder in ("images", "labels", "instances", "disparity"):
        (out / "data" / folder / "train").mkdir(parents=True)
        (out / "data" / folder / "train" / "synthetic_000001.png").write_bytes(b"png")
    (out / "data" / "synthetic_manifest.json").write_text("{}")
    (out / "predictions").mkdir()
    (out / "predictions" / "synthetic_000007.png").write_bytes(b"png")
    (out / "summary.json").write_text("{}")
    made_run(out / "run")


def test_demo_force_replaces_an_earlier_demo(tmp_path):
    out = tmp_path / "out"
    demo_folder(out)
    with pytest.raises(RunDirError, match="--force"):
        _prepare_output(out, force=False)
    _prepare_output(out, force=True)
    assert [p.name for p in out.iterdir()] == [DEMO_MARKER]


@pytest.mark.parametrize("extra", ["data/images/train/mine.png", "predictions/notes.txt", "x.txt"])
def test_demo_force_refuses_when_a_user_file_sits_among_demo_files(tmp_path, extra):
    out = tmp_path / "out"
    demo_folder(out)
    (out / extra).write_text("mine")
    before = snapshot(out)
    with pytest.raises(RunDirError, match=Path(extra).name):
        _prepare_output(out, force=True)
    assert snapshot(out) == before


def test_demo_force_does_not_follow_a_symlinked_data_folder(tmp_path):
    out = tmp_path / "out"
    _prepare_output(out, force=False)
    users = tmp_path / "users_scenes"
    (users / "images" / "train").mkdir(parents=True)
    (users / "images" / "train" / "synthetic_000001.png").write_bytes(b"png")
    (out / "data").symlink_to(users)
    with pytest.raises(RunDirError, match="data"):
        _prepare_output(out, force=True)
    assert (users / "images" / "train" / "synthetic_000001.png").is_file()


# ---------------------------------------------------------------------- QGN + BN recompute


def test_qgn_gtc_training_with_bn_recompute_finishes(tmp_path):
    """Defect 11: the recompute used ``forward`` in training mode, which ``gtc`` refuses."""
    raw = tiny_config(tmp_path / "run", max_iters=1, eval_interval=1, checkpoint_interval=1)
    raw["train"]["bn_recompute_batches"] = 2
    raw["model"] = {
        "backbone": {"name": "resnet18", "stem_features": True},
        "head": {
            "name": "qgn",
            "in_channels": 32,
            "decoder_channels": [16, 16, 8, 8, 8],
            "decoder_units": [1, 1, 1, 1, 1],
            "train_scheme": "gtc",
            "eval_scheme": "pc",
            "loss_weighting": "adaptive",
        },
    }
    trainer = Trainer.from_config(
        load_run_config(write_yaml(tmp_path / "q.yaml", raw)), show_progress=False
    )
    assert trainer.train().iteration == 1
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] == 1

    # Only BatchNorm statistics change; the adaptive level weights stay as training left them.
    beta = trainer.model.head.adaptive_beta.clone()
    trainer.recompute_bn_statistics(2)
    assert torch.equal(trainer.model.head.adaptive_beta, beta)
    norms = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) == 2 for m in norms)


def test_resume_does_not_need_the_imagenet_file(tmp_path):
    """The checkpoint holds every weight: ``--resume`` works after the pretrained file is gone."""
    from leanseg.models import BACKBONES

    weights = tmp_path / "imagenet.pth"
    torch.save(BACKBONES["resnet18"]().state_dict(), weights)
    raw = tiny_config(tmp_path / "run", max_iters=2, checkpoint_interval=1, eval_interval=2)
    raw["model"]["backbone"] = {"name": "resnet18", "pretrained": str(weights)}
    Trainer.from_config(run_config_from_dict(raw), show_progress=False).train()
    weights.unlink()
    raw["train"]["max_iters"] = 3
    result = Trainer.from_config(
        run_config_from_dict(raw), resume=True, force=True, show_progress=False
    ).train()
    assert result.iteration == 3
