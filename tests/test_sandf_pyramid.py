"""S&F pyramidal ground truth, relabelling and fuser (leanseg.structures.pyramid)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.structures.pyramid import (
    fuse,
    level_strides,
    pyramid_targets,
    relabel,
    upsample_nearest,
)

IGNORE = 255


def _blocky_label(seed: int, size: int = 32, num_classes: int = 4, ignore: bool = False):
    """A label map with structure at every scale: coarse blocks, finer blocks and noise."""
    g = torch.Generator().manual_seed(seed)
    label = upsample_nearest(
        torch.randint(0, num_classes, (1, size // 16, size // 16), generator=g), 16
    )
    for block in (8, 4, 2, 1):
        patch = upsample_nearest(
            torch.randint(0, num_classes, (1, size // block, size // block), generator=g), block
        )
        keep = upsample_nearest(
            torch.rand(1, size // block, size // block, generator=g) < 0.15, block
        )
        label = torch.where(keep, patch, label)
    if ignore:
        label = label.masked_fill(torch.rand(label.shape, generator=g) < 0.05, IGNORE)
    return label


def test_strides_halve_per_level():
    assert level_strides(4, 4) == [32, 16, 8, 4]


def test_targets_on_a_hand_made_map():
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 2], [3, 3, 3, 3], [3, 3, 3, IGNORE]])[None]
    t = pyramid_targets(label, num_levels=3, finest_stride=1)
    assert t.strides == [4, 2, 1]
    assert t.semantic[0].tolist() == [[[IGNORE]]]  # mixed cell: don't care
    assert t.unity[0].tolist() == [[[0]]]
    assert t.semantic[1].tolist() == [[[0, IGNORE], [3, 3]]]
    # Bottom-right cell: its labelled pixels agree (3) but one is ignored -> U don't care.
    assert t.unity[1].tolist() == [[[1, 0], [1, IGNORE]]]
    assert torch.equal(t.semantic[2], label)


def test_all_ignored_cell_is_dont_care_everywhere():
    label = torch.full((1, 4, 4), IGNORE)
    t = pyramid_targets(label, num_levels=2, finest_stride=2)
    assert (t.semantic[0] == IGNORE).all() and (t.unity[0] == IGNORE).all()
    assert (t.semantic[1] == IGNORE).all()


def test_finest_level_is_the_majority_of_its_cell():
    label = torch.tensor([[1, 1, 2, IGNORE], [1, 0, IGNORE, IGNORE]])[None]
    t = pyramid_targets(label, num_levels=1, finest_stride=2)
    assert t.semantic[0].tolist() == [[[1, IGNORE]]]


def test_gt_and_tp_relabelling():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 1  # top-left coarse cell at level 2 is mixed, the other three are unit
    t = pyramid_targets(label, num_levels=3, finest_stride=1)
    assert t.unity[0].tolist() == [[[0]]] and t.unity[1].tolist() == [[[0, 1], [1, 1]]]
    gt = relabel(t, None, mode="gt")
    assert gt.semantic[2][0, :2, :2].ne(IGNORE).all() and gt.semantic[2][0, 2:].eq(IGNORE).all()
    assert gt.semantic[1].tolist() == t.semantic[1].tolist()  # the unit cells stay supervised
    # Predicted unity: level-2 top-right cell missed (false negative) -> its children stay.
    probs = [torch.zeros(1, 1, 1), torch.tensor([[[0.9, 0.2], [0.8, 0.7]]])]
    tp = relabel(t, probs, mode="tp", tau=0.5)
    assert tp.semantic[2][0, :2, 2:].ne(IGNORE).all()
    assert tp.semantic[2][0, 2:].eq(IGNORE).all()
    assert relabel(t, probs, mode="raw") is t


def test_tp_relabelling_marks_unity_of_descendants():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    t = pyramid_targets(label, num_levels=3, finest_stride=2)
    tp = relabel(t, [torch.ones(1, 1, 1), torch.ones(1, 2, 2)], mode="tp")
    assert tp.unity[0].eq(1).all() and tp.unity[1].eq(IGNORE).all()
    assert tp.semantic[0].eq(0).all()
    assert len(tp.semantic) == 3
    assert all(finer.eq(IGNORE).all() for finer in tp.semantic[1:])  # every finer level
    assert all(finer.eq(IGNORE).all() for finer in tp.unity[1:])


def test_tp_relabelling_keeps_the_descendants_of_missed_and_mixed_cells():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[:, :4, :4] = 1  # the root cell is mixed; its four children are unit cells
    t = pyramid_targets(label, num_levels=3, finest_stride=2)
    # The root is predicted unit (a false positive); child (0, 1) is missed.
    children = torch.tensor([[[0.9, 0.1], [0.9, 0.9]]])
    tp = relabel(t, [torch.ones(1, 1, 1), children], mode="tp")
    assert tp.semantic[1].ne(IGNORE).all()  # a mixed root is not a true positive
    finest = tp.semantic[2][0]  # 4x4 cells of stride 2, 2x2 under each child
    missed = torch.zeros(4, 4, dtype=torch.bool)
    missed[:2, 2:] = True
    assert finest[missed].eq(0).all()  # under the missed child: the labels stay
    assert finest[~missed].eq(IGNORE).all()  # under the three true positives: don't care


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_levels=st.integers(1, 4),
    tau=st.floats(0.05, 0.95),
)
def test_fuser_serves_every_cell_from_exactly_one_level(seed, num_levels, tau):
    g = torch.Generator().manual_seed(seed)
    sizes = [2 * 2**i for i in range(num_levels)]
    semantic = [torch.randn(2, 3, s, s + s // 2 * 2, generator=g) for s in sizes]
    unity = [torch.rand(2, s, s + s // 2 * 2, generator=g) for s in sizes[:-1]]
    fused, level = fuse(semantic, unity, tau)
    assert level.shape == fused[:, 0].shape and level.min() >= 0 and level.max() < num_levels
    # Eq. 2 term by term: exactly one indicator product is 1 at every finest cell.
    served = torch.zeros_like(level)
    mixed_so_far = torch.ones_like(level, dtype=torch.bool)
    for i in range(num_levels):
        factor = 2 ** (num_levels - 1 - i)
        unit = upsample_nearest(unity[i] >= tau, factor) if i < num_levels - 1 else True
        term = mixed_so_far & unit
        served += term.long()
        assert torch.equal(term, level == i)
        assert torch.equal(
            torch.where(term.unsqueeze(1), fused, 0),
            torch.where(term.unsqueeze(1), upsample_nearest(semantic[i], factor), 0),
        )
        mixed_so_far = mixed_so_far & ~unit if i < num_levels - 1 else mixed_so_far
    assert served.eq(1).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), num_levels=st.integers(1, 5), ignore=st.booleans())
def test_ground_truth_pyramids_reconstruct_the_label_map(seed, num_levels, ignore):
    label = _blocky_label(seed, ignore=ignore)
    t = pyramid_targets(label, num_levels=num_levels, finest_stride=1)
    semantic = [y.unsqueeze(1) for y in t.semantic]
    unity = [(u == 1).float() for u in t.unity]
    fused, level = fuse(semantic, unity, tau=0.5)
    labelled = label != IGNORE
    assert torch.equal(fused[:, 0][labelled], label[labelled])
    if num_levels > 1 and not ignore:
        assert (level < num_levels - 1).any()  # coarser levels do serve pixels


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_reconstruction_with_a_coarser_finest_level(seed):
    label = _blocky_label(seed)
    t = pyramid_targets(label, num_levels=3, finest_stride=2)
    fused, _ = fuse([y.unsqueeze(1) for y in t.semantic], [(u == 1).float() for u in t.unity])
    full = upsample_nearest(fused[:, 0], 2)
    # Exact wherever the pixel's finest (2x2) cell is pure.
    cells = torch.nn.functional.pixel_unshuffle(label[:, None].float(), 2)
    pure = upsample_nearest((cells.amax(1) == cells.amin(1)), 2)
    assert torch.equal(full[pure], label[pure])
