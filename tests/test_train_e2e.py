"""End to end: train, resume, evaluate, predict and the CLI's handling of bad input.

Runs use the synthetic scenes at 64x128 and a ResNet-18 bilinear model, a few iterations each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.files.checkpoint import load_checkpoint, save_checkpoint
from leanseg.models import load_run_config
from leanseg.training.trainer import Trainer

pytestmark = pytest.mark.slow

TINY = {
    "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 8, "size": [64, 128], "seed": 0},
        "crop_size": [64, 96],
        "scale_range": [0.75, 1.25],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {
        "optimizer": "adam",
        "lr": 0.002,
        "max_iters": 6,
        "eval_interval": 3,
        "checkpoint_interval": 3,
        "log_interval": 1,
        "seed": 0,
    },
    "eval": {"max_images": 3, "boundary_width": 2},
}


def write_config(tmp_path: Path, name: str = "tiny.yaml", **sections) -> Path:
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    raw.setdefault("work_dir", str(tmp_path / "run"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}


def val_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "val"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One uninterrupted 6-iteration run shared by several tests."""
    tmp_path = tmp_path_factory.mktemp("finished")
    cfg = load_run_config(write_config(tmp_path))
    Trainer.from_config(cfg, show_progress=False).train()
    return Path(cfg.work_dir)


def test_run_directory_contents(finished_run):
    assert (finished_run / "config.yaml").is_file()
    assert (finished_run / "checkpoints" / "last.pt").is_file()
    assert (finished_run / "checkpoints" / "best.pt").is_file()
    assert sorted(train_losses(finished_run)) == [1, 2, 3, 4, 5, 6]
    assert [r["iteration"] for r in val_records(finished_run)] == [3, 6]
    assert not list(finished_run.rglob("*.tmp"))
    # The saved config alone reproduces the run's settings.
    assert load_run_config(finished_run / "config.yaml").train.max_iters == 6


def test_loss_decreases(tmp_path):
    path = write_config(
        tmp_path,
        train={"max_iters": 24, "eval_interval": 24, "checkpoint_interval": 24, "lr": 0.003},
        data={"options": {"num_samples": 4, "size": [64, 128], "seed": 1}},
    )
    cfg = load_run_config(path)
    Trainer.from_config(cfg, show_progress=False).train()
    losses = train_losses(Path(cfg.work_dir))
    first = np.mean([losses[i] for i in range(1, 5)])
    last = np.mean([losses[i] for i in range(21, 25)])
    assert last < 0.8 * first


def test_same_seed_same_curve_and_resume_continues_it(tmp_path, finished_run, monkeypatch):
    reference = train_losses(finished_run)
    cfg = load_run_config(write_config(tmp_path))
    trainer = Trainer.from_config(cfg, show_progress=False)
    original_step = trainer.run_step

    def killed_during_iteration_five(batch):
        if trainer.iteration == 4:
            raise KeyboardInterrupt
        return original_step(batch)

    monkeypatch.setattr(trainer, "run_step", killed_during_iteration_five)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    run_dir = Path(cfg.work_dir)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 3
    # Killed after logging iteration 4, which the checkpoint does not hold.
    assert sorted(train_losses(run_dir)) == [1, 2, 3, 4]

    resumed = Trainer.from_config(cfg, resume=True, show_progress=False)
    assert resumed.iteration == 3
    resumed.train()
    losses = train_losses(run_dir)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    for iteration in range(1, 7):
        assert losses[iteration] == pytest.approx(reference[iteration], rel=1e-5, abs=1e-6)


def test_eval_reproduces_logged_metrics(finished_run, capsys):
    best = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    logged = next(r for r in val_records(finished_run) if r["iteration"] == best["iteration"])
    out_json = finished_run / "eval.json"
    assert main(["eval", str(finished_run), "--json", str(out_json)]) == 0
    scores = json.loads(out_json.read_text())
    assert scores["miou"] == pytest.approx(logged["miou"], abs=1e-9)
    assert scores["pixel_accuracy"] == pytest.approx(logged["pixel_accuracy"], abs=1e-9)
    assert "pixel accuracy" in capsys.readouterr().out


def test_eval_multiscale_flip_runs(finished_run, tmp_path):
    out_json = tmp_path / "ms.json"
    code = main(
        [
            "eval",
            str(finished_run / "config.yaml"),
            "--checkpoint",
            str(finished_run / "checkpoints" / "last.pt"),
            "--scales",
            "0.75",
            "1.0",
            "--flip",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    assert json.loads(out_json.read_text())["scales"] == [0.75, 1.0]


def test_predict_writes_labels_and_overlays(finished_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 150, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(images / "b.jpg")
    out = tmp_path / "out"
    checkpoint = str(finished_run / "checkpoints" / "best.pt")
    # A tiny memory budget forces tiling of the larger image.
    code = main(
        ["predict", "--checkpoint", checkpoint, str(images), "--out", str(out)]
        + ["--max-megapixels", "0.01", "--overlap", "32"]
    )
    assert code == 0
    label = np.asarray(Image.open(out / "a.png"))
    assert label.shape == (70, 150) and label.max() < 11
    assert np.asarray(Image.open(out / "a_overlay.png")).shape == (70, 150, 3)
    assert (out / "b.png").is_file() and (out / "b_overlay.png").is_file()


def test_bench_reports_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    config = write_config(tmp_path)
    args = ["bench", str(config), "--size", "64x96", "--repeats", "2", "--warmup", "1"]
    assert main([*args, "--train", "--json", str(out_json)]) == 0
    figures = json.loads(out_json.read_text())
    assert figures["flops"] > 0 and figures["parameters"] > 0
    assert figures["activation_memory_bytes"] > 0
    table = capsys.readouterr().out
    assert "(training step)" in table and "latency (training step, median)" in table
    assert f"{figures['parameters'] / 1e6:.3f} M" in table  # the figures of the JSON
    assert f"{figures['flops'] / 1e9:.3f}" in table and "n=2" in table
    assert main(["bench", str(config), "--size", "64by96"]) == 2
    assert "--size" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad input


def test_resume_without_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "last.pt" in err


def test_output_directory_with_another_run_is_refused(finished_run, tmp_path, capsys):
    config = write_config(tmp_path, work_dir=str(finished_run))
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(finished_run) in err and "--force" in err
    # Nothing of the earlier run was touched.
    assert load_checkpoint(finished_run / "checkpoints" / "last.pt")["iteration"] == 6


def test_force_replaces_a_run_but_never_a_foreign_folder(finished_run, tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    config = write_config(tmp_path, work_dir=str(foreign))
    assert main(["train", str(config), "--force", "--no-progress"]) == 2
    assert "not a leanseg run" in capsys.readouterr().err
    assert (foreign / "holiday.jpg").read_bytes() == b"not ours"
    # A folder holding a run (a copy of the 6-iteration one) is replaced by the new run.
    earlier = tmp_path / "earlier"
    shutil.copytree(finished_run, earlier)
    short = {"max_iters": 2, "eval_interval": 2, "checkpoint_interval": 2}
    config = write_config(tmp_path, "short.yaml", work_dir=str(earlier), train=short)
    assert main(["train", str(config), "--no-progress"]) == 2  # not without --force
    assert main(["train", str(config), "--force", "--no-progress"]) == 0
    assert load_checkpoint(earlier / "checkpoints" / "last.pt")["iteration"] == 2
    assert sorted(train_losses(earlier)) == [1, 2]  # none of the earlier run's log lines
    assert load_run_config(earlier / "config.yaml").train.max_iters == 2


def test_resume_with_changed_config_is_refused(finished_run, tmp_path, capsys):
    config = write_config(tmp_path, work_dir=str(finished_run), train={"lr": 0.5})
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_checkpoint_of_another_class_count_is_refused(finished_run, tmp_path, capsys):
    payload = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    head_weight = payload["model"]["head.classifier.weight"]
    payload["model"]["head.classifier.weight"] = head_weight[:5]
    payload["model"]["head.classifier.bias"] = payload["model"]["head.classifier.bias"][:5]
    wrong = save_checkpoint(payload, tmp_path / "wrong.pt")
    code = main(["eval", str(finished_run / "config.yaml"), "--checkpoint", str(wrong)])
    assert code == 2
    err = capsys.readouterr().err
    assert "wrong.pt" in err and "head.classifier.weight" in err


def test_checkpoint_of_another_architecture_is_refused(finished_run, tmp_path, capsys):
    config = write_config(
        tmp_path, model={"backbone": {"name": "resnet34"}, "head": {"name": "bilinear"}}
    )
    checkpoint = finished_run / "checkpoints" / "best.pt"
    assert main(["eval", str(config), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and "does not fit" in err


def test_truncated_checkpoint(tmp_path, finished_run, capsys):
    data = (finished_run / "checkpoints" / "best.pt").read_bytes()
    torn = tmp_path / "torn.pt"
    torn.write_bytes(data[: len(data) // 2])
    assert main(["eval", str(finished_run), "--checkpoint", str(torn)]) == 2
    assert "torn.pt" in capsys.readouterr().err


def test_config_errors_are_one_line(tmp_path, capsys):
    config = write_config(tmp_path, train={"max_iters": "many"})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leanseg: error:") and "train.max_iters" in err
    assert "\n" not in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.yaml" in err and "\n" not in err


def test_nan_loss_stops_and_names_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from leanseg.nn.heads.bilinear import BilinearHead

    original = BilinearHead.losses
    calls = {"n": 0}

    def poisoned(self, features, targets, image_size):
        calls["n"] += 1
        terms = original(self, features, targets, image_size)
        if calls["n"] == 5:
            terms["loss_ce"] = terms["loss_ce"] * float("nan")
        return terms

    monkeypatch.setattr(BilinearHead, "losses", poisoned)
    config = write_config(tmp_path)
    assert main(["train", str(config), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "iteration 5" in err and "last.pt" in err and "iteration 3" in err
    run_dir = tmp_path / "run"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 3


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = save_checkpoint({"model": {"w": torch.ones(3)}, "iteration": 1}, tmp_path / "last.pt")

    def torn_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "iteration": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_data_check_names_bad_files(tmp_path, capsys):
    root = tmp_path / "folder"
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    image = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(image).save(root / "images/train/good.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "labels/train/good.png")
    Image.fromarray(image).save(root / "images/train/big_label.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(root / "labels/train/big_label.png")
    config = tmp_path / "folder.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"dataset": "folder", "root": str(root), "classes": ["a", "b", "c"]}}
        )
    )
    assert main(["data", "check", str(config), "--split", "train"]) == 2
    assert "big_label.png" in capsys.readouterr().out


def test_missing_dataset_root(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    config = write_config(tmp_path, data={"dataset": "camvid", "root": missing, "options": {}})
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    for command in (
        ["train"],
        ["eval"],
        ["predict"],
        ["data", "check"],
        ["data", "weights"],
        ["bench"],
        ["demo"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: leanseg {' '.join(command)} ")


def test_distributed_training_with_two_gloo_processes(tmp_path):
    config = write_config(
        tmp_path,
        data={"batch_size": 1},
        train={"max_iters": 4, "eval_interval": 4, "checkpoint_interval": 4, "sync_bn": True},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "leanseg.cli",
        "train",
        str(config),
        "--no-progress",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert sorted(train_losses(run_dir)) == [1, 2, 3, 4]
    evaluations = val_records(run_dir)
    assert len(evaluations) == 1 and evaluations[0]["iteration"] == 4
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["iteration"] == 4


def test_distributed_ranks_all_stop_when_rank_0_is_refused(tmp_path):
    """The run folder is held by another process: rank 0 is refused, and rank 1 stops with it
    instead of waiting at a barrier (both exit, status 2, within the timeout)."""
    config = write_config(tmp_path, data={"batch_size": 1}, train={"max_iters": 2})
    hold = (
        "import sys, time\n"
        "from leanseg.files.folder_lock import FolderLock\n"
        "FolderLock(sys.argv[1], 'leanseg train').acquire()\n"
        "print('holding', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", "2", "-m", "leanseg.cli", "train", str(config)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert done.returncode != 0
    assert "is in use by leanseg train" in done.stderr
    assert "rank 0 refused this run" in done.stderr


def test_batchnorm_statistics_recomputed_as_exact_averages(tmp_path):
    """Thesis 4.6.1: after training, running statistics are exact averages over N batches."""
    config = write_config(
        tmp_path,
        train={
            "max_iters": 2,
            "eval_interval": 2,
            "checkpoint_interval": 2,
            "bn_recompute_batches": 3,
        },
    )
    trainer = Trainer.from_config(load_run_config(config), show_progress=False)
    trainer.train()
    norms = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 3 for m in norms)
    assert all(m.momentum == 0.1 for m in norms)

    # The first BN's mean is the plain average of its per-batch input means over those batches.
    stem_bn = trainer.model.backbone.bn1
    captured = []
    hook = trainer.model.backbone.conv1.register_forward_hook(
        lambda module, inputs, output: captured.append(output.mean(dim=(0, 2, 3)))
    )
    trainer.iteration = 2
    batches = trainer._batches()
    trainer.model.train()
    saved = stem_bn.running_mean.clone()
    with torch.no_grad():
        for _ in range(3):
            trainer.model(next(batches)["image"])
    hook.remove()
    assert torch.allclose(saved, torch.stack(captured).mean(dim=0), atol=1e-5)


def test_bad_component_option_value_names_the_key_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path, model={"backbone": {"name": "resnet18"},
                                         "head": {"name": "bilinear", "in_stride": 7}})  # fmt: skip
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "leanseg: error: model.head (bilinear)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing half-written
