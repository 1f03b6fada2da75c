"""Partial labels (``data.union.partial_labels``): a dataset class that covers several union
classes trains with ``-log`` of their summed probability instead of being ignored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.config import ConfigError, UnionConfig
from leanseg.data import build_dataset, dataset_classes
from leanseg.data.union import build_union
from leanseg.models import build_model, run_config_from_dict
from leanseg.nn.losses import cross_entropy, partial_cross_entropy
from test_multi_domain_data import data_section

CAMVID = ("Sky", "Road", "Car", "Bicyclist", "Pavement")
CITY = ("road", "sidewalk", "sky", "car", "rider", "bicycle")
KITTI = ("road", "Cyclist")
SPLIT = {
    "camvid": {"Pavement": "sidewalk", "Bicyclist": ["rider", "bicycle"]},
    "kitti": {"Cyclist": ["bicycle", "rider"]},  # the same set, listed in another order
}


def space(partial: bool = True):
    union = UnionConfig(map=SPLIT, partial_labels=partial)
    return build_union(union, {"camvid": CAMVID, "city": CITY, "kitti": KITTI})


# ---------------------------------------------------------------------- the loss


def test_a_set_pixel_costs_minus_log_of_its_summed_probability():
    scores = torch.randn(1, 4, 2, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.cat([torch.eye(4, dtype=torch.bool), torch.tensor([[False, True, True, False]])])
    label = torch.tensor([[[0, 4, 255], [3, 4, 1]]])
    probs = scores.softmax(1)[0]
    by_hand = [
        -probs[0, 0, 0].log(),
        -(probs[1, 0, 1] + probs[2, 0, 1]).log(),
        -probs[3, 1, 0].log(),
        -(probs[1, 1, 1] + probs[2, 1, 1]).log(),
        -probs[1, 1, 2].log(),
    ]
    loss = partial_cross_entropy(scores, label, mask)
    assert torch.allclose(loss, torch.stack(by_hand).mean(), atol=1e-6)
    # Without set pixels it is the ordinary cross-entropy.
    plain = torch.where(label == 4, torch.full_like(label, 255), label)
    assert torch.allclose(partial_cross_entropy(scores, plain, mask), cross_entropy(scores, plain))


def test_all_ignored_gives_zero_with_a_gradient_path():
    scores = torch.randn(2, 3, 4, 4, requires_grad=True)
    mask = torch.cat([torch.eye(3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)])
    loss = partial_cross_entropy(scores, torch.full((2, 4, 4), 255), mask)
    loss.backward()
    assert loss.item() == 0.0 and scores.grad is not None and not scores.grad.any()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    num_classes=st.integers(2, 6),
    members=st.sets(st.integers(0, 5), min_size=1),
)
def test_gradient_moves_mass_into_the_set_and_never_out_of_it(seed, num_classes, members):
    """One pixel labelled with a set: the gradient raises the scores of its members relative to
    the others and, among members, leaves their ratio alone (it cares only for their sum)."""
    members = sorted(m for m in members if m < num_classes) or [0]
    scores = torch.randn(1, num_classes, 1, 1, generator=torch.Generator().manual_seed(seed))
    scores.requires_grad_(True)
    mask = torch.cat([torch.eye(num_classes, dtype=torch.bool), torch.zeros(1, num_classes).bool()])
    mask[num_classes, members] = True
    loss = partial_cross_entropy(scores, torch.tensor([[[num_classes]]]), mask)
    loss.backward()
    grad = scores.grad.flatten()
    probs = scores.detach().softmax(1).flatten()
    inside = probs[members].sum()
    # d loss / d s_c = p_c - p_c 1[c in set] / P(set): members p_c (1 - 1/P) <= 0, others p_c.
    expected = probs.clone()
    expected[members] = probs[members] * (1 - 1 / inside)
    assert torch.allclose(grad, expected, atol=1e-5)
    assert torch.isclose(loss, -inside.log(), atol=1e-5)


# ---------------------------------------------------------------------- the union label space


def test_split_classes_become_one_shared_label_set():
    union = space()
    assert union.classes == ("Sky", "Road", "Car", "sidewalk", "rider", "bicycle")
    num = len(union.classes)
    assert union.label_sets == ((4, 5),)  # rider, bicycle, one set for both datasets
    camvid, kitti = union.datasets["camvid"], union.datasets["kitti"]
    # Evaluation labels keep the set ignored; training labels hold its value K + 0.
    assert camvid.to_union[:5].tolist() == [0, 1, 2, 255, 3]
    assert camvid.to_union_partial[:5].tolist() == [0, 1, 2, num, 3]
    assert kitti.to_union_partial[:2].tolist() == [1, num]
    label = np.array([[3, 0, 255]], dtype=np.uint8)
    assert camvid.remap(label).tolist() == [[255, 0, 255]]
    assert camvid.remap(label, partial=True).tolist() == [[num, 0, 255]]
    mask = union.label_set_mask()
    assert mask.shape == (num + 1, num)
    assert torch.equal(mask[:num], torch.eye(num, dtype=torch.bool))
    assert mask[num].nonzero().flatten().tolist() == [4, 5]


def test_without_the_option_nothing_changes():
    union = space(partial=False)
    assert union.label_sets == () and union.label_set_mask() is None
    camvid = union.datasets["camvid"]
    assert np.array_equal(camvid.to_union, camvid.to_union_partial)


def test_too_many_label_values_name_the_option():
    classes = [f"c{i}" for i in range(250)]
    table = {f"d{i}": [classes[2 * i], classes[2 * i + 1]] for i in range(6)}
    union = UnionConfig(classes=classes, map={"a": table}, partial_labels=True)
    with pytest.raises(ConfigError, match="partial_labels: 250 union classes and 6 label sets"):
        build_union(union, {"a": tuple(table)})


# ---------------------------------------------------------------------- datasets and models


def partial_config(tmp_path, head="bilinear", **model):
    # The EM entry's "cell" covers two union classes: cell and nucleus.
    union = {"map": {"em": {"cell": ["cell", "nucleus"]}}, "partial_labels": True}
    return run_config_from_dict(
        {
            "model": {"backbone": {"name": "resnet18"}, "head": {"name": head}, **model},
            "data": data_section(tmp_path, union=union, scale_range=[1.0, 1.0]),
            "train": {
                "max_iters": 2,
                "eval_interval": 2,
                "checkpoint_interval": 2,
                "lr": 0.001,
                "optimizer": "adam",
                "num_threads": 1,
            },
            "eval": {"max_images": 2, "boundary_width": 1},
            "work_dir": str(tmp_path / "run"),
        }  # fmt: skip
    )


def test_training_sets_read_label_sets_and_evaluation_sets_ignore_them(tmp_path):
    cfg = partial_config(tmp_path)
    classes = dataset_classes(cfg.data)
    assert classes[-3:] == ("membrane", "cell", "nucleus")
    train = build_dataset(cfg.data, "train", train=True)
    val = build_dataset(cfg.data, "train", train=False)
    own = train.load_raw(4)["label"]  # the first EM image, cell pixels as the set value 14
    ignored = val.load_raw(4)["label"]
    assert set(np.unique(own).tolist()) <= {11, len(classes), 255}
    assert (own == len(classes)).any()
    assert np.array_equal(ignored, np.where(own == len(classes), 255, own))


@pytest.mark.parametrize("head", ["bilinear", "ldn"])
def test_heads_get_the_mask_and_train_on_set_pixels(tmp_path, head):
    cfg = partial_config(tmp_path, head=head)
    model = build_model(cfg)
    num = len(dataset_classes(cfg.data))
    assert model.head.label_set_mask is not None and model.head.label_set_mask.shape == (15, num)
    # A batch whose only labelled pixels are set pixels: the loss is their partial loss.
    images = torch.randn(2, 3, 32, 32)
    label = torch.full((2, 32, 32), 255)
    label[:, 8:16, 8:16] = num  # "cell or nucleus"
    model.train()
    losses = model.losses(images, {"label": label})
    assert losses["loss_ce"].item() > 0
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    weight = 1.0
    if head == "ldn":  # the pyramid's soft targets ignore set pixels: no labelled cell, no loss
        assert losses["loss_aux"].item() == 0.0
        weight = model.head.main_weight
    scores = model(images)
    probs = scores.softmax(1)[:, -2:].sum(1)[:, 8:16, 8:16]
    assert torch.allclose(losses["loss_ce"], weight * -probs.log().mean(), atol=1e-5)


def test_two_iterations_with_label_sets(tmp_path):
    from leanseg.training.trainer import Trainer

    result = Trainer.from_config(partial_config(tmp_path), show_progress=False).train()
    assert result.iteration == 2 and len(result.final_scores.iou) == 14
    assert np.isfinite(result.final_scores.miou)


@pytest.mark.parametrize(
    ("head", "model", "message"),
    [
        ("qgn", {}, "head 'qgn' has its own loss"),
        ("bilinear", {"class_balancing": True}, "not combined with model.class_balancing"),
        ("ladder", {"hard_pixel_fraction": 0.25}, "not combined with model.hard_pixel_fraction"),
        ("ladder", {}, None),
    ],
)
def test_heads_that_cannot_use_label_sets_are_refused(tmp_path, head, model, message):
    cfg = partial_config(tmp_path, head=head, **model)
    if message is None:
        assert build_model(cfg).head.label_set_mask is not None
        return
    with pytest.raises(ConfigError, match=f"data.union.partial_labels: {message}"):
        build_model(cfg)


def test_ldn_pyramid_targets_skip_set_values():
    from leanseg.nn.heads.ldn import class_histograms

    label = torch.tensor([[[0, 1], [3, 255]]])
    one_hot = class_histograms(label, 3)
    assert one_hot.sum().item() == 2  # the set value 3 and ignore count for no class
    assert torch.equal(one_hot[0, :, 0, 0], F.one_hot(torch.tensor(0), 3).float())
