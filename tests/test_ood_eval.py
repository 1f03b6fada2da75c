"""Image-level OOD separation in ``leanseg eval`` (``leanseg.evaluation.ood``, thesis 5.3.3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.cli import main
from leanseg.evaluation.ood import image_scores, ood_separation


def _fake_scores(image: np.ndarray) -> torch.Tensor:
    """Bright images: confident class 0 (in-domain); dark ones: unsure, leaning to class 2."""
    height, width = image.shape[:2]
    if image.mean() > 127:
        probabilities = torch.tensor([0.9, 0.05, 0.05])
    else:
        probabilities = torch.tensor([0.3, 0.3, 0.4])
    return probabilities.view(3, 1, 1).expand(3, height, width).clone()


def test_separation_of_well_and_badly_separated_sets() -> None:
    bright = [np.full((4, 6, 3), 200 + i, dtype=np.uint8) for i in range(3)]
    dark = [np.full((4, 6, 3), 20 + i, dtype=np.uint8) for i in range(2)]
    result = ood_separation(_fake_scores, bright, dark, native=[0, 1])
    assert (result.in_images, result.out_images) == (3, 2)
    assert result.auroc == {"max_softmax": 1.0, "foreign_flag": 1.0, "foreign_mass": 1.0}
    # The same images on both sides cannot be told apart; swapped sides give 0.
    assert ood_separation(_fake_scores, bright, bright).auroc == {"max_softmax": 0.5}
    assert ood_separation(_fake_scores, dark, bright).auroc["max_softmax"] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        ood_separation(_fake_scores, bright, [])


def test_image_scores_are_means_over_pixels() -> None:
    probabilities = torch.zeros(3, 2, 2)
    probabilities[0, 0] = 1.0  # top row: class 0, certain
    probabilities[2, 1, 0] = 1.0  # bottom left: class 2, foreign to [0, 1], certain
    probabilities[:, 1, 1] = torch.tensor([0.2, 0.2, 0.6])  # bottom right: class 2, unsure
    scores = image_scores(probabilities, native=[0, 1])
    # Per pixel: 1 - max p = (0, 0, 0, 0.4); foreign = (0, 0, 1, 1); foreign mass (0, 0, 1, 0.6).
    assert scores == pytest.approx({"max_softmax": 0.1, "foreign_flag": 0.5, "foreign_mass": 0.4})


def test_eval_reports_ood_auroc_and_names_bad_flags(
    tiny_ladder_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ood"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    out = tmp_path / "scores.json"
    argv = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--json", str(out)]
    assert main([*argv, "--ood-images", str(folder)]) == 0
    ood = json.loads(out.read_text())["ood"]
    assert ood["in_images"] == 2 and ood["out_images"] == 3  # eval.max_images is 2
    assert list(ood["auroc"]) == ["max_softmax"] and 0.0 <= ood["auroc"]["max_softmax"] <= 1.0
    line = f"OOD image AUROC (2 in-domain, 3 OOD): max_softmax {ood['auroc']['max_softmax']:.3f}"
    assert line in capsys.readouterr().out

    argv.append("--force")  # the result above exists: the checks below must reach the flags
    assert main([*argv, "--ood-images", str(tmp_path / "missing")]) == 2
    assert "--ood-images: image not found" in capsys.readouterr().err
    assert main([*argv, "--ood-images", str(folder), "--ood-domain", "street"]) == 2
    assert "--ood-domain: the model was trained on one dataset" in capsys.readouterr().err
