"""A catalogue of bad inputs run against the ``leanseg`` command line (issue 12).

Every case is something a new user may type or hand over: a config value out of range for every
validated key, wrong types and unknown keys, broken config files (missing, a folder, binary,
not UTF-8, bad YAML), bad ``--set`` overrides, bad flag values of every subcommand, missing,
empty, torn, foreign or crafted checkpoint files, unreadable images, output folders that cannot
or must not be written, and datasets with broken files.

Each case is scored:

- **handled**: exit status 2 and the last line of stderr is one ``leanseg: error: ...`` line
  (for ``leanseg data check`` on broken data: exit 2 and its report of the problems);
- **traceback**: an exception escaped ``main`` (in-process) or Python printed a traceback;
- **other**: any other ending (exit 0 where an error was due, a wrong exit status, a timeout);
- **half-made folder**: the run or output folder the case named exists afterwards (a failed
  command must not leave one behind); for a training run that started and then met the bad
  input (a broken file read at the first evaluation), only if running the same command again
  is refused because of the folder instead of ending with the same error;
- **executed**: a crafted checkpoint ran its payload (it creates a marker file when unpickled).

All cases run on tiny synthetic data (a ResNet-18 + bilinear model that is never trained, 64x96
scenes), in-process through :func:`leanseg.cli.main` (fast) or with ``--subprocess`` as real
``python -m leanseg`` processes. Results: ``benchmarks/results/bad_inputs.json`` with the
counts, every case that was not handled, and the machine.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bad_inputs.py \
        [--subprocess] [--only SUBSTRING] [--json benchmarks/results/bad_inputs.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from common import REPO, machine, write_json

DEFAULT_JSON = REPO / "benchmarks" / "results" / "bad_inputs.json"
CASE_TIMEOUT_S = 120

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

    def build(self) -> None:
        from leanseg.engine.checkpoint import save_checkpoint
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


@dataclass
class Outcome:
    name: str
    argv: list[str]
    exit_code: int | None
    verdict: str  # handled | traceback | other
    message: str
    seconds: float
    half_made: list[str] = field(default_factory=list)
    executed: bool = False


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


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def run_in_process(argv: list[str]) -> tuple[int | None, str, str, str]:
    """``main(argv)`` with its output captured: (exit status or None, stdout, stderr,
    the exception that escaped ``main``)."""
    from leanseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = ""
    code: int | None
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
    except _Timeout:
        code, escaped = None, f"timed out after {CASE_TIMEOUT_S} s"
    except BaseException as exc:  # noqa: BLE001 - anything that escapes main is a failure
        code = None
        escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        signal.alarm(0)
    return code, out.getvalue(), err.getvalue(), escaped


def run_subprocess(argv: list[str], cwd: Path) -> tuple[int | None, str, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "leanseg", *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, "", "", f"timed out after {CASE_TIMEOUT_S} s"
    escaped = ""
    if "Traceback (most recent call last)" in done.stderr:
        escaped = done.stderr.strip().splitlines()[-1]
    return done.returncode, done.stdout, done.stderr, escaped


def score(case: Case, case_dir: Path, argv: list[str], use_subprocess: bool) -> Outcome:
    start = time.perf_counter()
    previous = Path.cwd()
    os.chdir(case_dir)
    try:
        if use_subprocess:
            code, stdout, stderr, escaped = run_subprocess(argv, case_dir)
        else:
            code, stdout, stderr, escaped = run_in_process(argv)
    finally:
        os.chdir(previous)
    seconds = time.perf_counter() - start
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if escaped:
        verdict, message = "traceback", escaped
    elif code == 2 and last.startswith("leanseg: error: "):
        verdict, message = "handled", last
    elif case.expects_report and code == 2 and "problem(s):" in stdout:
        verdict, message = "handled", " ".join(stdout.split("problem(s):")[-1].split())
    else:
        verdict, message = "other", f"exit {code}; last stderr line: {last!r}"
    left = [name for name in case.must_not_exist if (case_dir / name).exists()]
    if left and argv[:1] == ["train"] and verdict == "handled":
        # Training started and then met the bad input (a broken file read at the first
        # evaluation): the run folder may stay if running the same command again is not
        # refused because of it, i.e. it ends with the same error.
        again = score(Case(case.name, case.make, must_not_exist=()), case_dir, argv, use_subprocess)
        restartable = again.message == message
        left = [] if restartable else [f"{name} (blocks a rerun: {again.message})" for name in left]
    executed = case.marker is not None and (case_dir / case.marker).exists()
    return Outcome(case.name, argv, code, verdict, message, round(seconds, 2), left, executed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subprocess", action="store_true", help="one process per case")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where the results go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cases = catalogue()
    if args.only:
        cases = [case for case in cases if args.only in case.name]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    scratch = Path(tempfile.mkdtemp(prefix="leanseg_bad_inputs_"))
    workspace = Workspace(scratch / "workspace")
    workspace.root.mkdir()
    workspace.build()
    outcomes = []
    started = time.perf_counter()
    for index, case in enumerate(cases):
        case_dir = scratch / "cases" / f"{index:03d}"
        case_dir.mkdir(parents=True)
        try:
            argv = case.make(case_dir, workspace)
        except Exception as exc:  # noqa: BLE001 - a broken case is reported, not fatal
            outcomes.append(Outcome(case.name, [], None, "other", f"setup failed: {exc!r}", 0.0))
            continue
        outcome = score(case, case_dir, argv, args.subprocess)
        outcomes.append(outcome)
        flag = "ok " if outcome.verdict == "handled" and not outcome.half_made else "BAD"
        print(f"{flag} {index:3d} {case.name}: {outcome.message[:150]}", flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)

    def count(test: Callable[[Outcome], bool]) -> int:
        return sum(1 for outcome in outcomes if test(outcome))

    failures = [
        {
            "name": o.name,
            "argv": [a.replace(str(scratch), "$SCRATCH") for a in o.argv],
            "exit_code": o.exit_code,
            "verdict": o.verdict,
            "message": o.message.replace(str(scratch), "$SCRATCH"),
            "half_made": o.half_made,
            "executed": o.executed,
        }
        for o in outcomes
        if o.verdict != "handled" or o.half_made or o.executed
    ]
    summary = {
        "tried": len(outcomes),
        "handled_one_line_error": count(lambda o: o.verdict == "handled"),
        "traceback": count(lambda o: o.verdict == "traceback"),
        "other": count(lambda o: o.verdict == "other"),
        "left_half_made_folder": count(lambda o: bool(o.half_made)),
        "executed_crafted_code": count(lambda o: o.executed),
        "fully_handled": count(
            lambda o: o.verdict == "handled" and not o.half_made and not o.executed
        ),
    }
    record = {
        "mode": "subprocess" if args.subprocess else "in-process",
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
        "failures": failures,
        "cases": [{"name": o.name, "verdict": o.verdict, "seconds": o.seconds} for o in outcomes],
        "machine": machine(
            cuda=torch.cuda.is_available(),
            euid=os.geteuid() if hasattr(os, "geteuid") else None,  # root ignores permissions
        ),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    write_json(args.json, record, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
