"""The fast-training options: frozen backbone parts, progressive crops, cached and prefetched data.

Each option either leaves the batches exactly as they were (cache, prefetch, the fused
scale-and-crop) or changes one documented thing (frozen parameters get no gradient; the crop size
follows ``data.crop_schedule``); these tests check that and nothing about speed, which
``benchmarks/training/fast_training.py`` measures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from leanseg.config import ConfigError, CropStage, load_config
from leanseg.data.cache import CacheTooLarge, InMemorySamples
from leanseg.data.transforms import (
    Compose,
    RandomCrop,
    RandomScale,
    RandomScaleCrop,
    resize_sample,
    sample_generator,
    scale_factor_override,
)
from leanseg.models import create_model, load_run_config
from leanseg.training.freezing import FrozenBatchNorm2d, freeze_backbone
from leanseg.training.prefetch import Prefetcher
from leanseg.training.sampling import CropSchedule, ResumableSampler
from leanseg.training.trainer import Trainer

CLASSES = ["sky", "road", "car"]


def folder_dataset(root: Path, count: int = 6, size: tuple[int, int] = (40, 56)) -> Path:
    """``count`` random images with random 3-class labels in the folder layout."""
    rng = np.random.default_rng(0)
    for sub in ("images/train", "labels/train", "images/val", "labels/val"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", count), ("val", 2)):
        for i in range(n):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            label = rng.integers(0, 3, size, dtype=np.uint8)
            Image.fromarray(image).save(root / f"images/{split}/{i:03d}.png")
            Image.fromarray(label).save(root / f"labels/{split}/{i:03d}.png")
    return root


def tiny_config(root: Path, work_dir: Path, **data: object):
    overrides = {
        "model.backbone": {"name": "resnet18"},
        "model.head": {"name": "bilinear"},
        "data.dataset": "folder",
        "data.root": str(root),
        "data.classes": CLASSES,
        "data.crop_size": [32, 48],
        "data.scale_range": [0.75, 1.5],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "train.optimizer": "adam",
        "train.lr": 1e-3,
        "train.max_iters": 4,
        "train.eval_interval": 100,
        "train.checkpoint_interval": 100,
        "train.num_threads": 1,
        "eval.max_images": 1,
        "work_dir": str(work_dir),
    }
    overrides.update({f"data.{key}": value for key, value in data.items()})
    return load_run_config(None, overrides)


def first_batches(trainer: Trainer, count: int) -> list[dict]:
    batches = trainer._batches()
    taken = [next(batches) for _ in range(count)]
    if isinstance(batches, Prefetcher):
        batches.close()
    return taken


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["label"], b["label"])


# ---------------------------------------------------------------------- frozen backbone parts


def test_frozen_stage_gets_no_gradient_and_the_rest_does():
    torch.manual_seed(0)
    model = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    report = freeze_backbone(model.backbone, until_stride=8)
    images = torch.randn(2, 3, 64, 64)
    loss = sum(model.train().losses(images, {"label": torch.randint(0, 3, (2, 64, 64))}).values())
    loss.backward()
    frozen_modules = ("conv1", "bn1", "layer1", "layer2")
    for name, parameter in model.backbone.named_parameters():
        if name.split(".")[0] in frozen_modules:
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.requires_grad and parameter.grad is not None, name
    assert report.frozen_parameters == sum(
        p.numel() for n, p in model.backbone.named_parameters() if n.split(".")[0] in frozen_modules
    )
    assert all(p.grad is not None for p in model.head.parameters())


def test_frozen_batchnorm_keeps_its_statistics_in_training():
    torch.manual_seed(0)
    model = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    report = freeze_backbone(model.backbone, batchnorm=True)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    assert report.frozen_bn_layers == len(bns)
    model(torch.randn(2, 3, 64, 64))
    after = model.backbone.state_dict()
    assert after.keys() == before.keys()  # checkpoints load into a model built without it
    for key in before:
        if "running" in key:
            assert torch.equal(before[key], after[key]), key
    # Batch statistics would make the output depend on the rest of the batch; frozen BN does not.
    model.head.eval()
    images = torch.randn(3, 3, 64, 64)
    assert torch.allclose(model(images)[:1], model(images[:1]), atol=1e-5)


def test_freezing_at_a_stride_the_backbone_lacks_names_its_strides():
    model = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    with pytest.raises(ValueError, match=r"freeze_backbone_until: 3 .*strides \[4, 8, 16, 32\]"):
        freeze_backbone(model.backbone, until_stride=3)


# ---------------------------------------------------------------------- progressive crops


def test_crop_schedule_changes_the_crop_at_the_configured_iteration():
    sampler = ResumableSampler(5, seed=0)
    stages = [CropStage((16, 24), until=2), CropStage((24, 32), until=3)]
    keys = CropSchedule(sampler, stages, start_iteration=0, batch_size=2)
    crops = [key[2] for _, key in zip(range(10), keys, strict=False)]
    assert crops == [(16, 24)] * 4 + [(24, 32)] * 2 + [None] * 4
    # Resumed at iteration 2, it draws the keys of the uninterrupted run from there on.
    resumed = CropSchedule(ResumableSampler(5, 0, start=4), stages, start_iteration=2, batch_size=2)
    full = [key for _, key in zip(range(10), keys, strict=False)]
    assert [key for _, key in zip(range(6), resumed, strict=False)] == full[4:]


def test_a_stage_scale_rides_with_its_crop_and_ends_with_it():
    stages = [CropStage((16, 24), until=1, scale=0.5), CropStage((24, 32), until=2)]
    keys = CropSchedule(ResumableSampler(5, seed=0), stages, start_iteration=0, batch_size=2)
    settings = [key[2:] for _, key in zip(range(6), keys, strict=False)]
    assert settings == [((16, 24), 0.5)] * 2 + [((24, 32), 1.0)] * 2 + [(None, None)] * 2


@pytest.mark.parametrize("fused", [True, False])
def test_a_stage_scale_shows_the_image_smaller_with_the_same_draws(fused):
    rng = np.random.default_rng(0)
    sample = {
        "image": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        "label": rng.integers(0, 5, (32, 48), dtype=np.uint8),
    }
    if fused:
        transform = RandomScaleCrop(1.0, 1.0, (16, 24), mean_colour=(0, 0, 0))
    else:
        transform = Compose([RandomScale(1.0, 1.0), RandomCrop((16, 24), mean_colour=(0, 0, 0))])
    with scale_factor_override(0.5):
        half = transform(sample)
    # Scale 1 x 0.5: the whole image, shrunk to the crop; nothing cut off, nothing padded.
    expected = resize_sample(sample, 16, 24)
    assert np.array_equal(half["label"], expected["label"])
    assert np.abs(half["image"].astype(int) - expected["image"].astype(int)).max() <= 2
    # Without the override the same draws cut a window of the image at its own size.
    window = transform(sample)["label"]
    assert any(
        np.array_equal(window, sample["label"][top : top + 16, left : left + 24])
        for top in range(17)
        for left in range(25)
    )


def test_trainer_batches_follow_the_crop_schedule(tmp_path):
    root = folder_dataset(tmp_path / "data")
    schedule = [{"crop_size": [24, 32], "until": 2}]
    cfg = tiny_config(root, tmp_path / "run", crop_schedule=schedule)
    batches = first_batches(Trainer.from_config(cfg, show_progress=False), 4)
    assert [tuple(b["image"].shape[-2:]) for b in batches] == [(24, 32)] * 2 + [(32, 48)] * 2


def test_crop_schedule_is_validated():
    with pytest.raises(ConfigError, match="data.crop_schedule"):
        load_config(None, {"data.crop_schedule": [{"crop_size": [0, 8], "until": 5}]})
    with pytest.raises(ConfigError, match="data.crop_schedule"):
        load_config(
            None,
            {
                "data.crop_schedule": [
                    {"crop_size": [8, 8], "until": 5},
                    {"crop_size": [9, 9], "until": 5},
                ]
            },
        )
    for scale, message in [(0, r"0 < s <= 1"), (1.5, r"0 < s <= 1"), (float("nan"), "finite")]:
        with pytest.raises(ConfigError, match=rf"data.crop_schedule.*{message}"):
            load_config(
                None, {"data.crop_schedule": [{"crop_size": [8, 8], "until": 5, "scale": scale}]}
            )


# ---------------------------------------------------------------------- data in memory, prefetch


def test_in_memory_data_gives_the_same_batches_as_the_disk(tmp_path):
    root = folder_dataset(tmp_path / "data")
    from_disk = Trainer.from_config(tiny_config(root, tmp_path / "a"), show_progress=False)
    cached = Trainer.from_config(tiny_config(root, tmp_path / "b", cache=True), show_progress=False)
    assert isinstance(cached.train_set, InMemorySamples)
    # 6 batches of 2 from 6 images: the second epoch is served from memory.
    assert_same_batches(first_batches(from_disk, 6), first_batches(cached, 6))
    assert cached.train_set.cached == 6


def test_cached_arrays_are_read_only(tmp_path):
    root = folder_dataset(tmp_path / "data", count=2)
    cfg = tiny_config(root, tmp_path / "run", cache=True)
    cached = Trainer.from_config(cfg, show_progress=False).train_set
    raw = cached.load_raw(0)
    with pytest.raises(ValueError, match="read-only"):
        raw["image"][0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        raw["label"][0, 0] = 1
    again = cached.load_raw(0)  # served from memory: the same read-only arrays
    assert again["image"] is raw["image"] and again["label"] is raw["label"]


def test_cache_larger_than_memory_is_refused(tmp_path):
    root = folder_dataset(tmp_path / "data", count=2)
    cfg = tiny_config(root, tmp_path / "run")
    dataset = Trainer.from_config(cfg, show_progress=False).train_set
    with pytest.raises(CacheTooLarge, match="data.cache: the 2 decoded training samples"):
        InMemorySamples(dataset, available_bytes=1000)[0]


def test_prefetched_batches_equal_the_plain_ones_and_leave_the_global_rng_alone(tmp_path):
    root = folder_dataset(tmp_path / "data")
    plain = Trainer.from_config(tiny_config(root, tmp_path / "a"), show_progress=False)
    prefetched = Trainer.from_config(
        tiny_config(root, tmp_path / "b", prefetch=True), show_progress=False
    )
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    batches = first_batches(prefetched, 4)
    assert torch.equal(torch.rand(3), expected_draw)
    assert_same_batches(first_batches(plain, 4), batches)


def test_prefetcher_hands_on_errors_and_stops():
    def source():
        yield 1
        raise OSError("disk gone")

    prefetcher = Prefetcher(source())
    assert next(prefetcher) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(prefetcher)
    endless = Prefetcher(iter(range(10**9)))
    assert next(endless) == 0
    endless.close()
    assert not endless._thread.is_alive()


# ---------------------------------------------------------------------- fused scale and crop


@pytest.mark.parametrize("seed", range(12))
def test_fused_scale_crop_equals_scale_then_crop(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(20, 60, 2)
    sample = {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "label": rng.integers(0, 5, (height, width), dtype=np.uint8),
        "disparity": rng.random((height, width), dtype=np.float32),
    }
    crop = (24, 28)
    two_steps = Compose([RandomScale(0.5, 2.0), RandomCrop(crop, (1, 2, 3))])
    fused = RandomScaleCrop(0.5, 2.0, crop, (1, 2, 3))
    with sample_generator(torch.Generator().manual_seed(seed)):
        expected = two_steps(sample)
    with sample_generator(torch.Generator().manual_seed(seed)):
        got = fused(sample)
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_array_equal(got["disparity"], expected["disparity"])
    # PIL's box resize rounds its fixed-point weights differently: at most 2 of 255 levels.
    difference = np.abs(got["image"].astype(int) - expected["image"].astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.5


def test_folded_frozen_batchnorm_computes_the_same_and_trains_the_convolution():
    torch.manual_seed(0)
    model = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    for module in model.backbone.modules():  # statistics unlike the defaults
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    reference = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    reference.load_state_dict(model.state_dict())
    reference.eval()
    report = freeze_backbone(model.backbone, batchnorm=True, example=torch.zeros(1, 3, 64, 64))
    # ResNet-18: stem, 2 per basic block, 3 downsampling paths; every one follows a convolution.
    assert report.frozen_bn_layers == report.folded_bn_layers == 1 + 16 + 3
    assert model.state_dict().keys() == reference.state_dict().keys()
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    assert torch.allclose(model(images), reference(images), atol=1e-4)
    model.train()
    loss = sum(model.losses(images, {"label": torch.randint(0, 3, (2, 64, 64))}).values())
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert model.backbone.bn1.weight.grad is None


# ---------------------------------------------------------------------- train + val


def test_joined_splits_read_every_file_of_each(tmp_path):
    root = folder_dataset(tmp_path / "data")
    cfg = tiny_config(root, tmp_path / "run")
    from leanseg.data import build_dataset

    joined = build_dataset(cfg.data, "train+val", train=True)
    train = build_dataset(cfg.data, "train", train=True)
    val = build_dataset(cfg.data, "val", train=False)
    assert [f.image for f in joined.files] == [f.image for f in train.files + val.files]
    assert len(joined) == 6 + 2
    assert joined.load_raw(7)["image"].shape == val.load_raw(1)["image"].shape


def test_joined_splits_name_the_missing_one(tmp_path):
    root = folder_dataset(tmp_path / "data")
    cfg = tiny_config(root, tmp_path / "run")
    from leanseg.data import DatasetError, build_dataset

    # (the match names the folder: the word "test" alone is in pytest's tmp_path)
    missing = re.escape(str(root / "images" / "test"))
    with pytest.raises(DatasetError, match=rf"not found: {missing}; splits found: train, val"):
        build_dataset(cfg.data, "train+test", train=True)


# ---------------------------------------------------------------------- resume


def train_until_killed(trainer: Trainer, iteration: int) -> None:
    """Train until the process is killed (a ``KeyboardInterrupt``) during ``iteration``."""
    step = trainer.run_step

    def killed_during_the_iteration(batch):
        if trainer.iteration == iteration - 1:
            raise KeyboardInterrupt
        return step(batch)

    trainer.run_step = killed_during_the_iteration
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


def _losses(work_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["loss"] for r in records if r.get("split") == "train"}


def test_resumed_fast_run_continues_the_uninterrupted_one(tmp_path):
    root = folder_dataset(tmp_path / "data")
    options = {
        "crop_schedule": [{"crop_size": [24, 32], "until": 3}],
        "cache": True,
        "prefetch": True,
    }
    frozen = {"train.freeze_backbone_bn": True, "train.freeze_backbone_until": 8}

    def config(work_dir: Path, max_iters: int):
        cfg = tiny_config(root, work_dir, **options)
        cfg.train.max_iters = max_iters
        cfg.train.log_interval = 1
        cfg.train.checkpoint_interval = 2
        cfg.train.freeze_backbone_bn = frozen["train.freeze_backbone_bn"]
        cfg.train.freeze_backbone_until = frozen["train.freeze_backbone_until"]
        return cfg

    Trainer.from_config(config(tmp_path / "whole", 5), show_progress=False).train()
    train_until_killed(Trainer.from_config(config(tmp_path / "parts", 5), show_progress=False), 4)
    resumed = Trainer.from_config(config(tmp_path / "parts", 5), resume=True, show_progress=False)
    assert resumed.iteration == 2  # the last checkpoint; iteration 3 is trained again
    resumed.train()
    whole, parts = _losses(tmp_path / "whole"), _losses(tmp_path / "parts")
    assert sorted(parts) == [1, 2, 3, 4, 5]
    for iteration in range(1, 6):
        assert parts[iteration] == pytest.approx(whole[iteration], rel=1e-5, abs=1e-6)
