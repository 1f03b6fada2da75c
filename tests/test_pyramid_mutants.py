"""S&F pyramids (``leanseg.structures.pyramid``): the rules of S&F 3.1 the other tests leave open.

Written against the survivors of mutation testing
(``benchmarks/robustness/mutation.py --module pyramid``).
"""

from __future__ import annotations

import pytest
import torch

from leanseg.structures.pyramid import fuse, level_strides, pyramid_targets, relabel

IGNORE = 255


def test_a_pyramid_needs_a_level():
    with pytest.raises(ValueError, match="num_levels must be >= 1, got 0"):
        level_strides(0, 4)


@pytest.mark.parametrize("shape", [(8, 6), (6, 8)])
def test_both_sides_must_be_multiples_of_the_coarsest_stride(shape):
    """The tree pyramid has 4 children per cell down to s_1 = s_L * 2^(L-1) (S&F 3.1): either
    side not divisible by s_1 is refused, naming s_1."""
    label = torch.zeros(1, *shape, dtype=torch.long)
    with pytest.raises(ValueError, match=r"is not divisible by the coarsest stride 4$"):
        pyramid_targets(label, num_levels=2, finest_stride=2)


def test_unity_maps_are_integer_maps_like_the_semantic_ones():
    """``U^(l)`` holds 0, 1 or the ignore value, as integers (targets compared exactly and used
    as class-like ids, as ``Y^(l)``)."""
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 1, IGNORE], [2, 3, 3, 3], [2, 2, 3, 3]])[None]
    t = pyramid_targets(label, num_levels=2, finest_stride=1)
    assert all(u.dtype == torch.long for u in t.unity)
    assert all(y.dtype == torch.long for y in t.semantic)
    assert t.unity[0].tolist() == [[[1, IGNORE], [0, 1]]]


def test_relabel_refuses_an_unknown_mode_and_tp_without_predictions():
    t = pyramid_targets(torch.zeros(1, 4, 4, dtype=torch.long), num_levels=2, finest_stride=1)
    with pytest.raises(ValueError, match="relabel mode must be raw, gt or tp, got 'TP'"):
        relabel(t, None, mode="TP")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="true-positive relabelling needs the predicted unity"):
        relabel(t, None, mode="tp")


def test_relabel_of_a_one_level_pyramid_changes_nothing():
    """One level: no coarser cell, no unity map; nothing is done by a coarser level."""
    label = torch.tensor([[0, 1], [IGNORE, 1]])[None]
    t = pyramid_targets(label, num_levels=1, finest_stride=1)
    for mode in ("gt", "tp"):
        out = relabel(t, [], mode=mode)
        assert out.unity == [] and torch.equal(out.semantic[0], label)
        assert out.strides == [1]


def test_a_unity_probability_equal_to_tau_is_a_predicted_unit_cell():
    """S&F eq. 2: a cell is predicted unit when its unity probability is >= tau; in
    true-positive relabelling a ground-truth unit cell predicted at exactly tau is a true
    positive, so its children become "don't care"."""
    t = pyramid_targets(torch.zeros(1, 4, 4, dtype=torch.long), num_levels=2, finest_stride=2)
    tp = relabel(t, [torch.full((1, 1, 1), 0.5)], mode="tp", tau=0.5)
    assert tp.semantic[1].eq(IGNORE).all()
    assert tp.strides == [4, 2]
    below = relabel(t, [torch.full((1, 1, 1), 0.49)], mode="tp", tau=0.5)
    assert below.semantic[1].eq(0).all()


def test_the_fuser_threshold_is_one_half_by_default():
    """tau = 0.5 (S&F): a coarse cell of unity 0.6 serves its four finest cells."""
    coarse = torch.zeros(1, 1, 1, 1)
    fine = torch.ones(1, 1, 2, 2)
    fused, level = fuse([coarse, fine], [torch.full((1, 1, 1), 0.6)])
    assert level.eq(0).all() and fused.eq(0).all()
    fused, level = fuse([coarse, fine], [torch.full((1, 1, 1), 0.4)])
    assert level.eq(1).all() and fused.eq(1).all()
    # Eq. 2's indicator is u >= tau: a probability of exactly tau is a unit cell.
    fused, level = fuse([coarse, fine], [torch.full((1, 1, 1), 0.5)])
    assert level.eq(0).all() and fused.eq(0).all()


def test_the_fuser_names_the_number_of_unity_maps_it_needs():
    levels = [torch.zeros(1, 1, 2**i, 2**i) for i in range(3)]
    with pytest.raises(ValueError, match="^3 semantic levels need 2 unity maps$"):
        fuse(levels, [torch.zeros(1, 1, 1)])
