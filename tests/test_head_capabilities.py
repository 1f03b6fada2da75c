"""Optional head capabilities (``leanseg.nn.heads.base``): declared by a head, used by the engine.

A head that reports its cost names its levels and reports the active sites of its last forward
pass; evaluation sums them over every pass and reports the mean per image in the head's order. A
head that adapts to evaluations hears the per-class IoU from the trainer. Heads without either are
left alone.

What a head's class can do (``HeadCapabilities``: ONNX export, instance predictions) is declared in
every head class of the builder table, and export and evaluation read only that declaration.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from leanseg.config import DataConfig, EvalConfig, ModelConfig
from leanseg.data import build_dataset
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.export import UnsupportedModelError, refuse_unexportable
from leanseg.inference.site_cost import SiteCounter
from leanseg.models import HEADS, build_segmentor, create_model, load_run_config
from leanseg.nn.heads.base import (
    CostReporting,
    EvaluationHook,
    HeadCapabilities,
    head_predicts_instances,
)
from leanseg.nn.heads.bilinear import BilinearHead
from leanseg.nn.segmentor import Segmentor
from leanseg.training.trainer import Trainer

QGN_SMALL = {"in_channels": 16, "decoder_channels": [8] * 5, "decoder_units": [1] * 5}


class _DeclaringHead(BilinearHead):
    """A dense head that declares both capabilities: its "cost" is the pixels it scores."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.heard: list[list[float]] = []
        self._last: dict[str, int] = {}

    def cost_levels(self) -> tuple[str, ...]:
        return ("coarse", "fine")

    def active_sites(self) -> dict[str, int]:
        return dict(self._last)

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        height, width = image_size
        self._last = {"fine": height * width, "coarse": height // 32 * (width // 32)}
        return super().forward(features, image_size)

    def on_evaluation(self, iou: list[float] | Tensor) -> None:
        self.heard.append([float(value) for value in iou])


def _declaring_model(num_classes: int = 11) -> Segmentor:
    torch.manual_seed(0)
    plain = create_model(head="bilinear", backbone="resnet18", num_classes=num_classes)
    head = _DeclaringHead(feature_info=plain.backbone.feature_info, num_classes=num_classes)
    return Segmentor(plain.backbone, head, num_classes=num_classes)


def test_qgn_declares_both_capabilities_and_names_its_levels():
    model = create_model(
        head="qgn", backbone="resnet18", num_classes=3, backbone_options={"stem_features": True},
        head_options=QGN_SMALL,
    )  # fmt: skip
    head = model.head
    assert isinstance(head, CostReporting) and isinstance(head, EvaluationHook)
    assert head.cost_levels() == ("Q5", "Q4", "Q3", "Q2", "Q1", "Q0")
    assert head.active_sites() == {}  # no forward pass yet
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 96))
    sites = head.active_sites()
    assert tuple(sites) == head.cost_levels()  # scheme "all": every level, coarse to fine
    # All sites of every level: level l of a 64x96 image is its stride-2^l grid.
    assert sites == {
        "Q5": 2 * 3,
        "Q4": 4 * 6,
        "Q3": 8 * 12,
        "Q2": 16 * 24,
        "Q1": 32 * 48,
        "Q0": 64 * 96,
    }


def test_a_head_without_capabilities_is_left_alone():
    plain = create_model(head="bilinear", backbone="resnet18", num_classes=11)
    assert not isinstance(plain.head, CostReporting)
    assert not isinstance(plain.head, EvaluationHook)
    assert SiteCounter.wrap(plain) is None


def test_evaluation_reports_any_declaring_head_in_its_level_order():
    data = DataConfig(dataset="synthetic", options={"num_samples": 3, "size": [64, 96]})
    dataset = build_dataset(data, "val", train=False)
    cfg = EvalConfig(max_images=3, flip=True, scales=(1.0, 0.5))
    model = _declaring_model()
    evaluators = default_evaluators(model, num_classes=11)
    scores = evaluate(model, dataset, evaluators, eval_cfg=cfg, device=torch.device("cpu"))
    # Per image: flip doubles each scale's pass; 0.5 scales 64x96 to 32x48, padded to 32x64.
    assert scores.active_sites == {
        "coarse": 2 * (2 * 3) + 2 * (1 * 2),
        "fine": 2 * (64 * 96) + 2 * (32 * 64),
    }
    assert list(scores.active_sites) == ["coarse", "fine"]  # the head's order, not the report's


def test_trainer_tells_a_declaring_head_of_each_evaluation(tmp_path):
    cfg = load_run_config(
        None,
        [
            "data.dataset=synthetic",
            "data.options={num_samples: 2, size: [64, 64]}",
            "data.crop_size=[64, 64]",
            "data.batch_size=2",
            "data.num_workers=0",
            "train.max_iters=2",
            "train.eval_interval=1",
            "eval.max_images=2",
            f"work_dir={tmp_path / 'run'}",
        ],
    )
    model = _declaring_model()
    result = Trainer.from_config(cfg, model=model, show_progress=False).train()
    assert isinstance(model.head, _DeclaringHead)
    assert len(model.head.heard) == 2  # one call per evaluation
    assert result.final_scores is not None
    torch.testing.assert_close(
        torch.tensor(model.head.heard[-1]), torch.tensor(result.final_scores.iou), equal_nan=True
    )
    assert result.final_scores.active_sites == {"coarse": 2 * 2, "fine": 64 * 64}


DECLARATIONS = ("onnx_unexportable", "predicts_instances")


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_declares_its_capabilities_in_its_own_class(name):
    head = HEADS[name]
    assert isinstance(head, type) and issubclass(head, HeadCapabilities)
    for declaration in DECLARATIONS:
        assert declaration in vars(head), f"{head.__name__} does not set {declaration}"
    assert head.onnx_unexportable is None or (
        isinstance(head.onnx_unexportable, str) and head.onnx_unexportable.strip()
    )
    assert isinstance(head.predicts_instances, bool)


def test_declared_capabilities_of_the_library_heads():
    refused = sorted(name for name, head in HEADS.items() if head.onnx_unexportable is not None)
    instances = sorted(name for name, head in HEADS.items() if head.predicts_instances)
    assert refused == ["qgn", "sandf"]
    assert instances == ["ssn_instance"]


class _Refusing(HeadCapabilities, nn.Module):
    onnx_unexportable = "it is a test part"


class _Instances(nn.Module):
    predicts_instances = True


def test_export_refuses_any_module_that_declares_a_reason():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), _Refusing())
    with pytest.raises(UnsupportedModelError, match=r"^_Refusing \(1\) does not export to ONNX: "
                       "it is a test part$"):  # fmt: skip
        refuse_unexportable(model)
    refuse_unexportable(nn.Sequential(nn.Conv2d(3, 3, 1)))  # declares nothing: exports


def test_instance_predictions_are_read_from_the_declaration():
    plain = create_model(head="bilinear", backbone="resnet18", num_classes=3)
    assert not head_predicts_instances(plain) and not head_predicts_instances(plain.head)
    assert not head_predicts_instances(nn.Conv2d(3, 3, 1))  # declares nothing
    holder = nn.Module()
    holder.head = _Instances()
    assert head_predicts_instances(holder) and head_predicts_instances(holder.head)


@pytest.mark.parametrize(
    ("head", "declared"),
    [
        ({"name": "ldn", "aux_loss": "none"}, ["loss_ce"]),
        ({"name": "ldn", "aux_loss": "pyramid"}, ["loss_aux", "loss_ce"]),
        ({"name": "sandf", "output": "pixel"}, ["loss_ce"]),
        ({"name": "sandf", "output": "auxiliary"}, ["loss_semantic"]),
        ({"name": "sandf", "output": "pyramid"}, ["loss_semantic", "loss_unity"]),
        (
            {
                "name": "qgn",
                "in_channels": 16,
                "decoder_channels": [8] * 5,
                "decoder_units": [1] * 5,
            },
            [f"loss_q{level}" for level in range(6)],
        ),
    ],
)
def test_declared_loss_names_follow_the_head_options(head, declared):
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(backbone={"name": "resnet18"}, head=head), num_classes=4
    ).train()
    losses = model.losses(torch.randn(2, 3, 64, 64), {"label": torch.randint(0, 4, (2, 64, 64))})
    assert sorted(model.head.loss_names()) == sorted(losses) == sorted(declared)
