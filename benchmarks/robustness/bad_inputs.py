"""A catalogue of bad inputs run against the ``leanseg`` command line (issues 12 and 27).

Every case is something a new user may type or hand over. The catalogue of issue 12
(:func:`catalogue`): a config value out of range for every validated key, wrong types and
unknown keys, broken config files, bad ``--set`` overrides, bad flag values of every
subcommand, missing, empty, torn, foreign or crafted checkpoint files, unreadable images, output
folders that cannot or must not be written, and datasets with broken files. The cases of issue 27
(``bad_inputs_round2.py``): null bytes, symlink loops, unreadable files, mixed-type YAML keys,
deep nesting, out-of-range seeds, NaN and infinite numbers, unknown devices, checkpoints with
mistyped entries, empty configs, duplicate keys, negative loss weights, label ids out of range,
all-ignored labels, ``~`` / ``$VAR`` in paths, YAML file sizes and alias bombs; and, when
``bad_inputs_sizes.py`` exists, its size cases (item 4).

Each case runs as its own ``python -m leanseg`` process under an address-space limit
(``RLIMIT_AS``, 4 GiB) and a time limit, in its own folder; the folder (and the shared
workspace of good inputs) is hashed before and after. Verdicts (:data:`VERDICTS`):

- **clear error**: a refusal was due, and the command exited with a status other than 0 and
  one ``leanseg: error: ...`` line last on stderr, no traceback (``leanseg data check`` on
  broken data: its report of the problems);
- **ok**: a case that must work exited with 0;
- **traceback**, **internal error** (the CLI's one-line ``unexpected error``, a bug caught by
  its catch-all), **silent success** (exit 0 where a refusal was due), **wrongly refused**,
  **unclear failure**, **memory overrun** (MemoryError, a failed allocation, a crash), **time
  overrun**.

A case passes with a verdict of clear error or ok, no file changed that the case did not ask to
write (``writes``), and no crafted checkpoint that ran code. Results:
``benchmarks/results/bad_inputs.json``: counts, counts per class, every case's verdict, exit
status, seconds and peak memory, the cases that did not pass, the command and the machine.

    .venv/bin/python benchmarks/robustness/bad_inputs.py [--only SUBSTRING] [--skip-earlier] \\
        [--json benchmarks/results/bad_inputs.json]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from bad_inputs_round2 import round2_cases
from common import REPO, write_result

try:  # the size cases of issue 27 item 4, written beside this file
    from bad_inputs_sizes import size_cases
except ImportError:
    size_cases = None

DEFAULT_JSON = REPO / "benchmarks" / "results" / "bad_inputs.json"
CASE_TIMEOUT_S = 120
MEMORY_LIMIT_GIB = 4.0

TINY: dict[str, Any] = {
    "model": {"backbone": {"name": "resnet18", "pretrained": None}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 4, "size": [64, 96], "seed": 0},
        "crop_size": [64, 64],
        "scale_range": [0.75, 1.25],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {
        "optimizer": "adam",
        "lr": 0.001,
        "max_iters": 2,
        "eval_interval": 2,
        "checkpoint_interval": 2,
        "log_interval": 1,
        "num_threads": 1,
    },
    "eval": {"max_images": 1, "boundary_width": 2},
}


# ---------------------------------------------------------------------- workspace


@dataclass
class Workspace:
    """Shared good inputs: a config, a checkpoint, a run directory and a few images."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "good.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.root / "ckpt" / "best.pt"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def trained(self) -> Path:
        """A run folder of two real training iterations (``last.pt`` resumable)."""
        return self.root / "trained"

    def build(self) -> None:
        from leanseg.files.checkpoint import save_checkpoint
        from leanseg.models import build_model, load_run_config

        raw = tiny_config(self.root / "runs" / "good")
        self.config.write_text(yaml.safe_dump(raw))
        torch.manual_seed(0)
        model = build_model(load_run_config(self.config))
        payload = {"model": model.state_dict(), "config": raw, "iteration": 0}
        save_checkpoint(payload, self.checkpoint)
        (self.run / "checkpoints").mkdir(parents=True)
        (self.run / "config.yaml").write_text(yaml.safe_dump(raw))
        save_checkpoint(payload, self.run / "checkpoints" / "best.pt")
        write_image(self.images / "a.png")
        write_image(self.images / "b.jpg")
        # Bare weights (no config), as torchvision publishes them, and another architecture.
        torch.save(model.state_dict(), self.root / "ckpt" / "bare.pt")
        other = json.loads(json.dumps(raw))
        other["model"]["head"] = {"name": "ladder", "channels": 32}
        other_model = build_model(load_run_config(None, other))
        save_checkpoint(
            {"model": other_model.state_dict(), "config": other, "iteration": 0},
            self.root / "ckpt" / "ladder.pt",
        )
        trained_config = self.root / "trained.yaml"
        trained_config.write_text(yaml.safe_dump(tiny_config(self.trained)))
        subprocess.run(
            [sys.executable, "-m", "leanseg", "train", str(trained_config), "--no-progress"],
            check=True,
            capture_output=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )


def tiny_config(run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The tiny config as a dict, with ``section.key`` overrides (``None`` values included)."""
    raw = json.loads(json.dumps(TINY))
    raw["work_dir"] = str(run_dir)
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def write_image(path: Path, size: tuple[int, int] = (48, 32), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


class _Payload:
    """Unpickling this creates the file it names: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------- cases


@dataclass
class Case:
    """One bad input: ``make(case_dir, workspace)`` prepares files and returns the argv."""

    name: str
    make: Callable[[Path, Workspace], list[str]]
    # Folders that must not exist after the command (relative to the case folder).
    must_not_exist: tuple[str, ...] = ("run",)
    # A file whose appearance means a crafted input ran code.
    marker: str | None = None
    # ``data check`` answers bad data with its report on stdout (exit 2), not a one-line error.
    expects_report: bool = False


def config_case(name: str, dotted: str, value: Any, *extra: str) -> Case:
    """``leanseg train`` of the tiny config with ``dotted`` set to ``value``."""

    def make(case_dir: Path, ws: Workspace) -> list[str]:
        path = case_dir / "config.yaml"
        path.write_text(yaml.safe_dump(tiny_config(case_dir / "run", **{dotted: value})))
        return ["train", str(path), "--no-progress", *extra]

    return Case(name, make)


def text_case(name: str, text: str | bytes, command: str = "train") -> Case:
    """A command on a config file with the given raw contents."""

    def make(case_dir: Path, ws: Workspace) -> list[str]:
        path = case_dir / "config.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.replace("RUN", str(case_dir / "run")))
        args = ["--no-progress"] if command == "train" else []
        return [*command.split(), str(path), *args]

    return Case(name, make)


def argv_case(
    name: str, build: Callable[[Path, Workspace], list[str]], must_not_exist: tuple[str, ...] = ()
) -> Case:
    return Case(name, build, must_not_exist=("run", *must_not_exist))


def good_config(case_dir: Path, ws: Workspace, **overrides: Any) -> Path:
    path = case_dir / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(case_dir / "run", **overrides)))
    return path


def predict_args(
    ws: Workspace,
    case_dir: Path,
    *extra: str,
    inputs: list[Path | str] | None = None,
    checkpoint: Path | None = None,
    out: Path | str | None = None,
) -> list[str]:
    return [
        "predict",
        *(str(i) for i in inputs or [ws.images / "a.png"]),
        "--checkpoint",
        str(checkpoint or ws.checkpoint),
        "--out",
        str(out or case_dir / "out"),
        *extra,
    ]


def eval_args(
    ws: Workspace, *extra: str, config: Path | None = None, checkpoint: Path | None = None
) -> list[str]:
    return [
        "eval",
        str(config or ws.config),
        "--checkpoint",
        str(checkpoint or ws.checkpoint),
        *extra,
    ]


def bench_args(ws: Workspace, *extra: str) -> list[str]:
    return ["bench", str(ws.config), "--warmup", "0", "--repeats", "1", *extra]


def folder_dataset(case_dir: Path, break_it: Callable[[Path], None]) -> Path:
    """A two-image ``folder`` dataset (train + val), broken by ``break_it(root)``."""
    root = case_dir / "data"
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / "images" / split / f"s{i}.png", (64, 64), seed=i)
            label = np.zeros((64, 64), np.uint8)
            label[:, 32:] = 1
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(root / "labels" / split / f"s{i}.png")
    break_it(root)
    return root


def dataset_case(name: str, break_it: Callable[[Path], None], command: str = "train") -> Case:
    def make(case_dir: Path, ws: Workspace) -> list[str]:
        root = folder_dataset(case_dir, break_it)
        config = good_config(
            case_dir,
            ws,
            **{
                "data.dataset": "folder",
                "data.root": str(root),
                "data.classes": ["left", "right"],
                "data.options": {},
            },
        )
        if command == "train":
            return ["train", str(config), "--no-progress"]
        return ["data", "check", str(config)]

    return Case(name, make, expects_report=command != "train")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _torn_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    return _write(target, data[: int(len(data) * fraction)])


def catalogue() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # -- config values out of range, one or more per validated key
    out_of_range = [
        ("data.batch_size", [0, -1]),
        ("data.num_workers", [-1]),
        ("data.crop_size", [[0, 64], [64, 0], [-8, 64]]),
        ("data.scale_range", [[2.0, 0.5], [0.0, 1.0], [-1.0, 1.0]]),
        ("data.color_jitter", [-0.1, 1.0, 3.0]),
        ("data.ignore_index", [-1, 256, 1000]),
        ("data.train_split", [""]),
        ("data.val_split", [""]),
        ("train.lr", [-0.01, 0, float("nan"), float("inf")]),
        ("train.momentum", [-0.1, 1.5]),
        ("train.weight_decay", [-1e-4]),
        ("train.backbone_lr_mult", [-1.0]),
        ("train.poly_power", [-0.9]),
        ("train.min_lr", [-1e-7]),
        ("train.warmup_iters", [-10]),
        ("train.warmup_ratio", [-0.1, 1.5]),
        ("train.max_iters", [0, -5]),
        ("train.eval_interval", [0, -1]),
        ("train.checkpoint_interval", [0]),
        ("train.log_interval", [0]),
        ("train.grad_clip", [0, -1.0]),
        ("train.bn_recompute_batches", [-1]),
        ("train.num_threads", [0, -2]),
        ("train.device", ["gpu", "cuda:", "tpu", "CPU", ""]),
        ("eval.scales", [[], [0], [1.0, -0.5], [float("nan")]]),
        ("eval.boundary_width", [-1]),
        ("eval.batch_size", [0]),
        ("eval.max_images", [0, -3]),
        ("work_dir", [""]),
    ]
    for dotted, values in out_of_range:
        for value in values:
            add(config_case(f"range {dotted}={value!r}", dotted, value))

    # -- wrong types, unknown keys and names, component options
    wrong = [
        ("data.batch_size", "eight"),
        ("data.batch_size", 2.5),
        ("data.crop_size", 512),
        ("data.crop_size", [512]),
        ("data.scale_range", "0.5-2"),
        ("data.hflip", "yes please"),
        ("data.options", [1, 2]),
        ("data.dataset", "imagenet"),
        ("data.dataset", None),
        ("train.lr", "fast"),
        ("train.lr", [0.1]),
        ("train.optimizer", "rmsprop"),
        ("train.schedule", "step"),
        ("train.max_iters", "1e3"),
        ("train.seed", 0.5),
        ("eval.scales", 1.0),
        ("eval.flip", 2),
        ("model.backbone", "resnet18"),
        ("model.backbone.name", "resnet19"),
        ("model.backbone.depth", 18),
        ("model.backbone.pretrained", "/nonexistent/resnet18.pth"),
        ("model.head.name", "unet"),
        ("model.head.dropuot", 0.1),
        ("model.head", None),
        ("model.context", {"name": "aspp", "rates": "wide"}),
        ("model.context", {"name": "nonlocal"}),
        ("data.nonsense", 1),
        ("nonsense", {"a": 1}),
        ("train.options", {"a": 1}),
    ]
    for dotted, value in wrong:
        add(config_case(f"type {dotted}={value!r}", dotted, value))
    add(
        config_case(
            "train: crop 16x16 with batch 1",
            "data",
            {**TINY["data"], "crop_size": [16, 16], "batch_size": 1},
        )
    )
    for spec in [
        {"name": "ladder", "channels": -1},
        {"name": "ldn", "out_stride": 3},
        {"name": "ldn", "context": "pyramid"},
        {"name": "sandf", "num_levels": 0},
        {"name": "qgn", "levels": -2},
    ]:
        add(config_case(f"component model.head={spec}", "model.head", spec))

    # -- config files
    add(text_case("file: binary garbage", bytes(range(256)) * 4))
    add(text_case("file: not UTF-8 (latin-1)", "# réglé\ntrain: {lr: 0.01}\n".encode("latin-1")))
    add(text_case("file: UTF-16", "train: {lr: 0.01}\n".encode("utf-16")))
    add(text_case("file: NUL bytes", b"train:\x00 {lr: 0.01}\n"))
    add(text_case("file: YAML syntax error", "train:\n  lr: [0.01\n  momentum: 0.9\n"))
    add(text_case("file: tab indentation", "train:\n\tlr: 0.01\n"))
    add(text_case("file: top level is a list", "- train\n- eval\n"))
    add(text_case("file: top level is a string", "just some words\n"))
    add(text_case("file: section is a list", "train: [1, 2]\nwork_dir: RUN\n"))
    add(text_case("file: base missing", "base: nowhere.yaml\nwork_dir: RUN\n"))
    add(text_case("file: base is a list", "base: [a, b]\nwork_dir: RUN\n"))
    add(text_case("file: base is itself", "base: config.yaml\nwork_dir: RUN\n"))
    add(text_case("file: YAML python tag", "train: !!python/object:os.system {}\n"))
    add(text_case("file: unknown YAML tag", "train: !secret {lr: 1}\n"))
    add(text_case("data check: binary config", bytes(range(256)), command="data check"))
    add(text_case("bench: non-UTF-8 config", "x: é\n".encode("latin-1"), command="bench"))
    add(argv_case("file: missing", lambda d, ws: ["train", str(d / "missing.yaml")]))
    add(argv_case("file: a folder", lambda d, ws: ["train", str(d)]))
    add(
        argv_case(
            "file: base chain of two",
            lambda d, ws: (
                (d / "a.yaml").write_text("base: b.yaml\n"),
                (d / "b.yaml").write_text("train: {lr: 0.1}\n"),
                (d / "c.yaml").write_text(f"base: a.yaml\nwork_dir: {d / 'run'}\n"),
                ["train", str(d / "c.yaml"), "--no-progress"],
            )[-1],
        )
    )
    add(
        argv_case(
            "file: unreadable (a FIFO is not a file)",
            lambda d, ws: (os.mkfifo(d / "fifo.yaml"), ["train", str(d / "fifo.yaml")])[-1],
        )
    )

    # -- --set overrides
    for override in [
        "train.lr",
        "=1",
        "train.lr=fast",
        "train.lr.x=1",
        "nosuch.key=1",
        "data=5",
        "data.crop_size=[1, 2, 3]",
        "train.max_iters=-1",
        "data.batch_size=0",
        "eval.scales=[]",
        "model.backbone.name=vgg",
    ]:
        add(
            argv_case(
                f"--set {override}",
                lambda d, ws, o=override: ["train", str(good_config(d, ws)), "--set", o],
            )
        )

    # -- train flags and run folders
    add(
        argv_case(
            "train --resume without a run",
            lambda d, ws: ["train", str(good_config(d, ws)), "--resume", "--no-progress"],
        )
    )

    def foreign_folder(d: Path, ws: Workspace, *flags: str) -> list[str]:
        (d / "run").mkdir()
        (d / "run" / "notes.txt").write_text("mine")
        return ["train", str(good_config(d, ws)), "--no-progress", *flags]

    cases.append(
        Case("train into a foreign folder", lambda d, ws: foreign_folder(d, ws), must_not_exist=())
    )
    cases.append(
        Case(
            "train --force into a foreign folder",
            lambda d, ws: foreign_folder(d, ws, "--force"),
            must_not_exist=(),
        )
    )
    cases.append(
        Case(
            "train --resume of a foreign folder",
            lambda d, ws: foreign_folder(d, ws, "--resume"),
            must_not_exist=(),
        )
    )
    add(
        argv_case(
            "train --work-dir is a file",
            lambda d, ws: (
                (d / "afile").write_text("x"),
                ["train", str(good_config(d, ws)), "--work-dir", str(d / "afile")],
            )[-1],
        )
    )
    add(
        argv_case(
            "train --work-dir under a file",
            lambda d, ws: (
                (d / "afile").write_text("x"),
                ["train", str(good_config(d, ws)), "--work-dir", str(d / "afile" / "run")],
            )[-1],
        )
    )
    add(
        argv_case(
            "train on cuda without a GPU" if not torch.cuda.is_available() else "train cuda:99",
            lambda d, ws: [
                "train",
                str(good_config(d, ws, **{"train.device": "cuda:99"})),
                "--no-progress",
            ],
        )
    )

    # -- datasets with broken files
    def mismatch(root: Path) -> None:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "labels" / "val" / "s0.png")

    def out_of_range_label(root: Path) -> None:
        Image.fromarray(np.full((64, 64), 7, np.uint8)).save(root / "labels" / "val" / "s0.png")

    def missing_label(root: Path) -> None:
        (root / "labels" / "train" / "s1.png").unlink()

    def corrupt_image(root: Path) -> None:
        (root / "images" / "val" / "s0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")

    def empty_image(root: Path) -> None:
        (root / "images" / "val" / "s0.png").write_bytes(b"")

    def rgb_label(root: Path) -> None:
        Image.new("RGB", (64, 64)).save(root / "labels" / "val" / "s0.png")

    def no_images(root: Path) -> None:
        for path in (root / "images" / "val").iterdir():
            path.unlink()

    def missing_split(root: Path) -> None:
        for path in (root / "images" / "val").iterdir():
            path.unlink()
        (root / "images" / "val").rmdir()

    def same_stem(root: Path) -> None:
        write_image(root / "images" / "train" / "s0.jpg", (64, 64))

    broken = [
        ("label size differs", mismatch),
        ("label value out of range", out_of_range_label),
        ("label file missing", missing_label),
        ("corrupt image", corrupt_image),
        ("zero-byte image", empty_image),
        ("RGB label", rgb_label),
        ("split folder empty", no_images),
        ("split folder missing", missing_split),
        ("two images, one stem", same_stem),
    ]
    for label, break_it in broken:
        add(dataset_case(f"dataset: {label} (train)", break_it))
    for label, break_it in broken[:4]:
        add(dataset_case(f"dataset: {label} (data check)", break_it, command="data check"))
    add(
        config_case(
            "dataset: folder root missing", "data", {"dataset": "folder", "root": "/nonexistent"}
        )
    )
    add(
        config_case(
            "dataset: folder without classes",
            "data",
            {"dataset": "folder", "root": str(REPO), "classes": None},
        )
    )
    add(config_case("dataset: camvid without root", "data", {"dataset": "camvid"}))
    add(config_case("dataset: unknown option", "data.options", {"num_sample": 4}))
    add(config_case("dataset: option of wrong type", "data.options", {"num_samples": "many"}))
    add(config_case("dataset: zero samples", "data.options", {"num_samples": 0}))
    add(config_case("dataset: unknown split", "data.val_split", "validation-2"))

    # -- eval
    add(argv_case("eval: missing config", lambda d, ws: eval_args(ws, config=d / "no.yaml")))
    add(argv_case("eval: config without --checkpoint", lambda d, ws: ["eval", str(ws.config)]))
    add(argv_case("eval: folder that is not a run", lambda d, ws: ["eval", str(d)]))

    def run_without_best(d: Path, ws: Workspace) -> list[str]:
        (d / "r").mkdir()
        (d / "r" / "config.yaml").write_text((ws.run / "config.yaml").read_text())
        return ["eval", str(d / "r")]

    add(argv_case("eval: run without best.pt", run_without_best))
    add(argv_case("eval: missing checkpoint", lambda d, ws: eval_args(ws, checkpoint=d / "no.pt")))
    add(argv_case("eval: checkpoint is a folder", lambda d, ws: eval_args(ws, checkpoint=d)))

    def saved(obj: Any) -> Callable[[Path, Workspace], Path]:
        return lambda d, ws: (torch.save(obj, d / "c.pt"), d / "c.pt")[-1]

    checkpoint_files: list[tuple[str, Callable[[Path, Workspace], Path]]] = [
        ("empty", lambda d, ws: _write(d / "c.pt", b"")),
        ("text", lambda d, ws: _write(d / "c.pt", b"these are not weights\n")),
        ("a PNG", lambda d, ws: _write(d / "c.pt", (ws.images / "a.png").read_bytes())),
        ("torn at 10 %", lambda d, ws: _torn_copy(ws.checkpoint, d / "c.pt", 0.1)),
        ("torn at 90 %", lambda d, ws: _torn_copy(ws.checkpoint, d / "c.pt", 0.9)),
        ("a list", saved([1, 2])),
        ("a tensor", saved(torch.zeros(3))),
        ("config is garbage", saved({"model": {}, "config": {"train": {"lr": "x"}}})),
        ("config is a string", saved({"model": {}, "config": "resnet18"})),
    ]
    # Bare weights of the same model load fine into eval's model, and a checkpoint of another
    # architecture rebuilds that architecture in predict: each is bad for one command only.
    eval_only = [("another architecture", lambda d, ws: ws.root / "ckpt" / "ladder.pt")]
    predict_only = [("bare weights", lambda d, ws: ws.root / "ckpt" / "bare.pt")]
    for label, make in checkpoint_files + eval_only:
        add(
            argv_case(
                f"eval: checkpoint {label}",
                lambda d, ws, m=make: eval_args(ws, checkpoint=m(d, ws)),
            )
        )
    for label, make in checkpoint_files + predict_only:
        add(
            argv_case(
                f"predict: checkpoint {label}",
                lambda d, ws, m=make: predict_args(ws, d, checkpoint=m(d, ws)),
                must_not_exist=("out",),
            )
        )

    def crafted(d: Path) -> Path:
        torch.save({"model": _Payload(d / "PWNED"), "config": {}}, d / "evil.pt")
        return d / "evil.pt"

    for command, make_args in (
        ("eval", lambda d, ws: eval_args(ws, checkpoint=crafted(d))),
        ("predict", lambda d, ws: predict_args(ws, d, checkpoint=crafted(d))),
    ):
        cases.append(
            Case(
                f"{command}: crafted pickle checkpoint",
                make_args,
                must_not_exist=("run", "out"),
                marker="PWNED",
            )
        )
    for flags in [
        ["--scales", "0"],
        ["--scales", "-1"],
        ["--scales", "nan"],
        ["--scales", "abc"],
        ["--scales"],
        ["--max-images", "0"],
        ["--max-images", "-3"],
        ["--max-images", "1.5"],
        ["--device", "gpu"],
        ["--device", "cuda:99"],
        ["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:100"],
        ["--split", "nosuchsplit"],
        ["--set", "eval.batch_size=0"],
        ["--set", "data.ignore_index=300"],
        ["--json", "/proc/leanseg_scores.json"],
    ]:
        add(argv_case(f"eval {' '.join(flags)}", lambda d, ws, f=flags: eval_args(ws, *f)))
    add(
        argv_case(
            "eval --json under a file",
            lambda d, ws: eval_args(ws, "--json", str(_write(d / "afile", b"x") / "s.json")),
        )
    )

    # -- predict
    out_only = ("out",)

    def on_inputs(*make_inputs: Callable[[Path], Path]) -> Callable[[Path, Workspace], list[str]]:
        return lambda d, ws: predict_args(ws, d, inputs=[m(d) for m in make_inputs])

    def text_folder(d: Path) -> Path:
        _write(d / "t" / "x.txt", b"x")
        return d / "t"

    def empty_folder(d: Path) -> Path:
        (d / "empty").mkdir()
        return d / "empty"

    def float_tiff(d: Path) -> Path:
        Image.fromarray(np.ones((32, 48), np.float32)).save(d / "f.tif")
        return d / "f.tif"

    add(argv_case("predict: missing image", on_inputs(lambda d: d / "no.png"), out_only))
    add(argv_case("predict: empty folder", on_inputs(empty_folder), out_only))
    add(argv_case("predict: folder of text files", on_inputs(text_folder), out_only))
    add(argv_case("predict: float TIFF (mode F)", on_inputs(float_tiff), out_only))
    bad_images = [
        ("text named .png", b"hello"),
        ("zero bytes .png", b""),
        ("truncated PNG", _png_bytes()[:60]),
        ("PNG header only", b"\x89PNG\r\n\x1a\n"),
        ("JPEG header only", b"\xff\xd8\xff\xe0"),
    ]
    for label, data in bad_images:
        make_input = lambda d, b=data: _write(d / "bad.png", b)  # noqa: E731
        add(argv_case(f"predict: {label}", on_inputs(make_input), out_only))

    def into(make_out: Callable[[Path, Workspace], Path | str]) -> Callable[..., list[str]]:
        return lambda d, ws: predict_args(ws, d, inputs=[str(ws.images)], out=make_out(d, ws))

    def foreign_file(d: Path, ws: Workspace) -> Path:
        _write(d / "out" / "a.png", b"mine")
        return d / "out"

    def folder_named_like_output(d: Path, ws: Workspace) -> Path:
        (d / "out" / "a_overlay.png").mkdir(parents=True)
        return d / "out"

    def foreign_manifest(d: Path, ws: Workspace) -> Path:
        _write(d / "out" / ".leanseg_predict.json", b"[1]")
        _write(d / "out" / "a.png", b"mine")
        return d / "out"

    def symlink_to_inputs(d: Path, ws: Workspace) -> Path:
        (d / "link").symlink_to(ws.images, target_is_directory=True)
        return d / "link"

    add(argv_case("predict: --out is the input folder", into(lambda d, ws: ws.images)))
    add(
        argv_case(
            "predict: --out is the input folder via ..",
            into(lambda d, ws: ws.images / ".." / ws.images.name),
        )
    )
    add(argv_case("predict: --out links to the input folder", into(symlink_to_inputs)))
    add(argv_case("predict: --out is a file", into(lambda d, ws: _write(d / "afile", b"x"))))
    add(
        argv_case(
            "predict: --out under a file", into(lambda d, ws: _write(d / "afile", b"x") / "o")
        )
    )
    add(argv_case("predict: --out in /proc", into(lambda d, ws: "/proc/leanseg_out")))
    add(argv_case("predict: --out holds a foreign a.png", into(foreign_file)))
    add(argv_case("predict: --out holds a folder a_overlay.png", into(folder_named_like_output)))
    add(argv_case("predict: --out holds a foreign manifest", into(foreign_manifest)))
    add(
        argv_case(
            "predict: same name in two folders",
            on_inputs(
                lambda d: write_image(d / "x" / "a.png").parent,
                lambda d: write_image(d / "y" / "a.png").parent,
            ),
            out_only,
        )
    )
    add(
        argv_case(
            "predict: a.png beside a_overlay.png",
            on_inputs(
                lambda d: write_image(d / "x" / "a.png"),
                lambda d: write_image(d / "x" / "a_overlay.png"),
            ),
            out_only,
        )
    )
    for flags in [
        ["--max-megapixels", "0"],
        ["--max-megapixels", "-1"],
        ["--max-megapixels", "abc"],
        ["--max-megapixels", "0.0001"],
        ["--max-megapixels", "inf"],
        ["--overlap", "-1"],
        ["--overlap", "abc"],
        ["--overlap", "1.5"],
        ["--max-megapixels", "0.002", "--overlap", "100000"],
        ["--scales", "0"],
        ["--scales", "-0.5"],
        ["--scales", "1", "0"],
        ["--alpha", "2"],
        ["--alpha", "-0.1"],
        ["--device", "bogus"],
        ["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:100"],
    ]:
        add(
            argv_case(
                f"predict {' '.join(flags)}",
                lambda d, ws, f=flags: predict_args(
                    ws, d, *f, inputs=[str(write_image(d / "big.png", (160, 96)))]
                ),
                out_only,
            )
        )
    add(
        argv_case(
            "predict: without --checkpoint",
            lambda d, ws: ["predict", str(ws.images), "--out", str(d / "out")],
            out_only,
        )
    )
    add(
        argv_case(
            "predict: without --out",
            lambda d, ws: ["predict", str(ws.images), "--checkpoint", str(ws.checkpoint)],
        )
    )

    # -- bench
    for flags in [
        ["--size", "abc"],
        ["--size", "0x0"],
        ["--size", "64x"],
        ["--size", "x64"],
        ["--size", "-64x64"],
        ["--size", "64x64x3"],
        ["--size", "1x1"],
        ["--size", "16x16"],
        ["--size", "31x64"],
        ["--size", "32x32"],
        ["--size", "64x64", "--batch", "0"],
        ["--size", "64x64", "--batch", "-1"],
        ["--size", "64x64", "--batch", "abc"],
        ["--size", "64x64", "--warmup", "-1"],
        ["--size", "64x64", "--repeats", "0"],
        ["--size", "64x64", "--threads", "0"],
        ["--size", "64x64", "--threads", "-1"],
        ["--size", "64x64", "--device", "bogus"],
        ["--size", "64x64", "--device", "cuda:77"],
        ["--size", "64x64", "--json", "/proc/leanseg_bench.json"],
    ]:
        add(argv_case(f"bench {' '.join(flags)}", lambda d, ws, f=flags: bench_args(ws, *f)))
    add(argv_case("bench: without --size", lambda d, ws: ["bench", str(ws.config)]))
    add(
        argv_case(
            "bench: missing config",
            lambda d, ws: ["bench", str(d / "no.yaml"), "--size", "64x64"],
        )
    )

    # -- data check, quadtree stats, demo, the parser
    cases.append(
        Case(
            "data check: unknown split",
            lambda d, ws: ["data", "check", str(ws.config), "--split", "nosuch"],
            expects_report=True,
        )
    )
    add(argv_case("data check: missing config", lambda d, ws: ["data", "check", str(d / "n.yaml")]))
    quadtree = ["quadtree", "stats"]
    add(
        argv_case(
            "quadtree stats --max-images 0",
            lambda d, ws: [*quadtree, str(ws.config), "--max-images", "0"],
        )
    )
    add(argv_case("quadtree stats: missing config", lambda d, ws: [*quadtree, str(d / "n.yaml")]))
    add(
        argv_case(
            "quadtree stats: unknown split",
            lambda d, ws: [*quadtree, str(ws.config), "--split", "nosuch"],
        )
    )
    for flags in [["--iters", "0"], ["--iters", "-5"], ["--iters", "many"]]:
        cases.append(
            Case(
                f"demo {' '.join(flags)}",
                lambda d, ws, f=flags: ["demo", "--out", str(d / "demo"), "--no-progress", *f],
                must_not_exist=("demo",),
            )
        )
    add(
        argv_case(
            "demo --out is a file",
            lambda d, ws: ["demo", "--out", str(_write(d / "afile", b"x")), "--iters", "1"],
        )
    )
    add(argv_case("unknown command", lambda d, ws: ["segment", str(ws.config)]))
    add(argv_case("unknown flag", lambda d, ws: ["train", str(ws.config), "--epochs", "3"]))
    add(argv_case("no arguments", lambda d, ws: []))
    add(argv_case("data without a subcommand", lambda d, ws: ["data"]))
    return cases


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------- running


VERDICTS = (
    "clear error",  # refused: exit status != 0, one ``leanseg: error:`` line, no traceback
    "ok",  # a case that must work did (exit 0)
    "traceback",
    "internal error",  # the CLI's one-line ``unexpected error`` (a bug caught by the catch-all)
    "silent success",  # exit 0 where a refusal was due
    "wrongly refused",  # a case that must work failed
    "unclear failure",  # exit != 0 without a one-line error
    "memory overrun",  # MemoryError, a failed allocation or a crash under the memory limit
    "time overrun",
)
# A case is passed when its verdict is one of these, no file changed that it did not ask to
# write, and no crafted checkpoint ran code.
PASSED = ("clear error", "ok")
_MEMORY_SIGNS = ("MemoryError", "can't allocate memory", "std::bad_alloc", "out of memory")


@dataclass
class Planned:
    """A case ready to run: its files made, its command known."""

    name: str
    klass: str
    argv: list[str]
    expect: str  # refused | ok
    root: Path  # the folder hashed before and after (and the command's working folder)
    writes: tuple[str, ...] = ()  # paths relative to ``root`` the case may change
    marker: Path | None = None
    expects_report: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    klass: str
    argv: list[str]
    exit_code: int | None
    verdict: str
    message: str
    seconds: float
    max_rss_mib: float | None
    changed: list[str] = field(default_factory=list)
    executed: bool = False

    @property
    def passed(self) -> bool:
        return self.verdict in PASSED and not self.changed and not self.executed


class Snapshots:
    """Content hashes of every entry under a folder, reusing a file's hash while its
    ``stat`` (size, modification time, inode) is unchanged. Links are recorded by their
    target, FIFOs and sockets by their type (never opened)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, int, int, int], str] = {}

    def take(self, root: Path) -> dict[str, str]:
        entries: dict[str, str] = {}
        if not root.exists():
            return entries
        for folder, dirs, files in os.walk(root, followlinks=False):
            for name in dirs + files:
                path = Path(folder) / name
                entries[path.relative_to(root).as_posix()] = self._describe(path)
        return entries

    def _describe(self, path: Path) -> str:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return f"link {os.readlink(path)}"
        if stat.S_ISDIR(info.st_mode):
            return f"folder {stat.S_IMODE(info.st_mode):o}"
        if not stat.S_ISREG(info.st_mode):
            return f"special {info.st_mode:o}"
        key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._hashes[key] = digest.hexdigest()
        return f"file {stat.S_IMODE(info.st_mode):o} {self._hashes[key]}"


def changed_paths(
    before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...]
) -> list[str]:
    """Entries added, removed or changed, except those at or under an ``allowed`` path."""
    names = sorted(set(before) | set(after))
    changed = [name for name in names if before.get(name) != after.get(name)]
    return [
        name
        for name in changed
        if not any(name == ok or name.startswith(ok.rstrip("/") + "/") for ok in allowed)
    ]


def _limit_memory(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def run_limited(
    argv: list[str], cwd: Path, env: dict[str, str], memory_gib: float, timeout_s: float
) -> tuple[int | None, str, str, float | None, bool]:
    """``python -m leanseg ARGV`` under an address-space limit and a time limit.

    Returns:
        (exit status, or ``-signal`` when killed by one; stdout; stderr; peak resident memory
        in MiB; whether it ran out of time).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "leanseg", *argv],
            cwd=cwd,
            env={**os.environ, "OMP_NUM_THREADS": "1", **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_limit_memory(int(memory_gib * (1 << 30))),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return process.returncode, stdout, stderr, usage.ru_maxrss / 1024, timed_out


def classify(
    planned: Planned, code: int | None, stdout: str, stderr: str, timed_out: bool
) -> tuple[str, str]:
    """The verdict of one run (:data:`VERDICTS`) and the line that shows it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if timed_out:
        return "time overrun", f"killed after the time limit; last stderr line: {last!r}"
    if any(sign in stderr for sign in _MEMORY_SIGNS) or (code is not None and code < 0):
        return "memory overrun", f"exit {code}; last stderr line: {last!r}"
    if "Traceback (most recent call last)" in stderr:
        return "traceback", last
    if planned.expect == "ok":
        return ("ok", last) if code == 0 else ("wrongly refused", f"exit {code}: {last}")
    if code == 0:
        return "silent success", f"exit 0; last stderr line: {last!r}"
    if last.startswith("leanseg: error: unexpected error"):
        return "internal error", last
    if last.startswith("leanseg: error: ") and len(lines) >= 1:
        return "clear error", last
    if planned.expects_report and "problem(s):" in stdout:
        return "clear error", " ".join(stdout.split("problem(s):")[-1].split())
    return "unclear failure", f"exit {code}; last stderr line: {last!r}"


def execute(
    planned: Planned,
    snapshots: Snapshots,
    workspace: Path,
    memory_gib: float,
    timeout_s: float,
) -> Outcome:
    """Run one case, hashing its folder (and the shared workspace) before and after."""
    before = snapshots.take(planned.root)
    shared_before = snapshots.take(workspace)
    started = time.perf_counter()
    code, stdout, stderr, rss, timed_out = run_limited(
        planned.argv, planned.root, planned.env, memory_gib, timeout_s
    )
    seconds = time.perf_counter() - started
    verdict, message = classify(planned, code, stdout, stderr, timed_out)
    changed = changed_paths(before, snapshots.take(planned.root), planned.writes)
    changed += [
        f"workspace/{name}" for name in changed_paths(shared_before, snapshots.take(workspace), ())
    ]
    executed = planned.marker is not None and planned.marker.exists()
    return Outcome(
        planned.name,
        planned.klass,
        planned.argv,
        code,
        verdict,
        message,
        round(seconds, 2),
        None if rss is None else round(rss, 1),
        changed,
        executed,
    )


def earlier_class(name: str) -> str:
    """The class of a case of the first catalogue (issue 12), from its name."""
    first = name.split(":")[0].split(" ")[0]
    return f"issue 12: {first}"


def plan_earlier(case: Case, index: int, scratch: Path, workspace: Workspace) -> Planned:
    """A case of :func:`catalogue`: its own folder, nothing in it to be written."""
    case_dir = scratch / "cases" / f"{index:03d}"
    case_dir.mkdir(parents=True)
    argv = case.make(case_dir, workspace)
    return Planned(
        name=case.name,
        klass=earlier_class(case.name),
        argv=argv,
        expect="refused",
        root=case_dir,
        marker=None if case.marker is None else case_dir / case.marker,
        expects_report=case.expects_report,
    )


def plan_dict(case: dict[str, Any], workdir: Path) -> Planned:
    """A case in the dict format of ``bad_inputs_sizes.size_cases`` (and
    ``bad_inputs_round2``): its ``setup(workdir)`` run now."""
    workdir.mkdir(parents=True, exist_ok=True)
    if case.get("setup") is not None:
        case["setup"](workdir)
    argv = [str(a) for a in case["argv"]]
    return Planned(
        name=case["name"],
        klass=case["klass"],
        argv=argv,
        expect=case["expect"],
        root=workdir,
        writes=tuple(case.get("writes", ())),
        expects_report=argv[:2] == ["data", "check"],
        env=dict(case.get("env", {})),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the cases whose name or class contains this")
    parser.add_argument(
        "--skip-earlier", action="store_true", help="leave out the catalogue of issue 12"
    )
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where the results go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--memory-gib", type=float, default=MEMORY_LIMIT_GIB)
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S)
    args = parser.parse_args()
    torch.set_num_threads(1)

    scratch = Path(tempfile.mkdtemp(prefix="leanseg_bad_inputs_"))
    workspace = Workspace(scratch / "workspace")
    workspace.root.mkdir()
    workspace.build()
    # Each source of cases: (cases, how to plan one). Planning makes the case's files.
    sources: list[tuple[str, list[Any], Callable[[Any, int], Planned]]] = []
    if not args.skip_earlier:
        sources.append(
            ("issue 12", catalogue(), lambda c, i: plan_earlier(c, i, scratch, workspace))
        )
    round2_dir = scratch / "round2"
    sources.append(
        (
            "issue 27",
            round2_cases(round2_dir, workspace, tiny_config),
            lambda c, i: plan_dict(c, round2_dir),
        )
    )
    sizes_dir = scratch / "sizes"
    if size_cases is not None:
        sources.append(
            ("issue 27 sizes", size_cases(sizes_dir), lambda c, i: plan_dict(c, sizes_dir))
        )
    snapshots = Snapshots()
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    index = 0
    for source, cases, plan in sources:
        names = [c.name if isinstance(c, Case) else c["name"] for c in cases]
        assert len(names) == len(set(names)), f"case names of {source} must be unique"
        for case in cases:
            name = case.name if isinstance(case, Case) else case["name"]
            klass = earlier_class(name) if isinstance(case, Case) else case["klass"]
            index += 1
            if args.only and args.only not in name and args.only not in klass:
                continue
            try:
                planned = plan(case, index)
            except Exception as exc:  # noqa: BLE001 - a broken case is reported, not fatal
                outcomes.append(
                    Outcome(name, klass, [], None, "unclear failure", f"setup: {exc!r}", 0, None)
                )
                print(f"BAD {index:3d} {name}: setup failed: {exc!r}", flush=True)
                continue
            outcome = execute(planned, snapshots, workspace.root, args.memory_gib, args.timeout)
            outcomes.append(outcome)
            flag = "ok " if outcome.passed else "BAD"
            extra = f" CHANGED {outcome.changed[:3]}" if outcome.changed else ""
            print(
                f"{flag} {index:3d} [{klass}] {name}: {outcome.verdict}: "
                f"{outcome.message[:140]}{extra}",
                flush=True,
            )
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)

    def shown(text: str) -> str:
        return text.replace(str(scratch), "$SCRATCH")

    by_class: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts = by_class.setdefault(o.klass, {"cases": 0, "passed": 0})
        counts["cases"] += 1
        counts["passed"] += o.passed
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
        if o.changed:
            counts["files changed"] = counts.get("files changed", 0) + 1
    new = [o for o in outcomes if o.klass.startswith("issue 12") is False]
    summary = {
        "cases": len(outcomes),
        "new_cases_issue_27": len(new),
        "passed": sum(o.passed for o in outcomes),
        **{verdict: sum(o.verdict == verdict for o in outcomes) for verdict in VERDICTS},
        "files_changed": sum(bool(o.changed) for o in outcomes),
        "executed_crafted_code": sum(o.executed for o in outcomes),
        "max_rss_mib": max((o.max_rss_mib or 0 for o in outcomes), default=0),
    }
    record = {
        "summary": summary,
        "limits": {"address_space_gib": args.memory_gib, "seconds_per_case": args.timeout},
        "seconds": round(time.perf_counter() - started, 1),
        "by_class": by_class,
        "not_passed": [
            {
                "name": o.name,
                "class": o.klass,
                "argv": [shown(a) for a in o.argv],
                "exit_code": o.exit_code,
                "verdict": o.verdict,
                "message": shown(o.message),
                "changed": o.changed,
                "executed": o.executed,
            }
            for o in outcomes
            if not o.passed
        ],
        "cases": [
            {
                "name": o.name,
                "class": o.klass,
                "verdict": o.verdict,
                "exit_code": o.exit_code,
                "seconds": o.seconds,
                "max_rss_mib": o.max_rss_mib,
                "message": shown(o.message)[:300],
                **({"changed": o.changed} if o.changed else {}),
            }
            for o in outcomes
        ],
        "sizes_module": size_cases is not None,
        "euid": os.geteuid(),  # root reads files of any mode: no chmod cases then
    }
    write_result(args.json, record, cuda=torch.cuda.is_available())
    print(json.dumps(summary, indent=1))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
