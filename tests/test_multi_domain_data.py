"""Several datasets in one run (thesis ch. 5): config, union label space, remapping, mixed
sampling, a 2-iteration train, per-dataset evaluation and ``data check``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from leanseg.config import ConfigError, UnionConfig, config_from_dict
from leanseg.data import MixedDataset, MixedSampler, build_dataset, dataset_classes
from leanseg.data.check import check_dataset
from leanseg.data.union import build_union
from leanseg.evaluation.base import Prediction
from leanseg.evaluation.evaluator import combine_scores
from leanseg.evaluation.extra_scores import ForeignClassEvaluator, InstanceIoUEvaluator
from leanseg.evaluation.semantic import SemanticEvaluator

SYNTHETIC = {"dataset": "synthetic", "options": {"num_samples": 4, "size": [32, 48], "seed": 0}}
EM_CLASSES = ["membrane", "cell"]


def em_folder(root, size=(24, 32)):
    """A tiny folder dataset: 3 train and 2 val images with labels 0 / 1 / 255."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            label = rng.integers(0, 2, size, dtype=np.uint8)
            label[0, :4] = 255
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
    return root


def data_section(tmp_path, **extra):
    entries = [
        {**SYNTHETIC, "name": "street", "weight": 2.0},
        {"dataset": "folder", "name": "em", "root": str(em_folder(tmp_path / "em")),
         "classes": EM_CLASSES, "weight": 1.0},
    ]  # fmt: skip
    return {"datasets": entries, "crop_size": [24, 32], "batch_size": 3, "num_workers": 0, **extra}


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"datasets": [{"dataset": "camvid"}], "root": "x"}, "data.root: set per dataset"),
        ({"datasets": [{"dataset": "camvid"}, {"dataset": "camvid"}]}, r"datasets\[1\].name"),
        ({"datasets": [{"dataset": "camvid", "weight": 0}]}, r"datasets\[0\].weight"),
        ({"datasets": [{"name": "x"}]}, r"datasets\[0\].dataset"),
        ({"datasets": []}, "data.datasets: list at least one"),
        ({"union": {"classes": ["a"]}}, "data.union: a union label space needs"),
        ({"datasets": [{"dataset": "camvid"}], "union": {"map": {"kitti": {}}}}, "map.kitti"),
        ({"datasets": [{"dataset": "camvid"}], "union": {"classes": ["a", "A"]}}, "repeats"),
        (
            {"datasets": [{"dataset": "camvid"}], "union": {"map": {"camvid": {"Sky": 3}}}},
            "map.camvid.Sky",
        ),
        ({"datasets": [{"dataset": "camvid", "wieght": 2}]}, r"unknown key data.datasets\[0\]"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": data})


def test_single_dataset_configs_are_unchanged():
    cfg = config_from_dict({"data": {"dataset": "camvid", "root": "x"}})
    assert cfg.data.datasets is None and cfg.data.union is None
    assert config_from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------- union label space

CAMVID = ("Sky", "Road", "Car", "Bicyclist", "Pavement")
CITY = ("road", "sidewalk", "sky", "car", "rider", "bicycle")


def test_same_names_merge_without_case_and_the_union_is_derived():
    space = build_union(None, {"a": ("Sky", "Road"), "b": ("road", "wall")})
    assert space.classes == ("Sky", "Road", "wall")
    a, b = space.datasets["a"], space.datasets["b"]
    assert a.to_union[:2].tolist() == [0, 1] and b.to_union[:2].tolist() == [1, 2]
    assert space.foreign_classes("a") == [2] and space.foreign_classes("b") == [0]
    assert a.to_dataset[:3].tolist() == [0, 1, 255]


def test_explicit_table_with_a_split_class_and_ignore():
    union = UnionConfig(
        classes=["sky", "road", "sidewalk", "car", "rider", "bicycle"],
        map={"camvid": {"Pavement": "sidewalk", "Bicyclist": ["rider", "bicycle"]},
             "city": {"sky": "ignore"}},
    )  # fmt: skip
    space = build_union(union, {"camvid": CAMVID, "city": CITY})
    camvid, city = space.datasets["camvid"], space.datasets["city"]
    # Sky Road Car -> by name; Bicyclist covers two union classes -> ignored in training.
    assert camvid.to_union[:5].tolist() == [0, 1, 3, 255, 2]
    # ... and a prediction of rider or bicycle counts as Bicyclist (3) in CamVid's scoring.
    assert camvid.to_dataset[:6].tolist() == [0, 1, 4, 2, 3, 3]
    assert city.to_union[:6].tolist() == [1, 2, 255, 3, 4, 5]
    assert space.foreign_classes("city") == [0]  # its sky is ignored, so sky is foreign
    pred = torch.tensor([[0, 4, 5, 2]])
    assert camvid.to_dataset_labels(pred).tolist() == [[0, 3, 3, 4]]


@pytest.mark.parametrize(
    ("union", "message"),
    [
        (UnionConfig(map={"camvid": {"Bike": "bicycle"}}), "map.camvid.Bike: dataset 'camvid'"),
        (UnionConfig(classes=["Sky"], map={"camvid": {"Road": "road"}}), "'road' is not a union"),
        (UnionConfig(classes=["Sky", "Road", "Car", "Bicyclist"]), "map.camvid.Pavement"),
        (UnionConfig(map={"camvid": {"Pavement": "Road"}}), "already stands for class 'Road'"),
    ],
)  # fmt: skip
def test_union_errors_name_the_key(union, message):
    with pytest.raises(ConfigError, match=message):
        build_union(union, {"camvid": CAMVID})


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_remapping_is_exact_and_keeps_ignore(num_classes, seed, shape):
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(num_classes)]
    # A random table: each class to a distinct union class, some to ignore.
    union_names = [f"u{i}" for i in range(num_classes + 3)]
    targets = rng.permutation(len(union_names))[:num_classes]
    ignored = rng.random(num_classes) < 0.25
    table = {
        n: ("ignore" if ig else union_names[t])
        for n, t, ig in zip(names, targets, ignored, strict=True)
    }
    space = build_union(UnionConfig(classes=union_names, map={"d": table}), {"d": names})
    label = rng.integers(0, num_classes, shape).astype(np.uint8)
    label[rng.random(shape) < 0.2] = 255
    remapped = space.datasets["d"].remap(label)
    for value, got in zip(label.ravel(), remapped.ravel(), strict=True):
        expected = 255 if value == 255 or ignored[value] else targets[value]
        assert got == expected
    assert remapped.dtype == np.uint8 and remapped.shape == label.shape


# ---------------------------------------------------------------------- sampler


def test_sampler_draws_by_weight_mixes_every_batch_and_is_deterministic():
    sampler = MixedSampler([5, 40], [2.0, 1.0], seed=3)
    stream = iter(sampler)
    draws = [next(stream) for _ in range(6000)]
    small = np.array([index < 5 for index, _ in draws])
    assert small.mean() == pytest.approx(2 / 3, abs=0.002)
    batches = small.reshape(-1, 6)  # batches of 6: 4 small + 2 large, give or take one
    assert ((batches.sum(1) >= 3) & (batches.sum(1) <= 5)).all()
    # Every image of the small dataset is drawn once per pass over it.
    first_pass = [index for index, _ in draws if index < 5][:5]
    assert sorted(first_pass) == [0, 1, 2, 3, 4]
    again = iter(MixedSampler([5, 40], [2.0, 1.0], seed=3))
    assert [next(again) for _ in range(6000)] == draws
    other = iter(MixedSampler([5, 40], [2.0, 1.0], seed=4))
    assert [next(other) for _ in range(50)] != draws[:50]


def test_sampler_resumes_and_splits_across_ranks():
    full = iter(MixedSampler([3, 7, 11], [1.0, 1.0, 2.0], seed=0))
    draws = [next(full) for _ in range(400)]
    resumed = iter(MixedSampler([3, 7, 11], [1.0, 1.0, 2.0], seed=0, start=240))
    assert [next(resumed) for _ in range(160)] == draws[240:]
    ranks = [
        iter(MixedSampler([3, 7, 11], [1, 1, 2], seed=0, rank=r, world_size=2)) for r in (0, 1)
    ]
    merged = [next(ranks[p % 2]) for p in range(400)]
    assert merged == draws
    counts = MixedSampler([3, 7, 11], [1.0, 1.0, 2.0], seed=0).counts_before(400)
    offsets = np.searchsorted([3, 10, 21], [index for index, _ in draws], side="right")
    assert counts.tolist() == np.bincount(offsets, minlength=3).tolist()


def test_sampler_blocks_give_single_dataset_batches_with_the_same_shares():
    sampler = MixedSampler([5, 40], [2.0, 1.0], seed=3, block=6)
    stream = iter(sampler)
    draws = [next(stream) for _ in range(6000)]
    small = np.array([index < 5 for index, _ in draws]).reshape(-1, 6)
    assert set(small.sum(1).tolist()) == {0, 6}  # every batch of 6 from one dataset
    assert small.mean() == pytest.approx(2 / 3, abs=0.01)
    resumed = iter(MixedSampler([5, 40], [2.0, 1.0], seed=3, start=603, block=6))
    assert [next(resumed) for _ in range(100)] == draws[603:703]
    ranks = [
        iter(MixedSampler([5, 40], [2, 1], seed=3, rank=r, world_size=2, block=6)) for r in (0, 1)
    ]
    assert [next(ranks[p % 2]) for p in range(600)] == draws[:600]
    with pytest.raises(ConfigError, match="data.mix_batches"):
        config_from_dict({"data": {"dataset": "camvid", "mix_batches": False}})


# ---------------------------------------------------------------------- datasets, training


def test_mixed_dataset_remaps_on_load(tmp_path):
    cfg = config_from_dict({"data": data_section(tmp_path)})
    assert dataset_classes(cfg.data)[-2:] == ("membrane", "cell")
    mixed = build_dataset(cfg.data, "train", train=False)
    assert isinstance(mixed, MixedDataset) and mixed.sizes == (4, 3) and mixed.weights == (2, 1)
    raw = mixed.load_raw(4)  # the first EM image
    own = np.array(Image.open(tmp_path / "em" / "labels" / "train" / "0.png"))
    expected = np.where(own == 255, 255, own + 11)  # membrane, cell follow the 11 street classes
    assert np.array_equal(raw["label"], expected)
    assert mixed[4]["label"].dtype == torch.int64


def test_two_iterations_on_synthetic_and_a_folder_dataset(tmp_path):
    from leanseg.evaluation.domains import evaluate_per_dataset
    from leanseg.models import run_config_from_dict
    from leanseg.training.trainer import Trainer

    raw = {
        "model": {"backbone": {"name": "resnet18"}, "head": {"name": "bilinear"}},
        "data": data_section(tmp_path, scale_range=[1.0, 1.0]),
        "train": {"max_iters": 2, "eval_interval": 2, "checkpoint_interval": 2, "lr": 0.001,
                  "optimizer": "adam", "log_interval": 1, "num_threads": 1},
        "eval": {"max_images": 2, "boundary_width": 1},
        "work_dir": str(tmp_path / "run"),
    }  # fmt: skip
    cfg = run_config_from_dict(raw)
    result = Trainer.from_config(cfg, show_progress=False).train()
    assert result.iteration == 2 and len(result.final_scores.iou) == 13
    model = Trainer.from_config(cfg, resume=True, show_progress=False).model
    per_dataset = evaluate_per_dataset(
        model, cfg.data, "val", eval_cfg=cfg.eval, device=torch.device("cpu")
    )
    assert list(per_dataset) == ["street", "em"]
    assert len(per_dataset["em"].iou) == 2 and len(per_dataset["street"].iou) == 11
    for scores in per_dataset.values():
        assert 0.0 <= scores.foreign_fraction <= 1.0
    assert per_dataset["street"].iiou is not None  # the synthetic scenes have instance maps

    # ``leanseg eval`` reports the union scores and each dataset's own.
    from leanseg.cli import main

    out = tmp_path / "scores.json"
    assert main(["eval", str(tmp_path / "run"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert list(record["per_dataset"]) == ["street", "em"]
    assert len(record["per_dataset"]["em"]["iou"]) == 2

    # ``leanseg eval --ood-images --ood-domain``: AUROC of EM images against the street scenes.
    em_val = tmp_path / "em" / "images" / "val"
    argv = ["eval", str(tmp_path / "run"), "--json", str(out), "--force"]  # replaces the above
    argv += ["--ood-images", str(em_val)]
    assert main([*argv, "--ood-domain", "street"]) == 0
    ood = json.loads(out.read_text())["ood"]
    assert ood["in_images"] == 2 and ood["out_images"] == len(list(em_val.iterdir()))
    assert set(ood["auroc"]) == {"max_softmax", "foreign_flag", "foreign_mass"}
    assert all(0.0 <= value <= 1.0 for value in ood["auroc"].values())

    # ``leanseg predict --ood-domain`` adds the foreign-class flag and mass of each image.
    image = tmp_path / "em" / "images" / "val" / "0.png"
    predictions = tmp_path / "predictions"
    argv = ["predict", str(image), "--checkpoint", str(tmp_path / "run"), "--out", str(predictions)]
    assert main([*argv, "--ood-domain", "street"]) == 0
    for name in ("0.png", "0_overlay.png", "0_foreign.png", "0_foreign_mass.png"):
        assert (predictions / name).is_file()


def test_data_check_walks_every_dataset(tmp_path):
    cfg = config_from_dict({"data": data_section(tmp_path)})
    report = check_dataset(cfg.data, ["train", "val"])
    assert report.ok, report.format()
    assert [part.split_sizes for part in report.parts] == [
        {"train": 4, "val": 4},
        {"train": 3, "val": 2},
    ]
    assert "union label space of 13 classes" in report.format()
    (tmp_path / "em" / "labels" / "val" / "1.png").unlink()
    assert not check_dataset(cfg.data, ["val"]).ok


# ---------------------------------------------------------------------- per-dataset scoring


def test_foreign_predictions_are_void_in_the_datasets_own_classes():
    # Union: 0 road, 1 car, 2 membrane, 3 cell; the driving dataset owns road (0) and car (1).
    # Ground truth (driving ids): road road car car; predicted (union): road membrane car cell.
    label_map = torch.tensor([0, 1, 255, 255])
    evaluators = [
        SemanticEvaluator(2, void_index=255),
        InstanceIoUEvaluator(2),
        ForeignClassEvaluator(label_map),
    ]
    classes = torch.tensor([[[0, 2, 1, 3]]])
    pred = label_map[classes]
    assert pred.tolist() == [[[0, 255, 1, 255]]]
    probabilities = torch.nn.functional.one_hot(classes, 4).permute(0, 3, 1, 2).float()
    prediction = Prediction(torch.zeros(1, 3, 1, 4), probabilities, classes, labels=pred)
    for evaluator in evaluators:
        evaluator.update({"label": torch.tensor([[[0, 0, 1, 1]]])}, prediction)
    scores = combine_scores(evaluators)
    # road: TP 1, FN 1 (void), FP 0 -> 1/2; car likewise; 2 of 4 pixels foreign.
    assert scores.iou == [0.5, 0.5]
    assert scores.foreign_fraction == 0.5
    assert scores.category_iou is None and scores.iiou is None
