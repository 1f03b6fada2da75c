"""Instance AP in evaluation: the evaluator's wiring, and a tiny synthetic instance run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from leanseg.cli import main
from leanseg.config import EvalConfig, ModelConfig
from leanseg.evaluation import instances as instance_eval
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.files.run_dir import RunDirectory
from leanseg.metrics.instance import InstanceAP
from leanseg.models import build_segmentor, load_run_config
from leanseg.nn.heads.ssn_instance import InstancePrediction
from leanseg.training.trainer import Trainer

HEIGHT, WIDTH = 32, 48


def _ssn(thing_classes: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    head = {"name": "ssn_instance", "thing_classes": thing_classes, "iterations": 2}
    model = build_segmentor(ModelConfig(backbone={"name": "ssn_encoder"}, head=head), num_classes=3)
    return model.eval()


def _samples() -> list[dict[str, torch.Tensor]]:
    """Two images: one instance of class 1 each (and one of class 2 in the second)."""
    samples = []
    for index in range(2):
        instance = torch.zeros(HEIGHT, WIDTH, dtype=torch.long)
        instance[2:14, 2:14] = 1001
        if index == 1:
            instance[16:30, 20:40] = 2001
        label = (instance // 1000).long()
        image = torch.randn(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(index))
        samples.append({"image": image, "label": label, "instance": instance})
    return samples


def _evaluate(model: torch.nn.Module, samples: list[dict]) -> dict | None:
    evaluators = default_evaluators(model, num_classes=3)
    scores = evaluate(model, samples, evaluators, eval_cfg=EvalConfig(), device=torch.device("cpu"))
    return scores.instance_ap


def test_evaluator_scores_what_the_head_predicts(monkeypatch):
    samples = _samples()
    truth = iter(s["instance"].unsqueeze(0) for s in samples)
    calls = []

    def perfect(model, images):
        calls.append(images.shape)
        instance = next(truth)
        ids = [int(i) for i in instance.unique() if i >= 1000]
        return InstancePrediction(instance=instance, scores=[dict.fromkeys(ids, 0.9)])

    monkeypatch.setattr(instance_eval, "predict_instances", perfect)
    ap = _evaluate(_ssn([1, 2]), samples)
    assert calls == [(1, 3, HEIGHT, WIDTH)] * 2  # once per image, at the input scale
    assert ap["AP"] == 1.0 and ap["AP50"] == 1.0
    assert ap["per_class"] == {"1": 1.0, "2": 1.0}
    assert ap["per_class_AP50"] == {"1": 1.0, "2": 1.0}


def test_evaluator_ap_matches_the_metric_for_a_wrong_prediction(monkeypatch):
    samples = _samples()
    # Every image gets a class-1 instance on 8 of the true one's 12 columns (IoU 96/144 = 2/3:
    # a match at the thresholds 0.5 .. 0.65 only), confidence 0.9, and a class-1 false positive
    # of confidence 0.1 where no instance is; the class-2 instance is never predicted.
    wrong = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.long)
    wrong[0, 2:14, 2:10] = 1001
    wrong[0, 20:30, 2:10] = 1002
    scores = {1001: 0.9, 1002: 0.1}
    monkeypatch.setattr(
        instance_eval,
        "predict_instances",
        lambda model, images: InstancePrediction(instance=wrong, scores=[scores]),
    )
    ap = _evaluate(_ssn([1, 2]), samples)
    expected = InstanceAP([1, 2], min_gt_area=instance_eval.MIN_GT_AREA)
    for sample in samples:
        expected.update(wrong[0], scores, sample["instance"], sample["label"])
    assert ap == expected.compute()
    # By hand: class 1 ranks TP, TP, FP, FP at 0.5 .. 0.65 (AP 1) and four FPs above (AP 0):
    # AP 4/10, AP50 1. Class 2: one instance, never found: 0.
    assert ap["per_class"] == pytest.approx({"1": 0.4, "2": 0.0})
    assert ap["per_class_AP50"] == {"1": 1.0, "2": 0.0}
    assert ap["AP"] == pytest.approx(0.2) and ap["AP50"] == 0.5


def test_no_ap_without_an_instance_head_or_instance_labels():
    samples = _samples()
    plain = build_segmentor(
        ModelConfig(backbone={"name": "ssn_encoder"}, head={"name": "bilinear"}), num_classes=3
    ).eval()
    assert _evaluate(plain, samples) is None
    unlabelled = [{k: v for k, v in s.items() if k != "instance"} for s in samples]
    assert _evaluate(_ssn([1, 2]), unlabelled) is None


def test_merge_adds_the_records_of_another_share():
    samples = _samples()
    whole, first, second = (InstanceAP([1, 2]) for _ in range(3))
    prediction = torch.zeros(HEIGHT, WIDTH, dtype=torch.long)
    prediction[2:14, 2:12] = 1001
    for metric, share in ((first, samples[:1]), (second, samples[1:]), (whole, samples)):
        for sample in share:
            metric.update(prediction, {1001: 0.7}, sample["instance"], sample["label"])
    first.merge(second)
    assert first.compute() == whole.compute()  # same records in the same order
    with pytest.raises(ValueError, match="thing classes"):
        first.merge(InstanceAP([1]))


TINY_SSN = [
    "model.backbone.name=ssn_encoder",
    "model.head={name: ssn_instance, thing_classes: [8, 9, 10], iterations: 2}",
    "data.dataset=synthetic",
    "data.options={num_samples: 2, size: [64, 96], seed: 0}",
    "data.crop_size=[64, 96]",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_iters=2",
    "train.eval_interval=2",
    "train.checkpoint_interval=2",
    "train.num_threads=1",
    "eval.max_images=2",
]


def _check_ap(ap: dict) -> None:
    assert set(ap) == {"AP", "AP50", "per_class", "per_class_AP50"}
    assert set(ap["per_class"]) == set(ap["per_class_AP50"]) == {"8", "9", "10"}
    values = [ap["AP"], ap["AP50"], *ap["per_class"].values(), *ap["per_class_AP50"].values()]
    for value in values:  # None (NaN in JSON) only for a class without ground truth
        assert value is None or (not math.isnan(value) and 0.0 <= value <= 1.0)
    assert ap["AP"] is not None and ap["AP50"] is not None


@pytest.mark.slow
def test_tiny_instance_run_logs_and_evaluates_ap(tmp_path):
    root = tmp_path / "run"
    Trainer.from_config(
        load_run_config(None, [*TINY_SSN, f"work_dir={root}"]), show_progress=False
    ).train()
    val = [r for r in RunDirectory(root).read_metrics() if r.get("split") == "val"]
    assert val, "the run logged no validation"
    _check_ap(val[-1]["instance_ap"])
    out = tmp_path / "scores.json"
    assert main(["eval", str(root), "--json", str(out)]) == 0
    _check_ap(json.loads(out.read_text())["instance_ap"])


def test_format_instance_ap_names_classes():
    from rich.console import Console

    from leanseg.metrics.instance import format_instance_ap

    ap = {
        "AP": 0.25,
        "AP50": 0.5,
        "per_class": {"1": 0.25, "2": None},
        "per_class_AP50": {"1": 0.5, "2": None},
    }
    console = Console(record=True, width=80)
    console.print(format_instance_ap(ap, ["road", "car", "person"]))
    text = console.export_text()
    assert "car" in text and "person" in text and "25.0" in text and "50.0" in text
    assert "-" in text.split("person")[1].splitlines()[0]
