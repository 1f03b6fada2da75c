"""The shared losses (``leanseg.nn.losses``) at the edges the other tests leave open.

Written against the survivors of mutation testing
(``benchmarks/robustness/mutation.py --module losses``);
each test states a property of the loss's definition (thesis §3.4 for class balancing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leanseg.nn.losses import class_balanced_cross_entropy, class_balanced_weights, cross_entropy


def _scores_and_label(seed: int = 0, classes: int = 3, shape=(2, 4, 5)):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(shape[0], classes, *shape[1:], generator=generator)
    label = torch.randint(0, classes, shape, generator=generator)
    return scores, label


def test_one_labelled_pixel_costs_its_own_cross_entropy():
    """The mean runs over labelled pixels: with one, the loss is that pixel's -log p."""
    scores, _ = _scores_and_label()
    label = torch.full((2, 4, 5), 255)
    label[1, 2, 3] = 2
    expected = -F.log_softmax(scores[1, :, 2, 3], dim=0)[2]
    assert torch.allclose(cross_entropy(scores, label), expected)
    weights = torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(cross_entropy(scores, label, class_weights=weights), expected)


def test_weighted_loss_keeps_its_scale_whatever_the_weights_scale():
    """A weighted mean: the same weights times 1e-4 (summing far below 1) give the same loss."""
    scores, label = _scores_and_label(1)
    label[0, 0] = 255
    weights = torch.tensor([1.0, 3.0, 0.5])
    loss = cross_entropy(scores, label, class_weights=weights)
    assert torch.allclose(cross_entropy(scores, label, class_weights=weights * 1e-4), loss)
    expected = F.cross_entropy(scores, label, weight=weights, ignore_index=255)
    assert torch.allclose(loss, expected)


def test_weighted_loss_of_a_single_class_with_ignored_pixels():
    """One class (e.g. a foreground-only map with unlabelled pixels): every labelled pixel has
    probability 1, the loss is 0, and the ignored pixels do not index a second weight."""
    scores = torch.randn(1, 1, 3, 3)
    label = torch.zeros(1, 3, 3, dtype=torch.long)
    label[0, 0] = 255
    loss = cross_entropy(scores, label, class_weights=torch.tensor([2.0]))
    assert loss.item() == 0.0


def test_class_balanced_weights_ignore_255_by_default():
    """p(c) is the share of the *labelled* pixels (thesis §3.4): 255 pixels are not counted."""
    label = torch.tensor([[[0, 0, 1, 255]]])
    assert torch.allclose(class_balanced_weights(label, 2), torch.tensor([1.5, 3.0]))


def test_a_batch_with_one_labelled_pixel_weighs_it_one():
    """p(c) = 1 for the only labelled class, so w_c = 1 / p(c) = 1; the others get 0."""
    label = torch.full((1, 2, 2), 255)
    label[0, 1, 0] = 1
    assert class_balanced_weights(label, 3).tolist() == [0.0, 1.0, 0.0]


def test_class_balanced_loss_caps_weights_at_one_thousand_by_default():
    """w_c = min(10^3, 1 / p(c)) (thesis §3.4): a class of 1 pixel in 3000 weighs 1000, not
    3000, and the loss is the weighted sum divided by the labelled pixels."""
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(1, 2, 50, 60, generator=generator)
    label = torch.zeros(1, 50, 60, dtype=torch.long)
    label[0, 7, 9] = 1
    weights = torch.tensor([3000 / 2999, 1000.0])
    per_pixel = F.cross_entropy(scores, label, reduction="none")
    expected = (per_pixel * weights[label]).sum() / label.numel()
    assert torch.allclose(class_balanced_cross_entropy(scores, label), expected)


def test_class_balancing_with_class_zero_as_the_ignore_value():
    """With ``ignore_index=0`` (datasets whose 0 is "void") class 0 pixels are neither
    weighted nor counted in p(c)."""
    scores, _ = _scores_and_label(3, classes=3, shape=(1, 2, 4))
    label = torch.tensor([[[0, 0, 0, 1], [2, 2, 2, 0]]])
    weights = class_balanced_weights(label, 3, ignore_index=0)
    assert torch.allclose(weights, torch.tensor([0.0, 4.0, 4 / 3]))
    per_pixel = F.cross_entropy(scores, label, weight=weights, ignore_index=0, reduction="sum")
    expected = per_pixel / 4
    assert torch.allclose(class_balanced_cross_entropy(scores, label, ignore_index=0), expected)


def test_class_balanced_loss_passes_its_cap_on():
    """``max_weight`` is the cap of the loss's weights: 1 pixel in 3000 weighs 10 with a cap
    of 10."""
    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(1, 2, 50, 60, generator=generator)
    label = torch.zeros(1, 50, 60, dtype=torch.long)
    label[0, 3, 4] = 1
    weights = torch.tensor([3000 / 2999, 10.0])
    per_pixel = F.cross_entropy(scores, label, reduction="none")
    expected = (per_pixel * weights[label]).sum() / label.numel()
    loss = class_balanced_cross_entropy(scores, label, max_weight=10.0)
    assert torch.allclose(loss, expected)


def test_class_balanced_loss_of_one_labelled_pixel_is_its_cross_entropy():
    """One labelled pixel: weight 1 (p(c) = 1), divided by one labelled pixel."""
    scores, _ = _scores_and_label(5)
    label = torch.full((2, 4, 5), 255)
    label[0, 1, 1] = 0
    expected = -F.log_softmax(scores[0, :, 1, 1], dim=0)[0]
    assert torch.allclose(class_balanced_cross_entropy(scores, label), expected)


def test_255_is_ignored_by_default_with_more_than_255_classes():
    """The default ignore value is 255 whatever the number of classes: with 300 classes
    (ADE20K-full scale) a 255 pixel is still not counted in p(c)."""
    label = torch.tensor([[[0, 1, 255, 255]]])
    weights = class_balanced_weights(label, 300)
    assert weights[0] == 2.0 and weights[1] == 2.0 and weights[255] == 0.0
