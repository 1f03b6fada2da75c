"""Scale-selection models in the engine: extra inputs from samples, configs, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from leanseg.config import ConfigError, ModelConfig, load_config
from leanseg.data import build_dataset
from leanseg.data.base import DatasetError
from leanseg.data.synthetic import BASELINE, CLASSES, SyntheticStreetScenes, generate_scene
from leanseg.data.synthetic.apparent_size import disparity_by_class
from leanseg.data.transforms import ToTensor
from leanseg.evaluation import evaluator
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.inference import speed
from leanseg.inference.model_inputs import follow_image
from leanseg.inference.predictor import predict_scores
from leanseg.models import (
    PYRAMID_MODELS,
    build_model,
    run_config_from_dict,
    validate_model_config,
    without_pretrained,
)
from leanseg.nn.scale_selection import ScaleSelectionSegmentor
from leanseg.nn.segmentor import ExtraInputs, Segmentor, extra_inputs
from leanseg.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "scale_selection"


def tiny_run(tmp_path: Path, head: dict, **data) -> dict:
    return {
        "model": {"backbone": {"name": "resnet18"}, "head": head},
        "data": {
            "dataset": "synthetic",
            "options": {"num_samples": 4, "size": [64, 96], "seed": 0},
            "crop_size": [64, 96],
            "scale_range": [0.75, 1.25],
            "batch_size": 2,
            "num_workers": 0,
            **data,
        },
        "train": {
            "optimizer": "adam",
            "lr": 0.002,
            "max_iters": 2,
            "eval_interval": 2,
            "checkpoint_interval": 2,
            "log_interval": 1,
            "seed": 0,
            "num_threads": 1,
        },
        "eval": {"max_images": 2, "boundary_width": 2, "scales": [1.0, 0.75], "flip": True},
        "work_dir": str(tmp_path / "run"),
    }


TINY_HEAD = {"name": "scale_invariant", "hidden_channels": 8, "num_levels": 3}


# ------------------------------------------------------------------ samples


def test_synthetic_samples_carry_the_rig_baseline_and_scenes_are_unchanged():
    dataset = SyntheticStreetScenes("val", num_samples=2, size=(32, 48))
    raw = dataset.load_raw(1)
    assert raw["stereo_baseline"] == BASELINE
    # The rendering itself is untouched: the scene function gives no baseline, same arrays.
    scene = generate_scene(dataset.scene_seed(1), (32, 48))
    assert "stereo_baseline" not in scene
    for key in ("image", "label", "instance", "disparity"):
        assert np.array_equal(scene[key], raw[key])
    tensor = ToTensor((0.5,) * 3, (0.5,) * 3)(raw)["stereo_baseline"]
    assert tensor.dtype == torch.float32 and tensor.shape == ()
    assert float(tensor) == pytest.approx(0.22)


def test_every_synthetic_class_appears_over_a_wide_range_of_sizes():
    # Apparent size of the scenes' objects is proportional to disparity (camera.py); over 50
    # scenes every class but sky (unknown disparity) spans at least 3.5x between its 5th and
    # 95th percentile, the things (cars, pedestrians, cyclists) at least 4x.
    table = disparity_by_class(50, (48, 96), percentiles=(5.0, 50.0, 95.0))
    assert table["Sky"].pixels == 0
    for name in CLASSES[1:]:
        assert table[name].spread >= 3.5, (name, table[name])
    for name in ("Car", "Pedestrian", "Bicyclist"):
        assert table[name].spread >= 4.0 and table[name].scenes >= 30, (name, table[name])


# ------------------------------------------------------------------ capability


def test_the_capability_is_declared_by_depth_selection_only():
    cfg = ModelConfig(backbone={"name": "resnet18"}, head=dict(TINY_HEAD))
    from leanseg.models import build_segmentor

    depth = build_segmentor(cfg, num_classes=11)
    assert isinstance(depth, ExtraInputs)
    assert extra_inputs(depth) == ("disparity", "stereo_baseline")
    single = build_segmentor(
        ModelConfig(backbone={"name": "resnet18"}, head={"name": "single5", "hidden_channels": 8}),
        num_classes=11,
    )
    assert extra_inputs(single) == ()
    fixed = build_segmentor(
        ModelConfig(
            backbone={"name": "resnet18"}, head={"name": "fixed_scales", "hidden_channels": 8}
        ),
        num_classes=11,
    )
    assert extra_inputs(fixed) == ()  # a pyramid, but levels chosen without disparity
    plain = build_segmentor(ModelConfig(), num_classes=11)
    assert isinstance(plain, Segmentor) and not isinstance(plain, ExtraInputs)
    assert extra_inputs(plain) == ()


# ------------------------------------------------------------------ test-time transforms


def test_disparity_follows_a_resized_and_mirrored_image():
    disparity = torch.tensor([[[0.0, 2.0, 4.0, 8.0]]])  # (1, 1, 4)
    baseline = torch.tensor([0.2])
    out = follow_image({"disparity": disparity, "stereo_baseline": baseline}, (1, 8))
    # Nearest neighbour (unknown zeros stay zeros), values doubled with the width.
    assert out["disparity"].tolist() == [[[0.0, 0.0, 4.0, 4.0, 8.0, 8.0, 16.0, 16.0]]]
    assert out["stereo_baseline"] is baseline
    mirrored = follow_image({"disparity": disparity}, (1, 4), mirrored=True)
    assert mirrored["disparity"].tolist() == [[[8.0, 4.0, 2.0, 0.0]]]
    with pytest.raises(ValueError, match="'depth_map'"):
        follow_image({"depth_map": disparity}, (1, 8))


class DisparityEcho(nn.Module):
    """Class 0 where the first image channel equals disparity / width (per pixel), else 1.

    The image carries disparity / width, which is what a correctly resized and mirrored
    disparity map still equals; a disparity that did not follow the image would not match.
    """

    extra_inputs = ("disparity", "stereo_baseline")

    def forward(self, images: Tensor, disparity: Tensor, stereo_baseline: Tensor) -> Tensor:
        assert disparity.shape == images[:, 0].shape and stereo_baseline.shape == (1,)
        match = (images[:, 0] - disparity / images.shape[-1]).abs() < 0.02
        return torch.stack([match.float(), 1 - match.float()], dim=1) * 10


def test_multi_scale_flip_testing_resizes_and_mirrors_disparity_with_the_image():
    width = 96
    columns = torch.arange(width) // 24  # four stripes, 0..3
    relative = 0.1 + 0.2 * columns.float()  # disparity / width per stripe
    disparity = (relative * width).expand(1, 48, width).clone()
    images = torch.stack([relative.expand(48, width)] * 3)[None]
    inputs = {"disparity": disparity, "stereo_baseline": torch.tensor([0.22])}
    probabilities = predict_scores(
        DisparityEcho(), images, scales=(1.0, 0.5, 1.5), flip=True, inputs=inputs
    )
    # Every pass must agree, not just most: an unmirrored disparity fails the three flipped
    # passes, which leaves a tie (0.5) that argmax would still call class 0.
    agree = (probabilities[:, 0] > 0.9).float().mean()
    assert agree > 0.9  # all but stripe borders, where the bilinear image blends stripes
    # Disparity left unmirrored would disagree on the flipped passes.
    unflipped = DisparityEcho()(images.flip(-1), disparity, inputs["stereo_baseline"])
    assert (unflipped.argmax(1) == 0).float().mean() < 0.6


def test_empty_inputs_change_nothing():
    model = nn.Conv2d(3, 4, 3, padding=1)
    images = torch.randn(2, 3, 20, 28)
    expected = predict_scores(model, images, scales=(1.0, 0.75), flip=True)
    got = predict_scores(model, images, scales=(1.0, 0.75), flip=True, inputs={})
    assert torch.equal(expected, got)


class PixelwiseDisparity(nn.Module):
    """Per-pixel scores from the image, the disparity and the baseline (no context)."""

    extra_inputs = ("disparity", "stereo_baseline")

    def forward(self, images: Tensor, disparity: Tensor, stereo_baseline: Tensor) -> Tensor:
        depth = stereo_baseline[:, None, None] / disparity  # (B, H, W)
        return torch.stack([images[:, 0] * depth, images[:, 1] - depth], dim=1)


def test_tiles_get_their_crop_of_the_inputs():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 96, 160)
    inputs = {
        "disparity": torch.rand(2, 96, 160) * 40 + 1,
        "stereo_baseline": torch.tensor([0.22, 0.54]),
    }
    model = PixelwiseDisparity()
    whole = predict_scores(model, images, inputs=inputs, scales=(1.0, 0.5), flip=True)
    tiled = predict_scores(
        model, images, inputs=inputs, scales=(1.0, 0.5), flip=True, tile=(64, 64), overlap=32
    )
    assert torch.allclose(whole, tiled, atol=1e-6)
    # An input whose crop leanseg does not know is refused, by name.
    with pytest.raises(ValueError, match="do not know how model input 'focal'"):
        predict_scores(model, images, inputs={**inputs, "focal": torch.ones(2)}, tile=(64, 64))


# ------------------------------------------------------------------ registry and configs


def test_pyramid_models_are_built_from_config_with_checked_options():
    with pytest.raises(ConfigError, match="model.head.pretrained.*valid keys"):
        validate_model_config(
            ModelConfig(backbone={"name": "vgg16"}, head={"name": "single5", "pretrained": "x"})
        )
    with pytest.raises(ConfigError, match="model.context: must be null.*'fixed_scales'"):
        validate_model_config(
            ModelConfig(
                backbone={"name": "resnet18"},
                context={"name": "spp"},
                head={"name": "fixed_scales"},
            )
        )
    with pytest.raises(ConfigError, match="reference_scales"):
        validate_model_config(
            ModelConfig(
                backbone={"name": "resnet18"},
                head={"name": "scale_invariant", "reference_scales": "far"},
            )
        )
    assert sorted(PYRAMID_MODELS) == ["fixed_scales", "scale_invariant", "single3_5", "single5"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_scale_selection_configs_load_and_describe_table_3_1(path):
    raw = load_config(path)
    cfg = run_config_from_dict(raw.to_dict(), source=str(path))
    assert cfg.model.head["name"] in PYRAMID_MODELS and cfg.model.context is None
    if cfg.data.dataset == "cityscapes":  # the paper's settings (thesis 3.2-3.4)
        head = cfg.model.head
        assert cfg.model.backbone["name"] == "vgg16" and head["hidden_channels"] == 1024
        assert head["alpha"] == 1.3 and head["num_levels"] == 8
        assert list(head["reference_scales"]) == [1.0, 4.0, 7.0]
        assert head["receptive_field"] == 185.0


def test_the_four_synthetic_rows_differ_only_in_the_head():
    rows = {p.name: load_config(p) for p in sorted(CONFIGS.glob("*_synthetic.yaml"))}
    assert len(rows) == 4
    shared = [
        {**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "head": None}, "work_dir": None}
        for cfg in rows.values()
    ]
    shapes = {json.dumps(rest) for rest in shared}
    assert len(shapes) == 1  # same backbone and context, data, training and evaluation
    assert len({cfg.model.head["name"] for cfg in rows.values()}) == 4
    cfg = without_pretrained(rows["scale_invariant_lite0_synthetic.yaml"])
    model = build_model(cfg)
    assert isinstance(model, ScaleSelectionSegmentor) and model.extra_inputs


# ------------------------------------------------------------------ train and evaluate


def test_scale_invariant_trains_and_evaluates_through_the_trainer(tmp_path, monkeypatch):
    cfg = run_config_from_dict(tiny_run(tmp_path, dict(TINY_HEAD)))
    trainer = Trainer.from_config(cfg, show_progress=False)
    seen: list[tuple[tuple[int, ...], tuple[int, ...], bool]] = []
    forward = ScaleSelectionSegmentor.forward
    checking = []  # set while the inference options are checked on an example input

    def spy(self, images, disparity=None, stereo_baseline=None):
        if not checking:
            seen.append((tuple(images.shape), tuple(disparity.shape), self.training))
        return forward(self, images, disparity, stereo_baseline)

    def prepare(*args, **kwargs):
        checking.append(True)
        try:
            return speed.prepare_model(*args, **kwargs)
        finally:
            checking.clear()

    monkeypatch.setattr(ScaleSelectionSegmentor, "forward", spy)
    monkeypatch.setattr(evaluator, "prepare_model", prepare)
    result = trainer.train()
    assert result.iteration == 2 and result.final_scores is not None
    lines = (Path(cfg.work_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    # Training saw crops with their disparity; evaluation every scale and flip with its own.
    assert {shape for shape, _, training in seen if training} == {(2, 3, 64, 96)}
    evaluated = [(images, disparity) for images, disparity, training in seen if not training]
    assert len(evaluated) == 2 * 2 * 2  # 2 images x 2 scales x 2 flips
    assert all(images[-2:] == disparity[-2:] for images, disparity in evaluated)
    assert {images[-2:] for images, _ in evaluated} == {(64, 96), (48, 72)}


def _write_camvid(root: Path) -> None:
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / split / f"{i}.png")
            Image.fromarray(np.ones((32, 48), np.uint8)).save(root / f"{split}annot" / f"{i}.png")


def test_depth_model_on_a_dataset_without_disparity_names_the_dataset_and_key(tmp_path):
    _write_camvid(tmp_path / "camvid")
    raw = tiny_run(tmp_path, dict(TINY_HEAD), dataset="camvid", root=str(tmp_path / "camvid"))
    raw["data"].pop("options")
    cfg = run_config_from_dict(raw)
    with pytest.raises(DatasetError, match="needs 'disparity'.*data.dataset 'camvid'"):
        Trainer.from_config(cfg, show_progress=False)
    assert not (tmp_path / "run").exists()  # nothing written
    # The Single rows need nothing but the image and train on it.
    raw["model"]["head"] = {"name": "single3_5", "hidden_channels": 8}
    raw["train"]["max_iters"] = 1
    Trainer.from_config(run_config_from_dict(raw), show_progress=False).train()


def test_evaluating_without_disparity_names_the_dataset_and_key(tmp_path):
    cfg = run_config_from_dict(tiny_run(tmp_path, dict(TINY_HEAD)))
    model = build_model(cfg)
    dataset = build_dataset(cfg.data, "val", train=False)

    class WithoutDisparity(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> dict:
            return {k: v for k, v in dataset[index].items() if k != "disparity"}

    with pytest.raises(DatasetError, match="'disparity'.*WithoutDisparity"):
        evaluate(
            model,
            WithoutDisparity(),
            default_evaluators(model, num_classes=11),
            eval_cfg=cfg.eval,
            device=torch.device("cpu"),
        )
