"""QGN quadtree / T-pyramid structures: merge (eq. 2-3), lossless encode/decode, Table 5 stats."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leanseg.structures.quadtree import (
    COMPOSITE,
    LevelStats,
    decode,
    encode,
    level_pixel_counts,
    merge,
    t_pyramid,
)


@st.composite
def label_maps(draw):
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))
    block = draw(st.sampled_from([1, 2, 4, 8]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    # Blocky maps so that merges actually happen; some pixels ignored.
    coarse = torch.randint(0, k, (b, -(-h // block), -(-w // block)), generator=g)
    label = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]
    ignore = torch.rand(label.shape, generator=g) < draw(st.sampled_from([0.0, 0.05, 0.5]))
    return torch.where(ignore, torch.full_like(label, 255), label)


@settings(max_examples=60, deadline=None)
@given(label_maps(), st.integers(1, 6))
def test_keep_mode_is_exactly_lossless(label, num_levels):
    tree = encode(label, num_levels)
    assert torch.equal(decode(tree), label)
    # Leaves cover every padded pixel exactly once.
    area = sum(c.shape[0] * 4**lvl for lvl, c in enumerate(tree.coords))
    assert area == tree.padded_shape[0] * tree.padded_shape[1] * tree.padded_shape[2]


@settings(max_examples=60, deadline=None)
@given(label_maps())
def test_wildcard_mode_differs_only_at_ignore(label):
    decoded = decode(encode(label, 6, ignore="wildcard"))
    valid = label != 255
    assert torch.equal(decoded[valid], label[valid])


@settings(max_examples=40, deadline=None)
@given(label_maps())
def test_pyramid_cells_are_uniform_or_composite(label):
    pyramid = t_pyramid(label, 4)
    for lvl, level in enumerate(pyramid):
        s = 2**lvl
        children = pyramid[0].unfold(1, s, s).unfold(2, s, s).reshape(*level.shape, -1)
        uniform = (children == children[..., :1]).all(-1)
        assert torch.equal(level != COMPOSITE, uniform)
        assert torch.equal(level[uniform], children[..., 0][uniform])


@settings(max_examples=40, deadline=None)
@given(label_maps())
def test_level_counts_sum_to_pixels(label):
    counts = level_pixel_counts(label)
    assert int(counts.sum()) == label.numel()


def test_merge_eq2_and_ratio_matches_paper_row():
    patch = torch.tensor([[[3, 3], [3, 3]], [[3, 3], [3, 1]]])
    assert merge(patch).tolist() == [[[3]], [[COMPOSITE]]]
    wild = torch.tensor([[[3, 255], [3, 3]], [[255, 255], [255, 255]]])
    assert merge(wild, ignore="wildcard").tolist() == [[[3]], [[255]]]
    assert merge(wild).tolist() == [[[COMPOSITE]], [[255]]]
    # QGN Table 5, Cityscapes train: Q0..Q5 percentages give the 3.07 % ratio.
    pct = [1.70, 3.02, 5.52, 9.18, 14.21, 66.34]
    stats = LevelStats([int(p * 100) for p in pct])
    assert abs(stats.ratio - 3.07) < 0.01


def test_cli_quadtree_stats_synthetic(tmp_path, capsys):
    import json

    from leanseg.cli import main

    config = tmp_path / "syn.yaml"
    config.write_text(
        "model:\n  backbone: {name: resnet18}\n  head: {name: qgn}\n"
        "data:\n  dataset: synthetic\n  options: {num_samples: 2, size: [64, 96], seed: 0}\n"
    )
    out = tmp_path / "stats.json"
    assert main(["quadtree", "stats", str(config), "--split", "val", "--json", str(out)]) == 0
    assert "Q5" in capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][0]
    assert abs(sum(row[f"Q{lvl}"] for lvl in range(6)) - 100) < 1e-6
