"""Foreign-class OOD maps, the max-softmax baseline, AUROC and the predict files (thesis 5.3.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.config import ConfigError, config_from_dict
from leanseg.inference.ood_maps import domain_classes, ood_output_names, write_ood_maps
from leanseg.metrics.ood import auroc, average_ranks, foreign_map, image_score, max_softmax_score

# Three union classes; the domain knows 0 and 1, class 2 is foreign. (C, H, W) = (3, 1, 3)
PROBS = torch.tensor(
    [
        [[0.7, 0.2, 0.1]],
        [[0.2, 0.3, 0.1]],
        [[0.1, 0.5, 0.8]],
    ]
)


def test_foreign_flag_and_mass() -> None:
    maps = foreign_map(PROBS, [0, 1])
    assert maps.foreign.tolist() == [[False, True, True]]
    assert torch.allclose(maps.mass, torch.tensor([[0.1, 0.5, 0.8]]))
    batched = foreign_map(PROBS.unsqueeze(0).repeat(2, 1, 1, 1), [0, 1])
    assert batched.foreign.shape == (2, 1, 3) and batched.mass.shape == (2, 1, 3)
    # Foreign argmax needs no majority: 0.5 of class 2 vs 0.3 + 0.2 native
    assert foreign_map(PROBS, [2]).foreign.tolist() == [[True, False, False]]
    with pytest.raises(ValueError, match="outside 0..2"):
        foreign_map(PROBS, [0, 3])
    with pytest.raises(ValueError, match="at least one class"):
        foreign_map(PROBS, [])


def test_max_softmax_and_image_score() -> None:
    score = max_softmax_score(PROBS)
    assert torch.allclose(score, torch.tensor([[0.3, 0.5, 0.2]]))
    assert image_score(score) == pytest.approx(1.0 / 3)
    assert image_score(foreign_map(PROBS, [0, 1]).foreign) == pytest.approx(2.0 / 3)


def test_auroc_known_values() -> None:
    assert auroc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([1, 2], [2, 3]) == pytest.approx(3.5 / 4)  # one tie counts one half
    assert auroc([0, 0, 0], [0, 0]) == pytest.approx(0.5)  # all tied
    assert auroc([1, 2, 3], [1, 2, 3]) == pytest.approx(0.5)  # identical distributions
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0
    assert auroc(torch.tensor([0.2]), torch.tensor([[0.1, 0.3]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan], [1.0])


def test_auroc_equals_pair_counting_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300)
    b = rng.integers(1, 6, 200)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert auroc(a, b) == pytest.approx(pairs, abs=1e-12)
    same = rng.normal(size=20000)
    assert auroc(same[:10000], same[10000:]) == pytest.approx(0.5, abs=0.02)
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_write_ood_maps(tmp_path: Path) -> None:
    maps = write_ood_maps(PROBS, [0, 1], tmp_path / "out", "frame")
    flag, mass = (tmp_path / "out" / name for name in ood_output_names("frame"))
    assert np.array(Image.open(flag)).tolist() == [[0, 255, 255]]
    assert np.array(Image.open(mass)).tolist() == [[26, 128, 204]]  # round(255 * mass)
    assert maps.foreign.tolist() == [[False, True, True]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([flag.name, mass.name])


def test_domain_classes_of_a_union(tmp_path: Path) -> None:
    data = {
        "datasets": [
            {"dataset": "camvid", "root": str(tmp_path)},
            {
                "dataset": "folder",
                "name": "em",
                "root": str(tmp_path),
                "classes": ["membrane", "cell"],
            },
        ]
    }
    cfg = config_from_dict({"data": data})
    assert domain_classes(cfg.data, "camvid") == list(range(11))
    assert domain_classes(cfg.data, "em") == [11, 12]
    with pytest.raises(ConfigError, match="no dataset 'kitti'.*camvid, em"):
        domain_classes(cfg.data, "kitti")
    with pytest.raises(ConfigError, match="trained on one dataset"):
        domain_classes(config_from_dict({"data": {"dataset": "camvid"}}).data, "camvid")
