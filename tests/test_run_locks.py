"""One writer per run and output folder; every check before the first write.

The folder lock against real second processes (a child Python that takes the lock and waits, or
tries to take it), ``leanseg train`` and ``leanseg predict`` refused on a held folder, a lock from a
killed process taken over; ``--resume`` with a changed config refused before anything is written,
the keys that may change allowed; a start that fails leaves no run folder. Runs are two iterations
of a tiny model on synthetic scenes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.files.folder_lock import (
    HOLDER_FILE,
    LOCK_FILE,
    FolderInUseError,
    FolderLock,
    read_holder,
)
from leanseg.files.run_dir import RunDirectory, RunPlan, may_change_on_resume
from leanseg.models import run_config_from_dict
from leanseg.training import trainer as trainer_module
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
    "train": {
        "optimizer": "adam",
        "max_iters": 2,
        "eval_interval": 2,
        "checkpoint_interval": 2,
        "log_interval": 1,
    },
    "eval": {"max_images": 2},
}

# A second process: takes the lock of argv[1] as the command argv[2], says so, and waits.
HOLD = """
import sys, time
from leanseg.files.folder_lock import FolderLock
FolderLock(sys.argv[1], sys.argv[2]).acquire()
print("holding", flush=True)
time.sleep(120)
"""

# A second process: tries to take the lock of argv[1] and prints what happened.
TRY = """
import sys
from leanseg.files.folder_lock import FolderInUseError, FolderLock
try:
    FolderLock(sys.argv[1], "leanseg train").acquire()
except FolderInUseError as err:
    print("refused:", err)
else:
    print("acquired")
"""


def tiny_config(work_dir: Path, **train) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    raw["work_dir"] = str(work_dir)
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@contextmanager
def held_elsewhere(folder: Path, command: str = "leanseg train") -> Iterator[subprocess.Popen]:
    """While inside: another process holds the lock of ``folder``; killed (SIGKILL) at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), command], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def try_elsewhere(folder: Path) -> str:
    """What another process gets when it asks for the lock of ``folder``."""
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(folder)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def lock_files(folder: Path) -> list[str]:
    return sorted(name for name in (LOCK_FILE, HOLDER_FILE) if (folder / name).exists())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-iteration run (Adam), with ``last.pt`` and ``metrics.jsonl``."""
    root = tmp_path_factory.mktemp("trained") / "run"
    Trainer.from_config(run_config_from_dict(tiny_config(root)), show_progress=False).train()
    return root


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# ---------------------------------------------------------------------- the lock


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    with held_elsewhere(folder, "leanseg train") as holder:
        with pytest.raises(FolderInUseError) as refused:
            FolderLock(folder, "leanseg predict").acquire()
        message = str(refused.value)
        assert f"process {holder.pid} on " in message and "leanseg train" in message
        assert str(folder) in message
        assert read_holder(folder)["pid"] == holder.pid
        # The refused process leaves the holder's files alone.
        assert lock_files(folder) == [LOCK_FILE, HOLDER_FILE]


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with held_elsewhere(folder) as holder:
        pass  # killed with SIGKILL: no clean-up ran
    assert read_holder(folder)["pid"] == holder.pid  # stale, and ignored
    lock = FolderLock(folder, "leanseg train").acquire()
    assert read_holder(folder)["pid"] == os.getpid()
    assert try_elsewhere(folder).startswith(f"refused: {folder} is in use by leanseg train")
    lock.release()
    assert list(folder.iterdir()) == []
    assert try_elsewhere(folder) == "acquired"


def test_within_one_process_the_lock_is_shared_and_goes_with_the_last_holder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    first = FolderLock(folder, "leanseg train").acquire()
    second = FolderLock(folder, "leanseg train").acquire()
    first.release()
    first.release()  # a second release does nothing
    assert lock_files(folder) == [LOCK_FILE, HOLDER_FILE]
    assert try_elsewhere(folder).startswith("refused:")
    second.release()
    assert folder.is_dir() and list(folder.iterdir()) == []  # not made by the lock: kept
    assert try_elsewhere(folder) == "acquired"


def test_a_path_that_is_a_file_is_left_to_the_caller(tmp_path):
    path = tmp_path / "out"
    path.write_text("mine")
    with FolderLock(path, "leanseg predict") as lock:
        assert not lock.held
    assert path.read_text() == "mine"


# ---------------------------------------------------------------------- train and predict


def test_train_is_refused_while_another_process_writes_the_run(run_copy, tmp_path, capsys):
    before = run_copy.joinpath("metrics.jsonl").read_bytes()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(run_copy, max_iters=3))
    with held_elsewhere(run_copy) as holder:
        assert main(["train", str(config), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"process {holder.pid}" in err and "leanseg train" in err
    assert run_copy.joinpath("metrics.jsonl").read_bytes() == before


def test_a_training_holds_its_run_until_it_ends(tmp_path):
    root = tmp_path / "run"
    trainer = Trainer.from_config(run_config_from_dict(tiny_config(root)), show_progress=False)
    assert try_elsewhere(root).startswith(f"refused: {root} is in use by leanseg train")
    assert f"process {os.getpid()} " in try_elsewhere(root)
    trainer.train()
    assert lock_files(root) == []
    assert try_elsewhere(root) == "acquired"


def test_other_ranks_do_not_lock(tmp_path, monkeypatch):
    """Only rank 0 writes the run directory; the others neither lock nor write it."""
    root = tmp_path / "run"
    monkeypatch.setattr(trainer_module.distributed, "is_main_process", lambda: False)
    with held_elsewhere(root):
        Trainer.from_config(
            run_config_from_dict(tiny_config(root)), show_progress=False
        )  # not refused
        assert sorted(path.name for path in root.iterdir()) == [LOCK_FILE, HOLDER_FILE]


def test_two_predicts_into_one_out_folder(tiny_ladder_checkpoint, tmp_path, capsys):
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    out = tmp_path / "out"
    predict = ["predict", str(image), "--checkpoint", str(tiny_ladder_checkpoint)]
    predict += ["--out", str(out), "--device", "cpu"]
    with held_elsewhere(out, "leanseg predict") as holder:
        assert main(predict) == 2
        err = capsys.readouterr().err
        assert f"process {holder.pid}" in err and "leanseg predict" in err
        assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE, HOLDER_FILE]
    assert main(predict) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        ".leanseg_predict.json",
        "a.png",
        "a_overlay.png",
    ]


# ---------------------------------------------------------------------- resume


def test_resume_with_another_optimizer_is_refused_before_anything_is_written(
    run_copy, tmp_path, capsys
):
    # A temporary file of a killed write: a resume that goes ahead removes it, a refusal not.
    run_copy.joinpath("checkpoints", ".last.pt.0123abcd.tmp").write_bytes(b"torn")
    files = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    raw = tiny_config(run_copy, optimizer="sgd", lr=0.5, max_iters=4)
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert 'train.optimizer: "adam" in the run, "sgd" now' in err
    assert "train.lr: 0.0006 in the run, 0.5 now" in err
    assert "train.max_iters" not in err.split("Only")[0]  # may change, so not listed
    # --force resumes despite other changes, never despite another optimizer.
    assert main(["train", str(config), "--resume", "--force", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.optimizer" in err and "not even with --force" in err
    assert {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()} == files
    assert lock_files(run_copy) == []


def test_a_checkpoint_of_another_optimizer_is_refused_without_config_yaml(
    run_copy, tmp_path, capsys
):
    """A run of an older leanseg holds no config.yaml: the checkpoint's config says it."""
    run_copy.joinpath("config.yaml").unlink()
    metrics = run_copy.joinpath("metrics.jsonl").read_bytes()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(run_copy, optimizer="sgd"))
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    assert "train.optimizer" in capsys.readouterr().err
    assert not run_copy.joinpath("config.yaml").exists()
    assert run_copy.joinpath("metrics.jsonl").read_bytes() == metrics


def test_resume_with_a_longer_schedule_and_other_evaluation_is_allowed(run_copy, tmp_path):
    raw = tiny_config(run_copy, max_iters=3, eval_interval=3, checkpoint_interval=3)
    raw["eval"]["max_images"] = 1
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["train", str(config), "--resume", "--no-progress"]) == 0
    saved = yaml.safe_load(run_copy.joinpath("config.yaml").read_text())
    assert saved["train"]["max_iters"] == 3 and saved["eval"]["max_images"] == 1
    records = RunDirectory(run_copy).read_metrics()
    assert max(record["iteration"] for record in records) == 3
    assert lock_files(run_copy) == []


def test_force_resumes_with_a_changed_learning_rate(run_copy, tmp_path):
    logged = run_copy.joinpath("metrics.jsonl").read_bytes()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(run_copy, lr=0.0001, max_iters=3))
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    assert main(["train", str(config), "--resume", "--force", "--no-progress"]) == 0
    saved = yaml.safe_load(run_copy.joinpath("config.yaml").read_text())
    assert saved["train"]["lr"] == 0.0001
    # Resumed, not replaced: the log of iterations 1-2 stays as it was, iteration 3 follows.
    after = run_copy.joinpath("metrics.jsonl").read_bytes()
    assert after.startswith(logged)
    added = [json.loads(line) for line in after[len(logged) :].decode().splitlines()]
    assert [r["iteration"] for r in added if r["split"] == "train"] == [3]


def test_keys_that_may_change_on_resume():
    for key in ("train.max_iters", "train.eval_interval", "eval.crf", "work_dir"):
        assert may_change_on_resume(key), key
    for key in ("train.optimizer", "train.lr", "train.max_iters_extra", "evaluation", "seed"):
        assert not may_change_on_resume(key), key


# ---------------------------------------------------------------------- failed starts


def test_a_train_that_fails_before_it_starts_leaves_no_run_folder(tmp_path):
    root = tmp_path / "new" / "run"
    cfg = run_config_from_dict(tiny_config(root))
    with pytest.raises(ValueError, match="classes"):
        Trainer.from_config(cfg, model=SimpleNamespace(num_classes=3), show_progress=False)
    assert not (tmp_path / "new").exists()
    # In a folder that was there before, nothing is left either, and the folder stays.
    root.mkdir(parents=True)
    with pytest.raises(ValueError, match="classes"):
        Trainer.from_config(cfg, model=SimpleNamespace(num_classes=3), show_progress=False)
    assert root.is_dir() and list(root.iterdir()) == []
    assert try_elsewhere(root) == "acquired"


def test_a_failed_force_replaces_nothing(run_copy):
    before = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    cfg = run_config_from_dict(tiny_config(run_copy))
    with pytest.raises(ValueError, match="classes"):
        Trainer.from_config(
            cfg, model=SimpleNamespace(num_classes=3), force=True, show_progress=False
        )
    after = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    assert after == before


def test_check_writes_nothing_and_lock_files_are_not_contents(tmp_path):
    run = RunDirectory(tmp_path / "run")
    cfg = run_config_from_dict(tiny_config(run.root))
    with FolderLock(run.root, "leanseg train"):
        assert run.check(cfg, resume=False, force=False) == RunPlan("create")
        assert run.prepare(cfg, resume=False, force=False) == []
        run.last_checkpoint.write_bytes(b"last")
        assert run.check(cfg, resume=False, force=True) == RunPlan("replace")
        assert run.last_checkpoint.read_bytes() == b"last"
        # --force removes the run's files, not the lock's, and does not call them foreign.
        assert run.prepare(cfg, resume=False, force=True) == []
        assert lock_files(run.root) == [LOCK_FILE, HOLDER_FILE]
        assert not run.last_checkpoint.exists()
    assert lock_files(run.root) == []


def test_a_forced_resume_trains_with_the_new_weight_decay_and_backbone_rate(run_copy):
    """The checkpoint brings the optimizer's moments; its hyperparameters are the config's, as
    the rewritten config.yaml says (not the checkpoint's old weight_decay / lr_mult)."""
    raw = tiny_config(run_copy, weight_decay=0.25, backbone_lr_mult=0.5, max_iters=3)
    trainer = Trainer.from_config(
        run_config_from_dict(raw), resume=True, force=True, show_progress=False
    )
    saved = torch.load(run_copy / "checkpoints" / "last.pt", weights_only=False)["optimizer"]
    assert {group["weight_decay"] for group in saved["param_groups"]} != {0.25}
    assert {group["weight_decay"] for group in trainer.optimizer.param_groups} == {0.25}
    backbone = {id(p) for p in trainer.model.backbone.parameters()}
    groups = trainer.optimizer.param_groups
    assert [{id(p) in backbone for p in group["params"]} for group in groups] == [{True}, {False}]
    assert [group["lr_mult"] for group in groups] == [0.5, 1.0]  # the backbone's, the rest's
    # The state itself (Adam's moments) is the checkpoint's.
    assert trainer.optimizer.state_dict()["state"].keys() == saved["state"].keys()


def test_a_refusal_on_rank_0_stops_every_rank(tmp_path, monkeypatch):
    """Rank 0 alone checks the run folder; when it is refused, the other ranks learn it (one
    all-reduce) and stop too, instead of waiting at the next barrier for a rank that left."""
    told = []

    def agree(flag, device):  # what the all-reduce of every rank's flag returns
        told.append(flag)
        return True if len(told) == 1 else flag

    monkeypatch.setattr(trainer_module.distributed, "is_main_process", lambda: False)
    monkeypatch.setattr(trainer_module.distributed, "broadcast_flag", agree)
    with pytest.raises(trainer_module.RefusedOnMainRank, match="rank 0 refused"):
        Trainer.from_config(
            run_config_from_dict(tiny_config(tmp_path / "run")), show_progress=False
        )
    assert told == [False]  # this rank had nothing to refuse, rank 0 had


def test_rank_0_raises_its_own_refusal_after_telling_the_others(tmp_path, monkeypatch):
    told = []
    monkeypatch.setattr(
        trainer_module.distributed, "broadcast_flag", lambda flag, device: told.append(flag) or flag
    )
    root = tmp_path / "run"
    with held_elsewhere(root), pytest.raises(FolderInUseError):
        Trainer.from_config(run_config_from_dict(tiny_config(root)), show_progress=False)
    assert told == [True]
