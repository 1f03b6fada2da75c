"""QGN quadtrees (``leanseg.structures.quadtree``): the rules of QGN eq. 1-3 and Table 5 that the
property tests leave open.

Written against the survivors of mutation testing (``benchmarks/robustness/mutation.py --module
quadtree``); every expected value below is worked out by hand from the definitions.
"""

from __future__ import annotations

import pytest
import torch

from leanseg.structures.quadtree import (
    COMPOSITE,
    LevelStats,
    composite_channel,
    decode,
    encode,
    leaf_level_map,
    leaf_masks,
    level_pixel_counts,
    merge,
    pad_to_multiple,
    t_pyramid,
)

C = COMPOSITE


def _patches(*values):
    """One ``(1, 2, 2)`` map per 4 values, as a batch."""
    return torch.tensor(values).view(-1, 2, 2)


def test_merge_refuses_an_unknown_ignore_mode():
    with pytest.raises(ValueError, match=r"ignore must be one of \('keep', 'wildcard'\), got 'x'"):
        merge(_patches(1, 1, 1, 1), ignore="x")


def test_wildcard_merge_rules():
    """Ignore agrees with any class; two classes, or a composite child, make a composite."""
    patches = _patches(
        [3, 255, 3, 3],  # one class and ignore -> the class
        [1, 2, 255, 255],  # two classes -> composite
        [C, 3, 3, 3],  # a composite child -> composite
        [C, 255, 255, 255],  # a composite child among ignores -> composite, not ignore
        [255, 255, 255, 255],  # all ignore -> ignore
        [0, 0, 0, 0],  # class 0 is a class like the others
    )
    assert merge(patches, ignore="wildcard").flatten().tolist() == [3, C, C, C, 255, 0]


def test_wildcard_merge_reads_the_ignore_value_given():
    patches = _patches([4, 9, 4, 4], [9, 9, 9, 9], [4, 255, 4, 4])
    assert merge(patches, ignore_index=9, ignore="wildcard").flatten().tolist() == [4, 9, C]


def test_keep_merge_compares_all_four_children():
    patches = _patches([2, 2, 2, 5], [2, 2, 5, 2], [2, 5, 2, 2], [5, 2, 2, 2], [7, 7, 7, 7])
    assert merge(patches).flatten().tolist() == [C, C, C, C, 7]


def test_padding_goes_bottom_and_right_with_the_ignore_value():
    label = torch.arange(15).view(1, 3, 5)
    padded = pad_to_multiple(label, 4, ignore_index=9)
    assert padded.shape == (1, 4, 8)
    assert torch.equal(padded[:, :3, :5], label)
    assert padded[:, 3].eq(9).all() and padded[:, :, 5:].eq(9).all()
    assert pad_to_multiple(label, 1) is label
    assert pad_to_multiple(label, 2)[0, 3, 5] == 255  # the ignore value by default
    assert pad_to_multiple(torch.zeros(1, 4, 3), 4).shape == (1, 4, 4)
    assert pad_to_multiple(torch.zeros(1, 3, 4), 4).shape == (1, 4, 4)


def test_t_pyramid_of_a_2d_map_with_the_default_six_levels():
    """QGN uses six levels (T_0 .. T_5); a 2-D map is one image; the levels are int64."""
    label = torch.zeros(40, 72, dtype=torch.uint8)
    pyramid = t_pyramid(label)
    assert len(pyramid) == 6
    assert [tuple(level.shape) for level in pyramid] == [
        (1, 64, 96), (1, 32, 48), (1, 16, 24), (1, 8, 12), (1, 4, 6), (1, 2, 3),
    ]  # fmt: skip
    assert all(level.dtype == torch.int64 for level in pyramid)
    # The padding is ignore (255), so the padded cells are not class 0.
    assert pyramid[0][0, 40:].eq(255).all() and pyramid[0][0, :, 72:].eq(255).all()
    assert pyramid[3][0, 5, 0] == 255  # rows 40-47: padding only
    assert pyramid[5][0, 1, 0] == C  # rows 32-63: class 0 above padding


def test_t_pyramid_pads_with_the_ignore_value_given():
    pyramid = t_pyramid(torch.zeros(1, 3, 3, dtype=torch.long), 2, ignore_index=7)
    assert pyramid[0][0, 3].eq(7).all()
    assert pyramid[1].tolist() == [[[0, C], [C, C]]]


def _two_level_example():
    """4x4: class 1 everywhere but one pixel of class 2 in the top-left 2x2 cell."""
    label = torch.ones(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 2
    return label


def test_quadtree_leaves_of_a_hand_made_map():
    """QGN eq. 1: the leaves are the non-composite cells whose parent is composite (or that are
    on the top level): 4 pixels of the top-left cell, the other three 2x2 cells."""
    label = _two_level_example()
    pyramid = t_pyramid(label, 3)
    masks = leaf_masks(pyramid)
    assert masks[2].tolist() == [[[False]]]  # the top cell is composite
    assert masks[1].tolist() == [[[False, True], [True, True]]]
    assert masks[0].sum() == 4 and masks[0][0, :2, :2].all()
    tree = encode(label[0], 3)
    assert tree.num_levels == 3 and tree.num_leaves() == 7
    assert tree.shape == (1, 4, 4) and tree.padded_shape == (1, 4, 4)
    assert tree.values[1].tolist() == [1, 1, 1]
    assert tree.coords[1].tolist() == [[0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert torch.equal(decode(tree), label)


def test_a_uniform_map_is_one_leaf_on_the_top_level():
    tree = encode(torch.full((1, 4, 4), 3), 3)
    assert tree.num_leaves() == 1 and tree.values[2].tolist() == [3]
    assert tree.coords[0].shape == (0, 3) and tree.coords[1].shape == (0, 3)
    assert decode(tree).eq(3).all()


def test_decode_crops_the_padding():
    label = torch.arange(6).view(1, 2, 3) % 2
    tree = encode(label, 3)
    assert tree.padded_shape == (1, 4, 4)
    assert torch.equal(decode(tree), label)


def test_leaf_level_of_every_pixel():
    label = _two_level_example()
    levels = leaf_level_map(t_pyramid(label, 3))
    expected = torch.ones(1, 4, 4, dtype=torch.long)
    expected[0, :2, :2] = 0
    assert torch.equal(levels, expected)
    assert leaf_level_map(t_pyramid(torch.zeros(1, 4, 4), 3)).eq(2).all()


def test_level_pixel_counts_count_original_pixels_only():
    """Table 5 counts the pixels of the label map: 4 on level 0, 12 on level 1, none above;
    padding is not counted, and a 2-D map is one image."""
    label = _two_level_example()
    assert level_pixel_counts(label, 3).tolist() == [4, 12, 0]
    assert level_pixel_counts(label[0], 3).tolist() == [4, 12, 0]
    # Padded to 4x4: the top-left 2x2 cell is a leaf (4 pixels), the other 5 pixels lie in
    # cells mixed with padding; the 7 padding pixels are not counted.
    small = torch.zeros(3, 3, dtype=torch.long)
    assert level_pixel_counts(small, 3).tolist() == [5, 4, 0]
    # An unlabelled map merges with its padding (255 by default): one leaf on the top level.
    assert level_pixel_counts(torch.full((3, 3), 255), 3).tolist() == [0, 0, 9]
    assert level_pixel_counts(torch.zeros(32, 32)).tolist() == [0, 0, 0, 0, 0, 1024]


def test_level_stats_percentages_and_ratio():
    """Table 5: percentage of pixels per leaf level and the ratio sum_l pct_l / 4^l."""
    stats = LevelStats([4, 12, 0])
    assert stats.percentages == [25.0, 75.0, 0.0]
    assert stats.ratio == pytest.approx(25.0 + 75.0 / 4)
    assert LevelStats([0, 0]).percentages == [0.0, 0.0]
    stats.add(torch.tensor([1, 2, 3]))
    assert stats.counts == [5, 14, 3]


def test_the_composite_channel_follows_the_classes():
    """Classes are channels 0..k-1; the composite is channel k (QGN's 0, moved to the end)."""
    assert composite_channel(19) == 19 and composite_channel(1) == 1


def test_wildcard_mode_reaches_every_level_of_the_pyramid_and_the_tree():
    """``ignore="wildcard"`` (training targets) merges a class with ignore pixels on every level,
    in :func:`t_pyramid` and :func:`encode` alike."""
    label = torch.tensor([[[3, 255, 3, 3], [3, 3, 3, 3], [3, 3, 255, 3], [3, 3, 3, 3]]])
    pyramid = t_pyramid(label, 3, ignore="wildcard")
    assert pyramid[1].tolist() == [[[3, 3], [3, 3]]] and pyramid[2].tolist() == [[[3]]]
    tree = encode(label, 3, ignore="wildcard")
    assert tree.num_leaves() == 1 and tree.values[2].tolist() == [3]
    assert decode(tree).eq(3).all()  # differs from the label only at its ignore pixels
    # "keep": the two 2x2 cells with an ignore pixel split into 8 pixels, 2 cells stay whole.
    assert encode(label, 3).num_leaves() == 8 + 2


def test_encode_defaults_to_six_levels_and_pads_with_255():
    tree = encode(torch.zeros(3, 3, dtype=torch.long))
    assert tree.num_levels == 6 and tree.padded_shape == (1, 32, 32) and tree.shape == (1, 3, 3)
    assert tree.values[4].tolist() == [255, 255, 255]  # the padding-only 16x16 cells
    assert decode(tree).eq(0).all() and decode(tree).shape == (1, 3, 3)


def test_level_counts_in_wildcard_mode():
    label = torch.tensor([[[3, 255, 3, 3], [3, 3, 3, 3], [3, 3, 255, 3], [3, 3, 3, 3]]])
    assert level_pixel_counts(label, 3, ignore="wildcard").tolist() == [0, 0, 16]
    assert level_pixel_counts(label, 3).tolist() == [8, 8, 0]
