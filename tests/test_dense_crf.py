"""The fully connected CRF (thesis §3.4): lattice geometry, filters against brute force,
mean-field behaviour, and the eval / predict options that apply it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from leanseg.cli import main
from leanseg.config import ConfigError, CRFConfig
from leanseg.inference.dense_crf import (
    DenseCRF,
    GaussianSmoothing,
    PermutohedralFilter,
    _simplex_vertices,
    appearance_features,
)
from leanseg.inference.predictor import Predictor
from leanseg.models import load_run_config


def _normalised_gaussian(features: torch.Tensor, values: torch.Tensor, std: float) -> torch.Tensor:
    """D^-1/2 K D^-1/2 values with the exact Gaussian K over every pair (O(N^2))."""
    squared = torch.cdist(features.double(), features.double()) ** 2
    kernel = torch.exp(-squared / (2 * std**2))
    norm = kernel.sum(1, keepdim=True).rsqrt()
    return (norm * (kernel @ (values.double() * norm))).float()


def _three_region_image(height: int = 30, width: int = 40, seed: int = 0) -> tuple:
    """An RGB image (3, H, W) of three flat regions plus noise, and its (H, W) labels."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, height, width)
    labels = torch.zeros(height, width, dtype=torch.long)
    image[:, :, : width // 2] = torch.tensor([200.0, 50, 50]).view(3, 1, 1)
    image[:, :, width // 2 :] = torch.tensor([50.0, 200, 50]).view(3, 1, 1)
    labels[:, width // 2 :] = 1
    rows, cols = slice(height // 3, 2 * height // 3), slice(width // 4, 3 * width // 4)
    image[:, rows, cols] = torch.tensor([60.0, 60, 220]).view(3, 1, 1)
    labels[rows, cols] = 2
    image = (image + 8 * torch.randn(image.shape, generator=generator)).clamp(0, 255)
    return image, labels


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.lists(
            st.floats(-50, 50, allow_nan=False, allow_subnormal=False), min_size=5, max_size=5
        ),
        min_size=1,
        max_size=20,
    )
)
def test_barycentric_weights_are_a_convex_combination_of_the_simplex_vertices(
    points: list[list[float]],
) -> None:
    """Adams et al. 2010: every point lies in its simplex; weights >= 0 summing to 1, and the
    weighted vertices (lifted to d+1 coordinates) give the point's embedding back."""
    features = torch.tensor(points, dtype=torch.float32)
    vertices, weights = _simplex_vertices(features)
    d = features.shape[1]
    assert weights.min() >= -1e-5
    assert torch.allclose(weights.sum(1), torch.ones(len(points)), atol=1e-5)
    # Each vertex is a lattice point: coordinates all congruent mod d+1, summing to zero.
    full = torch.cat([vertices, -vertices.sum(-1, keepdim=True)], dim=-1).double()  # (d+1,N,d+1)
    remainders = torch.remainder(full, d + 1)
    assert (remainders == remainders[..., :1]).all()
    # The weighted vertices reproduce the embedded point.
    index = torch.arange(1, d + 1, dtype=torch.float64)
    scaled = features.double() * (np.sqrt(2 / 3) * (d + 1)) / torch.sqrt(index * (index + 1))
    embedded = torch.zeros(len(points), d + 1, dtype=torch.float64)
    for i in range(d + 1):
        embedded[:, i] = scaled[:, i:].sum(1) - (i * scaled[:, i - 1] if i > 0 else 0)
    rebuilt = (weights.double().T.unsqueeze(-1) * full).sum(0)
    assert torch.allclose(rebuilt, embedded, atol=1e-3 * (1 + embedded.abs().max()))


def test_lattice_filter_approximates_the_unit_gaussian_on_an_image() -> None:
    """Against the exact normalised bilateral filter: closest to standard deviation 1 of the
    features (not a narrower or wider one), and within 5 % of the signal (1.8 % measured)."""
    image, labels = _three_region_image()
    features = appearance_features(image, xy_std=10.0, rgb_std=20.0)
    values = torch.nn.functional.one_hot(labels.flatten(), 3).float()
    values = values + 0.3 * torch.rand(values.shape, generator=torch.Generator().manual_seed(1))
    approximate = PermutohedralFilter(features)(values)
    errors = {}
    for std in (0.6, 1.0, 1.6):
        exact = _normalised_gaussian(features, values, std)
        errors[std] = float((approximate - exact).abs().mean() / exact.abs().mean())
    assert min(errors, key=errors.get) == 1.0, errors
    assert errors[1.0] < 0.05, errors


def test_smoothness_filter_is_exact() -> None:
    height, width, std = 9, 13, 1.5
    values = torch.rand(2, height, width, generator=torch.Generator().manual_seed(0))
    smoothed = GaussianSmoothing(std, height, width, torch.device("cpu"))(values)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    positions = torch.stack([rows, cols], -1).reshape(-1, 2).double()
    difference = (positions[:, None] - positions[None]).abs()
    radius = int(np.ceil(3 * std))
    kernel = torch.exp(-(difference**2).sum(-1) / (2 * std**2))
    kernel = kernel * (difference <= radius).all(-1)  # the separable filter's square window
    norm = kernel.sum(1, keepdim=True).rsqrt()
    flat = values.reshape(2, -1).T.double()
    expected = (norm * (kernel @ (flat * norm))).T.reshape(2, height, width)
    assert torch.allclose(smoothed.double(), expected, atol=1e-5)


def test_mean_field_cleans_noisy_unaries_along_colour_edges() -> None:
    image, labels = _three_region_image(60, 80)
    generator = torch.Generator().manual_seed(2)
    logits = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float()
    logits = logits + torch.randn(logits.shape, generator=generator)
    probabilities = logits.softmax(0)
    before = (probabilities.argmax(0) == labels).float().mean()
    refined = DenseCRF()(probabilities, image)
    after = (refined.argmax(0) == labels).float().mean()
    assert before < 0.75 and after > 0.97, (before, after)
    assert torch.allclose(refined.sum(0), torch.ones(60, 80), atol=1e-5) and refined.min() >= 0
    # Zero iterations leave the probabilities as they are (renormalised).
    unchanged = DenseCRF(CRFConfig(iterations=0))(probabilities, image)
    assert torch.allclose(unchanged, probabilities, atol=1e-6)
    # Without pairwise weights, mean field keeps the unaries' decisions.
    alone = CRFConfig(appearance_weight=0.0, smoothness_weight=0.0)
    assert torch.equal(DenseCRF(alone)(probabilities, image).argmax(0), probabilities.argmax(0))


def test_refine_batch_recovers_colours_from_normalised_images() -> None:
    image, labels = _three_region_image()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalised = (image / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    probabilities = torch.rand(3, *labels.shape, generator=torch.Generator().manual_seed(3))
    probabilities = probabilities / probabilities.sum(0)
    crf = DenseCRF(image_statistics=(mean, std))
    batch = crf.refine_batch(
        probabilities[None].repeat(2, 1, 1, 1), normalised[None].repeat(2, 1, 1, 1)
    )
    assert torch.allclose(batch[0], crf(probabilities, image), atol=1e-5)
    assert torch.allclose(batch[0], batch[1])
    with pytest.raises(ValueError, match="image_statistics"):
        DenseCRF().refine_batch(probabilities[None], normalised[None])
    with pytest.raises(ValueError, match=r"\(3, 30, 40\)"):
        crf(probabilities, image[:, :20])


def test_config_checks_the_crf_parameters(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "configs/lite0/ladder_camvid.yaml"
    cfg = load_run_config(config, ["eval.crf={}"])
    assert cfg.eval.crf == CRFConfig()
    with pytest.raises(ConfigError, match=r"eval\.crf\.appearance_rgb.*got 0"):
        load_run_config(config, ["eval.crf={appearance_rgb: 0}"])
    assert load_run_config(config).eval.crf is None


def test_eval_and_predict_take_the_crf(tiny_ladder_checkpoint: Path, tmp_path: Path) -> None:
    plain, refined = tmp_path / "plain.json", tmp_path / "crf.json"
    common = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--max-images", "2"]
    assert main([*common, "--json", str(plain)]) == 0
    assert main([*common, "--crf", "--json", str(refined)]) == 0
    # The CRF changes this untrained model's noisy label maps, so the confusion differs.
    assert json.loads(plain.read_text())["miou"] != json.loads(refined.read_text())["miou"]

    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(array).save(folder / "a.png")
    out_plain, out_crf = tmp_path / "out_plain", tmp_path / "out_crf"
    predict = [
        "predict",
        "--checkpoint",
        str(tiny_ladder_checkpoint),
        str(folder),
        "--device",
        "cpu",
    ]
    assert main([*predict, "--out", str(out_plain)]) == 0
    assert main([*predict, "--out", str(out_crf), "--crf"]) == 0
    predictor = Predictor.from_checkpoint(tiny_ladder_checkpoint, crf=CRFConfig())
    expected = predictor.predict(array)
    assert np.array_equal(np.array(Image.open(out_crf / "a.png")), expected)
    assert not np.array_equal(
        np.array(Image.open(out_plain / "a.png")), np.array(Image.open(out_crf / "a.png"))
    )
