"""Bad inputs of issue 27, items 5 and 6 and the YAML sizes of item 4: the cases.

:func:`round2_cases` returns them in the dict format that ``bad_inputs.py`` runs (the format of
``bad_inputs_sizes.size_cases``): ``name``, ``klass``, ``argv`` (after ``leanseg``), ``expect``
(``refused`` or ``ok``), ``writes`` (paths relative to the work folder the case may change),
``setup`` (``setup(workdir)`` creates the case's input files) and, for a few cases here only,
``env`` (extra environment variables). Every case has a folder of its own under the work folder.

The classes:

- item 5: ``null bytes``, ``symlink loops``, ``unreadable files``, ``mixed-type keys``, ``deep
  nesting``, ``seeds``, ``non-finite numbers``, ``devices``, ``checkpoint field types``;
- item 6: ``empty config``, ``duplicate keys``, ``loss parameters``, ``label ids``, ``all
  ignored``, ``path expansion``;
- item 4: ``yaml sizes`` (file size, alias expansion, recursive aliases).

Cases run as root see no permission errors, so the unreadable-file class uses files no one can
read (``/proc/self/mem``, sockets, FIFOs) and adds ``chmod 000`` cases only for other users.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

# The variable a path-expansion case expects to be unset (checked when the cases are made).
UNSET_VARIABLE = "LEANSEG_BAD_INPUTS_UNSET"
# Set by the harness for the path-expansion cases that must work: the case's own folder.
CASE_VARIABLE = "LEANSEG_BAD_INPUTS_CASE"


class _Catalogue:
    """Collects the cases, one folder each under ``root``."""

    def __init__(
        self, root: Path, workspace: Any, tiny_config: Callable[..., dict[str, Any]]
    ) -> None:
        self.root = root
        self.ws = workspace
        self.tiny_config = tiny_config
        self.cases: list[dict[str, Any]] = []

    def next_folder(self) -> Path:
        return self.root / f"r{len(self.cases):03d}"

    def add(
        self,
        name: str,
        klass: str,
        argv: list[str],
        *,
        setup: Callable[[Path], object] | None = None,
        expect: str = "refused",
        writes: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        folder = self.next_folder()
        rel = folder.relative_to(self.root).as_posix()

        def make(workdir: Path, setup: Callable[[Path], object] | None = setup) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            if setup is not None:
                setup(folder)

        self.cases.append(
            {
                "name": name,
                "klass": klass,
                "argv": argv,
                "expect": expect,
                "writes": [f"{rel}/{w}" for w in writes],
                "setup": make,
                **({"env": env} if env else {}),
            }
        )

    # ------------------------------------------------------------------ helpers

    def config_text(self, name: str, klass: str, text: str, *extra: str, **options: Any) -> None:
        """``leanseg train`` of a config file with the raw ``text`` (``RUN``: the run folder)."""
        folder = self.next_folder()
        path = folder / "config.yaml"
        body = text.replace("RUN", str(folder / "run"))
        self.add(
            name,
            klass,
            ["train", str(path), "--no-progress", *extra],
            setup=lambda d: path.write_text(body),
            **options,
        )

    def config_values(self, name: str, klass: str, *extra: str, **overrides: Any) -> None:
        """``leanseg train`` of the tiny config with dotted ``overrides`` (keys with ``__`` for
        ``.``)."""
        folder = self.next_folder()
        raw = self.tiny_config(
            folder / "run", **{key.replace("__", "."): v for key, v in overrides.items()}
        )
        path = folder / "config.yaml"
        text = yaml.safe_dump(raw)
        self.add(
            name,
            klass,
            ["train", str(path), "--no-progress", *extra],
            setup=lambda d: path.write_text(text),
        )

    def folder_dataset_config(self, folder: Path, **overrides: Any) -> Path:
        """A config of a two-class ``folder`` dataset at ``folder/data`` (made by the setup)."""
        raw = self.tiny_config(
            folder / "run",
            **{
                "data.dataset": "folder",
                "data.root": str(folder / "data"),
                "data.classes": ["left", "right"],
                "data.options": {},
                **overrides,
            },
        )
        path = folder / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw))
        return path


def _image(path: Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def folder_data(
    root: Path,
    label: Callable[[str, int], np.ndarray] | None = None,
    *,
    label_format: str = "PNG",
) -> None:
    """Two images per split, labels from ``label(split, index)`` (default: left 0, right 1)."""
    for split in ("train", "val"):
        for index in range(2):
            _image(root / "images" / split / f"s{index}.png", seed=index)
            if label is None:
                values = np.zeros((64, 64), np.uint8)
                values[:, 32:] = 1
            else:
                values = label(split, index)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(values).save(
                root / "labels" / split / f"s{index}.png", format=label_format
            )


def _loop(path: Path) -> Path:
    """A symbolic link that points at itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)
    return path


def _socket_file(path: Path) -> None:
    """A Unix socket bound at ``path``: a file that no one can open for reading."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def _nested_flow(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines)


def round2_cases(
    root: Path, workspace: Any, tiny_config: Callable[..., dict[str, Any]]
) -> list[dict[str, Any]]:
    """The cases of items 5 and 6 and the YAML sizes, their files to be made under ``root``.

    Args:
        root: the work folder; every case makes and may write only its own sub-folder.
        workspace: ``bad_inputs.Workspace`` (a good config, checkpoint, run and images, and
            ``trained``, a run folder with a resumable ``last.pt``).
        tiny_config: ``bad_inputs.tiny_config``.
    """
    if UNSET_VARIABLE in os.environ:
        raise RuntimeError(f"unset {UNSET_VARIABLE} before running the cases")
    c = _Catalogue(root, workspace, tiny_config)
    ws = workspace
    good = str(ws.config)
    checkpoint = str(ws.checkpoint)
    image = str(ws.images / "a.png")

    # ================================================================ item 5

    # -- null bytes: in config values (a shell cannot pass one in an argument)
    nul = "null bytes"
    c.config_values("data.root holds a null byte", nul, data__root="/tmp/leanseg\0data")
    c.config_values("work_dir holds a null byte", nul, work_dir="runs/a\0b")
    c.config_values(
        "pretrained path holds a null byte",
        nul,
        model__backbone={"name": "resnet18", "pretrained": "/tmp/w\0.pth"},
    )
    c.config_values("a class name holds a null byte", nul, data__classes=["a\0", "b"])
    folder = c.next_folder()
    c.add(
        "--set value with a null byte (YAML escape)",
        nul,
        ["train", good, "--set", 'work_dir="runs/x\\0y"'],
    )
    c.add(
        "--set data.root with a null byte",
        nul,
        ["eval", good, "--checkpoint", checkpoint, "--set", 'data.root="/tmp/\\0"'],
    )

    # -- symbolic link loops
    loops = "symlink loops"
    folder = c.next_folder()
    c.add(
        "config file is a symlink loop",
        loops,
        ["train", str(folder / "loop.yaml")],
        setup=lambda d: _loop(d / "loop.yaml"),
    )
    folder = c.next_folder()
    c.add(
        "base: is a symlink loop",
        loops,
        ["train", str(folder / "config.yaml")],
        setup=lambda d: (
            (
                _loop(d / "loop.yaml"),
                (d / "config.yaml").write_text(f"base: loop.yaml\nwork_dir: {d / 'run'}\n"),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "data.root is a symlink loop",
        loops,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (
            (
                _loop(d / "data"),
                c.folder_dataset_config(d),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "a training image is a symlink loop",
        loops,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (
            (
                folder_data(d / "data"),
                _loop(d / "data" / "images" / "train" / "s2.png"),
                c.folder_dataset_config(d),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "eval --checkpoint is a symlink loop",
        loops,
        ["eval", good, "--checkpoint", str(folder / "c.pt")],
        setup=lambda d: _loop(d / "c.pt"),
    )
    folder = c.next_folder()
    c.add(
        "predict: the image is a symlink loop",
        loops,
        ["predict", str(folder / "x.png"), "--checkpoint", checkpoint, "--out", str(folder / "o")],
        setup=lambda d: _loop(d / "x.png"),
    )
    folder = c.next_folder()
    c.add(
        "predict: a folder holding only a symlink loop",
        loops,
        ["predict", str(folder / "in"), "--checkpoint", checkpoint, "--out", str(folder / "o")],
        setup=lambda d: _loop(d / "in" / "x.png"),
    )
    folder = c.next_folder()
    c.add(
        "predict --out is a symlink loop",
        loops,
        ["predict", image, "--checkpoint", checkpoint, "--out", str(folder / "o")],
        setup=lambda d: _loop(d / "o"),
    )
    folder = c.next_folder()
    c.add(
        "eval of a run folder whose config.yaml is a symlink loop",
        loops,
        ["eval", str(folder / "run")],
        setup=lambda d: _loop(d / "run" / "config.yaml"),
    )

    # -- files that cannot be read (root reads any mode, so no chmod for root)
    unreadable = "unreadable files"
    c.add("config is /proc/self/mem", unreadable, ["train", "/proc/self/mem"])
    c.add(
        "eval --checkpoint /proc/self/mem",
        unreadable,
        ["eval", good, "--checkpoint", "/proc/self/mem"],
    )
    folder = c.next_folder()
    c.add(
        "config is a socket",
        unreadable,
        ["train", str(folder / "s.yaml")],
        setup=lambda d: _socket_file(d / "s.yaml"),
    )
    folder = c.next_folder()
    c.add(
        "predict: the image is a socket",
        unreadable,
        ["predict", str(folder / "s.png"), "--checkpoint", checkpoint, "--out", str(folder / "o")],
        setup=lambda d: _socket_file(d / "s.png"),
    )
    folder = c.next_folder()
    c.add(
        "a label file is a FIFO",
        unreadable,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (
            (
                folder_data(d / "data"),
                (d / "data" / "labels" / "train" / "s1.png").unlink(),
                os.mkfifo(d / "data" / "labels" / "train" / "s1.png"),
                c.folder_dataset_config(d),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "a base: file under a regular file",
        unreadable,
        ["train", str(folder / "config.yaml")],
        setup=lambda d: (
            (
                (d / "afile").write_text("x"),
                (d / "config.yaml").write_text(f"base: afile/b.yaml\nwork_dir: {d / 'run'}\n"),
            )
        ),
    )
    if os.geteuid() != 0:
        folder = c.next_folder()
        c.add(
            "config with mode 000",
            unreadable,
            ["train", str(folder / "config.yaml")],
            setup=lambda d: (
                (
                    (d / "config.yaml").write_text("train: {lr: 0.1}\n"),
                    (d / "config.yaml").chmod(0),
                )
            ),
        )
        folder = c.next_folder()
        c.add(
            "a training image with mode 000",
            unreadable,
            ["train", str(folder / "config.yaml"), "--no-progress"],
            setup=lambda d: (
                (
                    folder_data(d / "data"),
                    (d / "data" / "images" / "train" / "s0.png").chmod(0),
                    c.folder_dataset_config(d),
                )
            ),
        )

    # -- keys that are not names
    keys = "mixed-type keys"
    c.config_text("top level: an integer key", keys, "1: x\nwork_dir: RUN\n")
    c.config_text(
        "train: an integer key beside lr", keys, "train: {1: 2, lr: 0.1}\nwork_dir: RUN\n"
    )
    c.config_text("data.options: an integer key", keys, "data: {options: {1: 2}}\nwork_dir: RUN\n")
    c.config_text(
        "model.head: a float key",
        keys,
        "model: {head: {name: bilinear, 3.5: x}}\nwork_dir: RUN\n",
    )
    c.config_text("top level: a boolean key", keys, "true: 1\nwork_dir: RUN\n")
    c.config_text("data: a null key", keys, "data: {null: 1}\nwork_dir: RUN\n")
    c.config_text("a list as a key", keys, "? [1, 2]\n: x\nwork_dir: RUN\n")
    c.config_text(
        "data.label_colors: an integer class name",
        keys,
        "data: {dataset: folder, root: /nonexistent, classes: [a],"
        " label_colors: {1: [0, 0, 0]}}\nwork_dir: RUN\n",
    )
    c.config_text("a date as a key", keys, "2024-01-01: x\nwork_dir: RUN\n")

    # -- deep nesting
    deep = "deep nesting"
    c.config_text("train.lr nested 1000 lists deep", deep, f"train: {{lr: {_nested_flow(1000)}}}\n")
    c.config_text("a mapping nested 20000 deep", deep, "{a: " * 20000 + "1" + "}" * 20000 + "\n")
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(300)) + f"{'  ' * 300}1\n"
    c.config_text("block mapping nested 300 deep", deep, block)
    c.add(
        "--set value nested 2000 deep",
        deep,
        ["train", good, "--set", f"train.lr={_nested_flow(2000)}"],
    )
    c.config_text(
        "data.options nested 40 deep (under the limit)",
        deep,
        f"data: {{options: {{size: {_nested_flow(40)}}}}}\nwork_dir: RUN\n",
    )

    # -- seeds
    seeds = "seeds"
    for value in (-1, 2**32, 2**64, 10**30):
        c.config_values(f"train.seed={value}", seeds, train__seed=value)
    c.config_values("train.seed=1e30 (a float)", seeds, train__seed=1e30)
    c.add("--set train.seed=-5", seeds, ["train", good, "--set", "train.seed=-5"])
    c.config_values(
        "synthetic data.options.seed=-1",
        seeds,
        data__options={"num_samples": 4, "size": [64, 96], "seed": -1},
    )
    # NumPy's generator takes any seed >= 0: a large one is no error.
    folder = c.next_folder()
    text = yaml.safe_dump(
        tiny_config(
            folder / "run", **{"data.options": {"num_samples": 4, "size": [64, 96], "seed": 2**70}}
        )
    )
    c.add(
        "synthetic data.options.seed=2**70 (works)",
        seeds,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d, t=text: (d / "config.yaml").write_text(t),
        expect="ok",
        writes=("run",),
    )

    # -- NaN and infinite numbers
    nan = float("nan")
    inf = float("inf")
    finite = "non-finite numbers"
    c.config_values("data.mean has NaN", finite, data__mean=[nan, 0.5, 0.5])
    c.config_values("data.std has inf", finite, data__std=[inf, 0.2, 0.2])
    c.config_values("data.std has 0", finite, data__std=[0.0, 0.2, 0.2])
    c.config_values("data.std is negative", finite, data__std=[-0.2, 0.2, 0.2])
    c.config_values(
        "model.head.dropout NaN", finite, model__head={"name": "bilinear", "dropout": nan}
    )
    c.config_values("eval.crf.appearance_weight NaN", finite, eval__crf={"appearance_weight": nan})
    c.config_values(
        "data.options.size has inf",
        finite,
        data__options={"num_samples": 4, "size": [inf, 96], "seed": 0},
    )
    c.config_values("train.grad_clip inf", finite, train__grad_clip=inf)
    c.config_values("train.warmup_ratio NaN", finite, train__warmup_ratio=nan)
    c.config_values("eval.scales [inf]", finite, eval__scales=[inf])
    c.add("--set train.lr=.nan", finite, ["train", good, "--set", "train.lr=.nan"])
    c.add("--set train.momentum=-.inf", finite, ["train", good, "--set", "train.momentum=-.inf"])
    c.add(
        "eval --set eval.crf.smoothness_xy=.inf",
        finite,
        ["eval", good, "--checkpoint", checkpoint, "--set", "eval.crf.smoothness_xy=.inf"],
    )

    # -- device strings
    devices = "devices"
    for value in ("cuda:99999999999999999999", "cuda:-1", "cpu:0", "meta", " cpu", "xla"):
        c.config_values(f"train.device={value!r}", devices, train__device=value)
    c.add(
        "eval --device cuda:1x",
        devices,
        ["eval", good, "--checkpoint", checkpoint, "--device", "cuda:1x"],
    )
    folder = c.next_folder()
    c.add(
        "predict --device Cpu",
        devices,
        [
            "predict",
            image,
            "--checkpoint",
            checkpoint,
            "--out",
            str(folder / "o"),
            "--device",
            "Cpu",
        ],
    )
    c.add("bench --device npu", devices, ["bench", good, "--size", "64x64", "--device", "npu"])
    c.add(
        "eval --set train.device=vulkan",
        devices,
        ["eval", good, "--checkpoint", checkpoint, "--set", "train.device=vulkan"],
    )

    # -- checkpoints whose entries have the wrong types
    types = "checkpoint field types"

    def patched(entries: dict[str, Any], source: Path) -> Callable[[Path], Path]:
        def make(d: Path) -> Path:
            payload = torch.load(source, weights_only=True)
            for key, value in entries.items():
                if callable(value):
                    payload[key] = value(payload.get(key))
                else:
                    payload[key] = value
            torch.save(payload, d / "c.pt")
            return d / "c.pt"

        return make

    def first_tensor_replaced(state: dict[str, Any]) -> dict[str, Any]:
        first = next(iter(state))
        return {**state, first: "not a tensor"}

    def resumed(entries: dict[str, Any]) -> Callable[[Path], None]:
        """A copy of the trained run, its last.pt patched, resumed with a config of its own."""

        def make(d: Path) -> None:
            shutil.copytree(ws.trained, d / "run")
            last = d / "run" / "checkpoints" / "last.pt"
            patched(entries, last)(d)
            (d / "c.pt").replace(last)
            raw = yaml.safe_load((ws.trained / "config.yaml").read_text())
            raw["work_dir"] = str(d / "run")
            (d / "config.yaml").write_text(yaml.safe_dump(raw))

        return make

    resume_cases = [
        ("iteration is a string", {"iteration": "2"}),
        ("iteration is negative", {"iteration": -1}),
        ("iteration is a float", {"iteration": 1.5}),
        ("model is a list", {"model": [1, 2]}),
        ("model holds a string", {"model": first_tensor_replaced}),
        ("optimizer is a string", {"optimizer": "adam"}),
        ("best is a string", {"best": "0.5"}),
        ("rng is a list", {"rng": [1, 2, 3]}),
        ("scaler is a number", {"scaler": 3}),
    ]
    for label, entries in resume_cases:
        folder = c.next_folder()
        c.add(
            f"train --resume: {label}",
            types,
            ["train", str(folder / "config.yaml"), "--resume", "--no-progress"],
            setup=resumed(entries),
        )
    load_cases = [
        ("model is a string", {"model": "weights"}),
        ("model holds a string", {"model": first_tensor_replaced}),
        ("config.train is a list", {"config": lambda cfg: {**cfg, "train": [1, 2]}}),
        (
            "config.data.classes is a number",
            {"config": lambda cfg: {**cfg, "data": {**cfg["data"], "classes": 7}}},
        ),
        ("iteration is a dict", {"iteration": {"a": 1}}),
    ]
    for label, entries in load_cases:
        folder = c.next_folder()
        make_checkpoint = patched(entries, ws.checkpoint)
        c.add(
            f"predict: checkpoint {label}",
            types,
            ["predict", image, "--checkpoint", str(folder / "c.pt"), "--out", str(folder / "o")],
            setup=lambda d, m=make_checkpoint: m(d),
            # a checkpoint whose iteration alone is wrong still predicts (it is only shown)
            expect="ok" if label == "iteration is a dict" else "refused",
            writes=("o",) if label == "iteration is a dict" else (),
        )
    folder = c.next_folder()
    make_checkpoint = patched({"model": first_tensor_replaced}, ws.checkpoint)
    c.add(
        "eval: checkpoint model holds a string",
        types,
        ["eval", good, "--checkpoint", str(folder / "c.pt")],
        setup=lambda d: make_checkpoint(d),
    )

    # ================================================================ item 6

    # -- empty configs
    empty = "empty config"
    for label, text in [
        ("zero bytes", ""),
        ("only comments", "# nothing here\n# at all\n"),
        ("only a document marker", "---\n"),
        ("an empty mapping", "{}\n"),
        ("only whitespace", "   \n\n\t\n"),
        ("null", "null\n"),
    ]:
        c.config_text(f"empty config: {label}", empty, text)
    folder = c.next_folder()
    c.add(
        "empty config: the base file is empty",
        empty,
        ["train", str(folder / "config.yaml")],
        setup=lambda d: (
            (
                (d / "base.yaml").write_text(""),
                (d / "config.yaml").write_text(f"base: base.yaml\nwork_dir: {d / 'run'}\n"),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "data check: empty config",
        empty,
        ["data", "check", str(folder / "empty.yaml")],
        setup=lambda d: (d / "empty.yaml").write_text(""),
    )

    # -- duplicate keys
    dup = "duplicate keys"
    c.config_text("train: twice", dup, "train: {lr: 0.1}\ntrain: {lr: 0.2}\nwork_dir: RUN\n")
    c.config_text("train.lr twice", dup, "train:\n  lr: 0.1\n  lr: 0.2\nwork_dir: RUN\n")
    c.config_text('lr and "lr"', dup, 'train:\n  lr: 0.1\n  "lr": 0.2\nwork_dir: RUN\n')
    c.config_text(
        "data.options.num_samples twice (flow)",
        dup,
        "data: {options: {num_samples: 4, num_samples: 8}}\nwork_dir: RUN\n",
    )
    c.config_text("work_dir twice", dup, "work_dir: RUN\nwork_dir: RUN2\n")
    folder = c.next_folder()
    c.add(
        "duplicate key in the base file",
        dup,
        ["train", str(folder / "config.yaml")],
        setup=lambda d: (
            (
                (d / "base.yaml").write_text("eval: {flip: true, flip: false}\n"),
                (d / "config.yaml").write_text(f"base: base.yaml\nwork_dir: {d / 'run'}\n"),
            )
        ),
    )
    c.add(
        "--set data.options={a: 1, a: 2}",
        dup,
        ["train", good, "--set", "data.options={num_samples: 4, num_samples: 2}"],
    )

    # -- loss weights and parameters
    loss = "loss parameters"
    c.config_values(
        "ladder class_weights with a negative",
        loss,
        model__head={"name": "ladder", "channels": 32, "class_weights": [-1.0] + [1.0] * 10},
    )
    c.config_values(
        "ladder class_weights with NaN",
        loss,
        model__head={"name": "ladder", "channels": 32, "class_weights": [nan] + [1.0] * 10},
    )
    c.config_values(
        "ladder class_weights all zero",
        loss,
        model__head={"name": "ladder", "channels": 32, "class_weights": [0.0] * 11},
    )
    c.config_values(
        "ldn aux_weight negative", loss, model__head={"name": "ldn", "aux_weight": -0.4}
    )
    c.config_values(
        "ldn main_weight negative", loss, model__head={"name": "ldn", "main_weight": -1}
    )
    c.config_values("qgn gamma negative", loss, model__head={"name": "qgn", "gamma": -1.0})
    c.config_values("ldn aux_weight inf", loss, model__head={"name": "ldn", "aux_weight": inf})

    # -- label ids
    labels = "label ids"

    def label_dataset(make_label: Callable[[str, int], np.ndarray], fmt: str = "PNG") -> Callable:
        return lambda d: (
            (
                folder_data(d / "data", make_label, label_format=fmt),
                c.folder_dataset_config(d),
            )
        )

    def constant(value: int, dtype: Any = np.uint8, split: str | None = None) -> Callable:
        def make(s: str, i: int) -> np.ndarray:
            values = np.zeros((64, 64), dtype)
            values[:, 32:] = 1
            if split is None or s == split:
                values[:8, :8] = value
            return values

        return make

    label_cases = [
        ("a label id = class count (train)", constant(2, split="train"), "PNG"),
        ("a label id 254 (train)", constant(254, split="train"), "PNG"),
        ("16-bit label with id 300", constant(300, np.uint16), "PNG"),
        ("16-bit label with id 255 + 256", constant(511, np.uint16), "PNG"),
        ("32-bit label with id -1", constant(-1, np.int32), "TIFF"),
        ("32-bit label with id -255", constant(-255, np.int32), "TIFF"),
    ]
    for label, make_label, fmt in label_cases:
        folder = c.next_folder()
        c.add(
            f"train: {label}",
            labels,
            ["train", str(folder / "config.yaml"), "--no-progress"],
            setup=label_dataset(make_label, fmt),
        )
    for label, make_label, fmt in label_cases[2:5:2]:
        folder = c.next_folder()
        c.add(
            f"data check: {label}",
            labels,
            ["data", "check", str(folder / "config.yaml")],
            setup=label_dataset(make_label, fmt),
        )

    # -- all labels ignored
    ignored = "all ignored"

    def all_ignore(split: str | None, value: int = 255) -> Callable:
        def make(s: str, i: int) -> np.ndarray:
            if split is None or s == split:
                return np.full((64, 64), value, np.uint8)
            values = np.zeros((64, 64), np.uint8)
            values[:, 32:] = 1
            return values

        return make

    for label, make_label in [
        ("every training label is 255", all_ignore("train")),
        ("every validation label is 255", all_ignore("val")),
        ("every label is 255", all_ignore(None)),
    ]:
        folder = c.next_folder()
        c.add(
            f"train: {label}",
            ignored,
            ["train", str(folder / "config.yaml"), "--no-progress"],
            setup=label_dataset(make_label),
        )
    folder = c.next_folder()
    c.add(
        "train: data.ignore_index 0 and every label 0",
        ignored,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (
            (
                folder_data(d / "data", all_ignore(None, 0)),
                c.folder_dataset_config(d, **{"data.ignore_index": 0}),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "data check: every training label is 255",
        ignored,
        ["data", "check", str(folder / "config.yaml")],
        setup=label_dataset(all_ignore("train")),
    )

    # -- ~ and $VAR in paths
    paths = "path expansion"
    c.config_values(
        "data.root $UNSET/data",
        paths,
        data__dataset="folder",
        data__root=f"${UNSET_VARIABLE}/d",
        data__classes=["a", "b"],
        data__options={},
    )
    c.config_values(
        "data.root ${UNSET}",
        paths,
        data__dataset="folder",
        data__root=f"${{{UNSET_VARIABLE}}}",
        data__classes=["a", "b"],
        data__options={},
    )
    c.config_values("work_dir $UNSET/run", paths, work_dir=f"${UNSET_VARIABLE}/run")
    c.config_values(
        "pretrained $UNSET/w.pth",
        paths,
        model__backbone={"name": "resnet18", "pretrained": f"${UNSET_VARIABLE}/w.pth"},
    )
    c.add(
        "--set data.root=$UNSET",
        paths,
        ["train", good, "--set", f"data.root=${UNSET_VARIABLE}/x"],
    )
    c.config_values(
        "data.root ~/a folder that does not exist",
        paths,
        data__dataset="folder",
        data__root="~/leanseg-no-such-folder",
        data__classes=["a", "b"],
        data__options={},
    )
    folder = c.next_folder()
    c.add(
        "data.root $VAR/data, the variable set (works)",
        paths,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (
            (
                folder_data(d / "data"),
                c.folder_dataset_config(d, **{"data.root": f"${CASE_VARIABLE}/data"}),
            )
        ),
        expect="ok",
        writes=("run",),
        env={CASE_VARIABLE: str(folder)},
    )
    folder = c.next_folder()
    c.add(
        "work_dir ~/run with HOME set (works)",
        paths,
        ["train", str(folder / "config.yaml"), "--no-progress"],
        setup=lambda d: (d / "config.yaml").write_text(yaml.safe_dump(tiny_config("~/run"))),
        expect="ok",
        writes=("run",),
        env={"HOME": str(folder)},
    )

    # ================================================================ item 4: YAML sizes

    sizes = "yaml sizes"
    c.config_text(
        "config of 2 MiB (a long comment)", sizes, "#" + "x" * (2 << 20) + "\nwork_dir: RUN\n"
    )
    c.config_text(
        "config of 1 MiB + 1 byte", sizes, "work_dir: RUN\n#" + "x" * ((1 << 20) - 14) + "\n"
    )
    c.config_text(
        "billion laughs (9 levels of 9 aliases)", sizes, _alias_bomb() + "\nwork_dir: RUN\n"
    )
    c.config_text(
        "alias bomb inside data.options",
        sizes,
        "data:\n  options:\n    " + _alias_bomb(8).replace("\n", "\n    ") + "\nwork_dir: RUN\n",
    )
    c.config_text("recursive alias", sizes, "train: &a {x: *a}\nwork_dir: RUN\n")
    c.add(
        "--set with an alias bomb",
        sizes,
        ["train", good, "--set", "train.lr=" + "{" + _alias_bomb(7).replace("\n", ", ") + "}"],
    )
    folder = c.next_folder()
    c.add(
        "base file of 3 MiB",
        sizes,
        ["train", str(folder / "config.yaml")],
        setup=lambda d: (
            (
                (d / "base.yaml").write_text("#" + "y" * (3 << 20) + "\n"),
                (d / "config.yaml").write_text(f"base: base.yaml\nwork_dir: {d / 'run'}\n"),
            )
        ),
    )
    folder = c.next_folder()
    c.add(
        "eval of a run whose config.yaml is 2 MiB",
        sizes,
        ["eval", str(folder / "run")],
        setup=lambda d: (
            (
                shutil.copytree(ws.run, d / "run"),
                (d / "run" / "config.yaml").write_text(
                    (ws.run / "config.yaml").read_text() + "#" + "z" * (2 << 20) + "\n"
                ),
            )
        ),
    )
    text = yaml.safe_dump(tiny_config(Path("RUN")))
    crop = "  crop_size:\n  - 64\n  - 64\n"
    assert crop in text, text
    aliased = text.replace(
        crop, "  crop_size: &crop [64, 64]\n  crop_schedule: [{crop_size: *crop, until: 1}]\n"
    )
    c.config_text("a few aliases (works)", sizes, aliased, expect="ok", writes=("run",))
    return c.cases
