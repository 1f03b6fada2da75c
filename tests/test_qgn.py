"""QGN head: sparse vs dense-masked decoder, propagation schemes, loss, anytime knobs."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanseg.cli import main
from leanseg.config import DataConfig, EvalConfig, ModelConfig
from leanseg.data import build_dataset
from leanseg.evaluation.base import Prediction
from leanseg.evaluation.cost import ActiveSitesEvaluator
from leanseg.evaluation.evaluator import default_evaluators, evaluate
from leanseg.files.checkpoint import load_checkpoint, save_checkpoint
from leanseg.inference.predictor import Predictor
from leanseg.models import build_model, build_segmentor, load_run_config, run_config_from_dict
from leanseg.nn.heads.qgn import QGNHead, dense_masked_logits
from leanseg.nn.sparse import SparseTensor
from leanseg.training.trainer import Trainer

SMALL = {
    "name": "qgn",
    "in_channels": 32,
    "decoder_channels": [16, 16, 8, 8, 8],
    "decoder_units": [1, 1, 1, 1, 1],
}


def _model(stem_features=True, **head):
    torch.manual_seed(0)
    backbone = {"name": "resnet18", "stem_features": stem_features}
    return build_segmentor(ModelConfig(backbone=backbone, head={**SMALL, **head}), num_classes=3)


def _blocky_label(b=2, h=64, w=96):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 3, (b, h // 16, w // 16), generator=g)
    label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
    label[:, 5:9, 7:30] = 255
    label[:, 40, :] = 1
    return label


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize("scheme", ["all", "gtc", "pc"])
def test_sparse_decoder_matches_dense_masked(scheme, before):
    model = _model(train_scheme=scheme, units_before_upsample=before).double()
    model.train()
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    label = _blocky_label()
    feats = model.features(images)
    pred = model.head.predict_quadtree(
        feats, (64, 96), scheme=scheme, label=label, dense_scores=False
    )
    sites = {lvl: s.coords for lvl, s in pred.logits.items()}
    dense = dense_masked_logits(model.head, feats, sites)
    sparse_sum = dense_sum = 0
    for lvl, s in pred.logits.items():
        c = s.coords
        ref = dense[lvl].permute(0, 2, 3, 1)[c[:, 0], c[:, 1], c[:, 2]]
        torch.testing.assert_close(s.features, ref, atol=1e-8, rtol=1e-8)
        w = torch.randn_like(ref)
        sparse_sum = sparse_sum + (s.features * w).sum()
        dense_sum = dense_sum + (ref * w).sum()
    params = [p for p in model.head.parameters() if p.requires_grad]
    g_sparse = torch.autograd.grad(sparse_sum, params, allow_unused=True, retain_graph=True)
    g_dense = torch.autograd.grad(dense_sum, params, allow_unused=True)
    for a, b in zip(g_sparse, g_dense, strict=True):
        if a is None or b is None:
            assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
            continue
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)
    if scheme == "gtc":
        assert pred.active_sites[0] < 64 * 96 * 2 / 4


@pytest.mark.parametrize("stem_features", [True, False])
def test_stem_skips_resolve_q1_and_q0(stem_features):
    """With the stride-2 stem and the image as skips, Q1 and Q0 differ inside 2x2 blocks (QGN 3.2,
    skip connections); without them eq. 11 leaves each 2x2 block of children identical."""
    model = _model(stem_features=stem_features).eval()
    assert ("1" in model.head.skips and "0" in model.head.skips) == stem_features
    with torch.no_grad():
        pred = model.head.predict_quadtree(
            model.features(torch.randn(1, 3, 64, 96)), (64, 96), scheme="all"
        )
    for level in (1, 0):
        dense = pred.logits[level].to_dense()
        blocks = dense.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)  # (B, C, h/2, w/2, 4)
        spread = (blocks - blocks[..., :1]).abs().amax()
        assert (spread > 1e-4) == stem_features


def test_losses_schemes_and_weighting():
    model = _model(train_scheme="gtc", loss_weighting="adaptive")
    model.train()
    losses = model.losses(torch.randn(2, 3, 64, 96), {"label": _blocky_label()})
    assert sorted(losses) == [f"loss_q{lvl}" for lvl in range(6)]
    sum(losses.values()).backward()
    assert not torch.equal(model.head.adaptive_beta, torch.ones(6))
    fixed = _model(gamma=0.5).head
    assert fixed.level_weights() == [0.5**lvl for lvl in range(6)]


def test_adaloss_weights_are_the_reciprocal_of_the_running_mean():
    """QGN eq. 8 as printed weights a level by its loss's running mean; its source [16]
    (AdaLoss) by the reciprocal. Both update the same running mean."""
    images, label = torch.randn(2, 3, 64, 96), _blocky_label()
    heads, level_losses = {}, {}
    for weighting in ("adaptive", "adaloss"):
        model = _model(train_scheme="all", loss_weighting=weighting, delta=0.75)
        model.train()
        losses = model.losses(images, {"label": label})
        assert all(float(v.detach()) > 0 for v in losses.values())
        heads[weighting] = model.head
        # Both start from weights 1: the losses are the levels' own L_l.
        level_losses[weighting] = torch.stack([losses[f"loss_q{lvl}"].detach() for lvl in range(6)])
    torch.testing.assert_close(level_losses["adaloss"], level_losses["adaptive"])
    running = heads["adaptive"].adaptive_beta
    # One step of the running mean from 1: delta * 1 + (1 - delta) * L_l.
    torch.testing.assert_close(running, 0.75 + 0.25 * level_losses["adaptive"])
    torch.testing.assert_close(heads["adaloss"].adaptive_beta, running)
    assert not torch.equal(running, torch.ones(6))
    torch.testing.assert_close(torch.tensor(heads["adaptive"].level_weights()), running)
    torch.testing.assert_close(torch.tensor(heads["adaloss"].level_weights()), 1.0 / running)


def test_first_losses_start_near_uniform_prediction():
    """Each level's classifier starts near uniform over ``k+1`` outputs (``predict_init_std``);
    the sparse convolution's own Kaiming initialisation starts far from it."""
    images, label = torch.randn(2, 3, 64, 96), _blocky_label()
    uniform = torch.log(torch.tensor(4.0))  # 3 classes + composite

    def first_losses(**head):
        model = _model(train_scheme="all", **head)
        model.train()
        with torch.no_grad():
            return torch.stack(list(model.losses(images, {"label": label}).values()))

    torch.testing.assert_close(first_losses(), uniform.expand(6), atol=0.05, rtol=0)
    assert (first_losses(predict_init_std=None) - uniform).abs().max() > 0.5
    with pytest.raises(ValueError, match="predict_init_std"):
        _model(predict_init_std=0.0)


def test_anytime_knobs_stop_at_min_level_and_cap_the_sites():
    images = torch.randn(1, 3, 64, 96)
    model = _model(eval_scheme="pc", min_level=2, max_sites=5).eval()
    with torch.no_grad():
        scores = model(images)
    assert scores.shape == (1, 3, 64, 96)
    active = model.head.active_sites()
    assert list(active) == ["Q5", "Q4", "Q3", "Q2"]  # coarse to fine, down to min_level
    assert all(active[f"Q{lvl}"] <= 5 * 4 for lvl in (2, 3, 4))
    # Scheme "all" would propagate every site (the 2x3 root cells: 6, 24, 96, 384 sites); the
    # cap lets 5 sites of each level through, each with 4 children.
    capped = _model(eval_scheme="all", min_level=2, max_sites=5).eval()
    with torch.no_grad():
        capped(images)
    assert capped.head.active_sites() == {"Q5": 6, "Q4": 20, "Q3": 20, "Q2": 20}
    with pytest.raises(ValueError, match="gtc"):
        _model(eval_scheme="gtc").eval()(torch.randn(1, 3, 64, 64))


def test_a_leaf_whose_top_class_is_composite_takes_its_second_best_class():
    """QGN 3.2: the composite channel is dropped after the softmax over all k + 1 channels."""
    head = _model().head  # 3 classes + composite (channel 3)
    top = head.top
    coords = torch.tensor([[0, y, x] for y in range(2) for x in range(3)])
    top_logits = torch.zeros(6, 4)
    top_logits[:, 0] = 3.0  # class 0 everywhere at the root level
    # One finer leaf under root cell (0, 1): composite first, class 2 second, class 1 third.
    leaf = torch.tensor([[0.5, 2.0, 3.0, 5.0]])
    logits = {
        top: SparseTensor(coords, top_logits, (1, 2, 3)),
        top - 1: SparseTensor(torch.tensor([[0, 0, 2]]), leaf, (1, 4, 6)),
    }
    dense = head._accumulate(logits, (4, 6), min_level=top - 1)
    assert dense.shape == (1, 3, 4, 6)
    labels = dense.argmax(1)[0]
    assert labels[0, 2] == 2  # the leaf: second best, not the composite
    assert (labels.flatten().tolist().count(2)) == 1
    assert (labels[labels != 2] == 0).all()  # every other pixel keeps the root's class 0
    # Not renormalised over the real classes: the log-probabilities of the 4-way softmax.
    torch.testing.assert_close(dense[0, :, 0, 2], torch.log_softmax(leaf[0], 0)[:3])


def test_median_class_weighting_doubles_classes_below_the_median():
    """QGN A.2: weight 2 below the median IoU, 1 otherwise; NaN classes and composite keep 1."""
    head = _model(class_weighting="median").head  # 3 classes + composite
    head.on_evaluation([0.2, 0.5, 0.9])
    assert head.class_weights.tolist() == [2.0, 1.0, 1.0, 1.0]
    head.on_evaluation(torch.tensor([0.6, float("nan"), 0.1]))  # median of {0.6, 0.1} = 0.35
    assert head.class_weights.tolist() == [1.0, 1.0, 2.0, 1.0]
    plain = _model().head
    plain.on_evaluation([0.2, 0.5, 0.9])
    assert plain.class_weights.tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="class_weighting"):
        _model(class_weighting="inverse")


def test_class_weights_scale_the_level_loss():
    model = _model(train_scheme="all")
    model.train()
    images, label = torch.randn(2, 3, 64, 96), _blocky_label()
    label[label != 255] = 0  # every valid pixel is class 0, so every cell is class 0
    torch.manual_seed(0)
    plain = model.losses(images, {"label": label})["loss_q5"].detach()
    model.head.class_weights[0] = 2.0
    for m in model.modules():  # same BN statistics in both passes
        m.momentum = 0.0 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) else None
    weighted = model.losses(images, {"label": label})["loss_q5"].detach()
    torch.testing.assert_close(weighted, 2 * plain)


def test_trainer_updates_class_weights_after_evaluation(tmp_path, monkeypatch):
    heard = []
    original = QGNHead.on_evaluation

    def spy(self, iou):
        heard.append(list(iou))
        original(self, iou)

    monkeypatch.setattr(QGNHead, "on_evaluation", spy)
    raw = {
        "model": {
            "backbone": {"name": "resnet18", "stem_features": True},
            "head": {**SMALL, "train_scheme": "gtc", "eval_scheme": "pc",
                     "class_weighting": "median"},
        },
        "data": {
            "dataset": "synthetic",
            "options": {"num_samples": 4, "size": [64, 128], "seed": 0},
            "crop_size": [64, 128],
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {"max_iters": 2, "eval_interval": 1, "checkpoint_interval": 2, "lr": 0.001},
        "eval": {"max_images": 2},
        "work_dir": str(tmp_path / "run"),
    }  # fmt: skip
    path = tmp_path / "qgn.yaml"
    path.write_text(yaml.safe_dump(raw))
    Trainer.from_config(load_run_config(path), show_progress=False).train()
    assert len(heard) == 2  # one call per evaluation
    iou = np.array(heard[-1], dtype=float)
    expected = np.where(iou < np.nanmedian(iou), 2.0, 1.0).tolist() + [1.0]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert state["head.class_weights"].tolist() == expected  # saved, so a resume keeps them


def test_predict_reports_active_sites_per_image(tmp_path):
    """``leanseg predict`` writes each image's cost (active sites per level), summed over tiles."""
    head = {**SMALL, "eval_scheme": "pc"}
    cfg = run_config_from_dict(
        {
            "model": {"backbone": {"name": "resnet18", "stem_features": True}, "head": head},
            "data": {"dataset": "synthetic"},
        }
    )
    model = build_model(cfg)
    ckpt = save_checkpoint(
        {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0}, tmp_path / "q.pt"
    )
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    cost = json.loads((tmp_path / "out" / "active_sites.json").read_text())
    assert list(cost["a.png"]) == ["Q5", "Q4", "Q3", "Q2", "Q1", "Q0"]
    assert cost["a.png"]["Q5"] == 2 * 3  # the root level is dense: 64x96 / 32
    predictor = Predictor.from_checkpoint(ckpt, max_pixels=None, flip=True)
    predictor.predict(np.zeros((64, 96, 3), np.uint8))
    assert predictor.last_active_sites["Q5"] == 2 * 2 * 3  # two forward passes (flip) summed
    # A budget of 64x64 pixels: two 64x64 tiles (columns 0-63 and 32-95), 2x2 root cells each.
    tiled = Predictor.from_checkpoint(ckpt, max_pixels=64 * 64, overlap=32)
    tiled.predict(np.zeros((64, 96, 3), np.uint8))
    assert tiled.last_active_sites["Q5"] == 2 * (2 * 2)


def test_evaluation_reports_mean_active_sites_per_image():
    data = DataConfig(dataset="synthetic", options={"num_samples": 3, "size": [64, 128]})
    dataset = build_dataset(data, "val", train=False)
    cfg = EvalConfig(max_images=3, flip=True)
    backbone = {"name": "resnet18", "stem_features": True}
    qgn = build_segmentor(ModelConfig(backbone=backbone, head={**SMALL}), num_classes=11)
    cpu = torch.device("cpu")
    scores = evaluate(
        qgn, dataset, default_evaluators(qgn, num_classes=11), eval_cfg=cfg, device=cpu
    )
    assert list(scores.active_sites) == ["Q5", "Q4", "Q3", "Q2", "Q1", "Q0"]
    assert scores.active_sites["Q5"] == 2 * 2 * 4  # dense root, 64x128 / 32, two passes (flip)
    assert scores.to_dict()["active_sites"] == scores.active_sites  # logged by the trainer
    # Images that cost differently: the mean over images, not over batches or the last one.
    sites = ActiveSitesEvaluator(["Q5", "Q4"])
    for count, q5 in ((2, 12), (1, 3)):
        images = torch.zeros(count, 3, 4, 4)
        classes = torch.zeros(count, 4, 4, dtype=torch.long)
        prediction = Prediction(images, images, classes, classes, active_sites={"Q5": q5})
        sites.update({}, prediction)
    assert sites.compute() == {"active_sites": {"Q5": (12 + 3) / 3}}
    plain = build_segmentor(ModelConfig(backbone={"name": "resnet18"}), num_classes=11)
    evaluators = default_evaluators(plain, num_classes=11)
    assert evaluate(plain, dataset, evaluators, eval_cfg=cfg, device=cpu).active_sites is None
