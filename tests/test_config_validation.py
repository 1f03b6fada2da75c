"""Value ranges checked at config load and on the command line (issue 12, defects 6 and 11).

Every bad value ends in one ``leanseg: error: ...`` line naming the key or flag and the value,
with exit status 2, before anything is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.config import ConfigError, DataConfig, load_config
from leanseg.data import DatasetError, build_dataset
from leanseg.data.datasets import ADE20K, holdout_names
from leanseg.data.transforms import ColorJitter, build_train_transform

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = {
    "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 2, "size": [64, 96], "seed": 0},
        "crop_size": [64, 64],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {"max_iters": 2, "eval_interval": 2, "checkpoint_interval": 2, "log_interval": 1},
    "eval": {"max_images": 1, "boundary_width": 2},
}

# (dotted key, bad value): each is of the right type but outside the key's range.
BAD_VALUES = [
    ("data.batch_size", 0),
    ("data.batch_size", -4),
    ("data.num_workers", -1),
    ("data.crop_size", [0, 64]),
    ("data.crop_size", [64, -1]),
    ("data.scale_range", [2.0, 0.5]),
    ("data.scale_range", [0.0, 1.0]),
    ("data.color_jitter", -0.1),
    ("data.color_jitter", 1.5),
    ("data.cat_max_ratio", 0.0),
    ("data.cat_max_ratio", 1.5),
    ("data.cat_max_ratio", ".nan"),
    ("data.ignore_index", -1),
    ("data.ignore_index", 256),
    ("data.train_split", ""),
    ("train.lr", -0.01),
    ("train.lr", 0),
    ("train.lr", ".nan"),
    ("train.momentum", 1.5),
    ("train.weight_decay", -1e-4),
    ("train.min_lr", -1.0),
    ("train.warmup_iters", -5),
    ("train.warmup_ratio", 2.0),
    ("train.max_iters", 0),
    ("train.eval_interval", 0),
    ("train.checkpoint_interval", 0),
    ("train.log_interval", 0),
    ("train.grad_clip", 0),
    ("train.bn_recompute_batches", -1),
    ("train.num_threads", 0),
    ("train.num_threads", -2),
    ("train.device", "gpu"),
    ("train.device", "cuda:"),
    ("eval.scales", []),
    ("eval.scales", [0]),
    ("eval.scales", [1.0, -0.5]),
    ("eval.boundary_width", -1),
    ("eval.batch_size", 0),
    ("eval.max_images", 0),
    ("work_dir", ""),
]


def write_config(tmp_path: Path, text: str | None = None, **overrides) -> Path:
    raw = json.loads(json.dumps(TINY))
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    raw["work_dir"] = str(tmp_path / "run")
    path = tmp_path / "config.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw))
    return path


def assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("leanseg: error: "), err
    assert "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_bad_value_is_a_config_error_naming_key_and_value(key, value):
    raw_value = yaml.safe_load(value) if isinstance(value, str) and value.startswith(".") else value
    with pytest.raises(ConfigError) as info:
        load_config(None, {key: raw_value})
    message = str(info.value)
    assert f"{key}: must be " in message
    # The value given, as read back (ints given for floats show as floats: 0 -> 0.0).
    assert ", got " in message, message
    shown = message.rsplit(", got ", 1)[1]
    if isinstance(raw_value, float) and math.isnan(raw_value):
        assert shown == "nan", message
    else:
        assert yaml.safe_load(shown) == raw_value, message


@pytest.mark.parametrize(
    ("key", "value"),
    [("data.batch_size", 0), ("train.eval_interval", 0), ("data.scale_range", [2.0, 0.5])],
)
def test_train_with_a_bad_value_writes_nothing(tmp_path, capsys, key, value):
    section, name = key.split(".")
    config = write_config(tmp_path, **{f"{section}__{name}": value})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = assert_one_line_error(capsys, f"{key}: must be ")
    assert err.endswith(f", got {value}"), err
    assert not (tmp_path / "run").exists()


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads ``1e-3`` as the string "1e-3".
    config = write_config(tmp_path, text="train: {lr: 1e-3, min_lr: 5E-7}\n")
    cfg = load_config(config, ["train.weight_decay=1e-5"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.min_lr == pytest.approx(5e-7)
    assert cfg.train.weight_decay == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


def test_non_utf8_config_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("# réglages\ntrain: {lr: 0.01}\n".encode("latin-1"))
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys, str(config), "UTF-8")


def test_yaml_syntax_error_is_one_line(tmp_path, capsys):
    config = write_config(tmp_path, text="train:\n  lr: [0.01\n  momentum: 0.9\n")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys, str(config), "line")


def test_folder_given_as_config(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert_one_line_error(capsys, f"{tmp_path} is a folder, not a config file")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["eval", "CONFIG", "--checkpoint", "x.pt", "--scales", "0"], ["--scales", "'0'"]),
        (["eval", "CONFIG", "--checkpoint", "x.pt", "--scales", "nan"], ["--scales"]),
        (["eval", "CONFIG", "--checkpoint", "x.pt", "--max-images", "0"], ["--max-images"]),
        (["eval", "CONFIG", "--checkpoint", "x.pt", "--device", "gpu"], ["--device", "gpu"]),
        (["predict", "a.png", "--checkpoint", "x.pt", "--out", "o", "--scales", "0"], ["--scales"]),
        (
            ["predict", "a.png", "--checkpoint", "x.pt", "--out", "o", "--max-megapixels", "0"],
            ["--max-megapixels", "'0'"],
        ),
        (
            ["predict", "a.png", "--checkpoint", "x.pt", "--out", "o", "--overlap", "-1"],
            ["--overlap", "'-1'"],
        ),
        (
            ["predict", "a.png", "--checkpoint", "x.pt", "--out", "o", "--alpha", "2"],
            ["--alpha"],
        ),
        (["bench", "CONFIG", "--size", "64x64", "--batch", "0"], ["--batch", "'0'"]),
        (["bench", "CONFIG", "--size", "64x64", "--repeats", "0"], ["--repeats"]),
        (["bench", "CONFIG", "--size", "64x64", "--threads", "-1"], ["--threads"]),
        (["bench", "CONFIG", "--size", "64x64", "--batch", "two"], ["--batch", "'two'"]),
        (["demo", "--iters", "0"], ["--iters"]),
        (["train"], ["config"]),
    ],
)
def test_bad_flag_values_are_one_line_errors(tmp_path, capsys, argv, needles):
    config = write_config(tmp_path)
    argv = [str(config) if arg == "CONFIG" else arg for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert_one_line_error(capsys, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", ["16x16", "31x64", "32x32"])
def test_bench_size_smaller_than_the_output_stride(tmp_path, capsys, size):
    config = write_config(tmp_path)
    args = ["bench", str(config), "--size", size, "--warmup", "0", "--repeats", "1"]
    assert main(args) == 2
    assert_one_line_error(capsys, f"--size {size}", "output stride is 32")


def test_train_on_cuda_without_a_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = write_config(tmp_path, train__device="cuda")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys, "train.device", "CUDA is not available")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- defect 11


def test_ldn_pyramid_loss_weighs_main_1_and_pyramid_0_4():
    from leanseg.models import build_model

    def head(aux_loss):
        cfg = load_config(
            None,
            {
                "model.backbone": {"name": "resnet18"},
                "model.head": {"name": "ldn", "aux_loss": aux_loss},
            },
        )
        return build_model(cfg).head

    pyramid, ladder = head("pyramid"), head("ladder")
    assert (pyramid.main_weight, pyramid.aux_weight) == (1.0, 0.4)  # thesis ch. 5
    assert (ladder.main_weight, ladder.aux_weight) == (0.6, 0.4)  # thesis 4.6.1


def test_colour_jitter_is_off_by_default_and_stays_an_option():
    assert DataConfig().color_jitter == 0.0
    assert load_config(None).data.color_jitter == 0.0
    default = build_train_transform(DataConfig(crop_size=(16, 16)))
    assert not any(isinstance(t, ColorJitter) for t in default.transforms)
    jittered = build_train_transform(DataConfig(crop_size=(16, 16), color_jitter=0.2))
    assert any(isinstance(t, ColorJitter) for t in jittered.transforms)


def _ade20k_tree(root: Path, train: int, val: int) -> Path:
    base = root / "ADEChallengeData2016"
    for folder, count in (("training", train), ("validation", val)):
        (base / "images" / folder).mkdir(parents=True)
        (base / "annotations" / folder).mkdir(parents=True)
        for i in range(count):
            stem = f"ADE_{folder[:5]}_{i:08d}"
            Image.new("RGB", (8, 6), (i, 0, 0)).save(base / "images" / folder / f"{stem}.jpg")
            Image.new("L", (8, 6), 1).save(base / "annotations" / folder / f"{stem}.png")
    return root


def test_ade20k_holdout_splits_the_training_set(tmp_path):
    root = _ade20k_tree(tmp_path, train=10, val=3)
    full = {f.name for f in ADE20K(root, "train").files}
    train = {f.name for f in ADE20K(root, "train", holdout=4).files}
    held = {f.name for f in ADE20K(root, "holdout", holdout=4).files}
    assert len(full) == 10 and len(train) == 6 and len(held) == 4
    assert train.isdisjoint(held) and train | held == full
    assert held == set(holdout_names(sorted(full), 4))  # deterministic, from names alone
    assert held != {f.name for f in ADE20K(root, "holdout", holdout=4, holdout_seed=1).files}
    assert len(ADE20K(root, "val", holdout=4).files) == 3  # the official val set is untouched
    with pytest.raises(DatasetError, match="split 'holdout' needs the option holdout"):
        ADE20K(root, "holdout")
    with pytest.raises(DatasetError, match="holdout=10 leaves no training images"):
        ADE20K(root, "train", holdout=10)


def test_holdout_names_do_not_move_when_images_are_added():
    names = [f"img_{i:05d}" for i in range(1000)]
    first = holdout_names(names, 200)
    assert len(first) == 200 and first == sorted(first)
    grown = holdout_names([*names, *(f"new_{i}" for i in range(10))], 200)
    assert len(set(first) & set(grown)) >= 190


def test_sandf_ablation_configs_use_the_16k_4k_split(tmp_path):
    ablations = sorted((CONFIGS / "sandf").glob("sandf_hrnet32_ablation_*_ade20k.yaml"))
    assert len(ablations) == 9
    root = _ade20k_tree(tmp_path, train=6, val=2)
    for path in ablations:
        cfg = load_config(path, [f"data.root={root}", "data.options.holdout=2"])
        assert cfg.data.val_split == "holdout"
        assert load_config(path).data.options == {"holdout": 4000}
        train = build_dataset(cfg.data, cfg.data.train_split, train=False)
        val = build_dataset(cfg.data, cfg.data.val_split, train=False)
        assert (len(train), len(val)) == (4, 2)
        assert {f.name for f in train.files}.isdisjoint(f.name for f in val.files)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 0}, r"batch and size must be positive, got batch 0, size \(64, 64\)"),
        ({"size": (0, 64)}, r"batch and size must be positive, got batch 1, size \(0, 64\)"),
        ({"warmup": -1}, r"need warmup >= 0 and repeats >= 1, got -1 and 1"),
    ],
)
def test_benchmark_model_checks_its_arguments(kwargs, message):
    from leanseg.profiling.benchmark import benchmark_model

    args = {"size": (64, 64), "batch": 1, "warmup": 0, "repeats": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        benchmark_model(torch.nn.Conv2d(3, 2, 1), **args)


@pytest.mark.parametrize("argv", [[], ["data"], ["quadtree"]])
def test_missing_command_is_a_one_line_error_after_the_help(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "usage:" in captured.out
    err = captured.err.strip()
    assert err.startswith("leanseg: error: ") and "\n" not in err
    assert "choose a command" in err


def test_dataset_option_of_the_wrong_type_names_the_key(tmp_path, capsys):
    config = write_config(tmp_path, data__options={"num_samples": "many"})
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys, "data.options.num_samples", "many")
    assert not (tmp_path / "run").exists()


def test_crop_too_small_for_a_batch_of_one_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path, data__crop_size=[16, 16], data__batch_size=1)
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys, "data.crop_size", "output stride is 32")
    assert not (tmp_path / "run").exists()


def test_a_width_torch_refuses_is_a_config_error_naming_the_key():
    from leanseg.config import ModelConfig
    from leanseg.models import build_segmentor

    spec = ModelConfig(head={"name": "ladder", "channels": -1})
    with pytest.raises(ConfigError, match=r"model.head \(ladder\)"):
        build_segmentor(spec, num_classes=3)
