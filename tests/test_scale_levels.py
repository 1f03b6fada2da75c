"""``leanseg predict`` with disparity, and the selected-level maps of thesis Fig. 3.2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.cli import main
from leanseg.inference.predictor import Predictor
from leanseg.inference.scale_levels import level_colours, level_output_names
from tiny_models import save_random_checkpoint

HEIGHT, WIDTH, SPLIT = 64, 96, 48  # the disparity changes at a column every grid divides
BASELINE = 0.2
DISPARITY = 7.0  # pixels, left of SPLIT; 0 (unknown) right of it


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ScaleInvariant model (ResNet-18, 3 levels) saved as a run's checkpoint."""
    folder = tmp_path_factory.mktemp("depth_run")
    raw = {
        "model": {
            "backbone": {"name": "resnet18"},
            "head": {"name": "scale_invariant", "hidden_channels": 8, "num_levels": 3},
        },
        "data": {"dataset": "synthetic", "options": {"num_samples": 2, "size": [64, 96]}},
        "work_dir": str(folder),
    }
    return save_random_checkpoint(raw, folder / "last.pt")


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """``images/street.png`` and ``disparity/street_disparity.png`` (16-bit, d = (p - 1) / 256)."""
    images, disparity = tmp_path / "images", tmp_path / "disparity"
    images.mkdir()
    disparity.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "street.png")
    encoded = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    encoded[:, :SPLIT] = int(DISPARITY * 256) + 1
    Image.fromarray(encoded).save(disparity / "street_disparity.png")
    return images, disparity, rgb


def _expected_levels(multiplexer: torch.nn.Module) -> list[np.ndarray]:
    """Eq. 3.2 by hand: the level whose alpha^l is closest to s = d W_R / (b w_rf)."""
    factors = multiplexer.alpha ** np.arange(multiplexer.num_levels)
    maps = []
    for scale, fallback in zip(
        multiplexer.reference_scales, multiplexer.fallback_levels, strict=True
    ):
        s = DISPARITY * scale / (BASELINE * multiplexer.receptive_field)
        levels = np.full((HEIGHT, WIDTH), fallback, dtype=np.uint8)
        levels[:, :SPLIT] = np.abs(factors - s).argmin()
        maps.append(levels)
    return maps


def test_predict_writes_labels_and_level_maps_of_a_depth_model(
    depth_run: Path, scene: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    images, disparity, rgb = scene
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(depth_run), str(images), "--out", str(out)]
    depth = ["--disparity", str(disparity), "--stereo-baseline", str(BASELINE)]
    assert main([*argv, *depth, "--scale-levels", "--device", "cpu"]) == 0

    predictor = Predictor.from_checkpoint(depth_run)
    multiplexer = predictor.model.multiplexer
    expected = _expected_levels(multiplexer)
    assert len({int(m[0, 0]) for m in expected}) > 1  # the scales choose different levels here
    colours = level_colours(multiplexer.num_levels)
    assert len({tuple(c) for c in colours.tolist()}) == multiplexer.num_levels  # tells levels apart
    names = level_output_names("street", multiplexer.reference_scales)
    assert names == ["street_levels_1m.png", "street_levels_4m.png", "street_levels_7m.png"]
    for name, levels in zip(names, expected, strict=True):
        written = np.array(Image.open(out / name))
        assert np.array_equal(written, colours[levels]), name

    disparity_map = np.zeros((1, HEIGHT, WIDTH), dtype=np.float32)
    disparity_map[:, :, :SPLIT] = DISPARITY
    inputs = {
        "disparity": torch.from_numpy(disparity_map),
        "stereo_baseline": torch.tensor([BASELINE]),
    }
    labels = np.array(Image.open(out / "street.png").convert("P"))
    assert np.array_equal(labels, predictor.predict(rgb, inputs))


def test_depth_inputs_are_asked_for_and_checked(
    depth_run: Path,
    tiny_ladder_checkpoint: Path,
    scene: tuple[Path, Path, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, disparity, _ = scene

    def error(checkpoint: Path, *flags: str) -> str:
        out = tmp_path / f"out{len(capsys.readouterr().err)}"
        argv = ["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(out)]
        assert main([*argv, "--device", "cpu", *flags]) == 2
        assert not out.exists()  # nothing written
        return capsys.readouterr().err

    assert "give --disparity DIR and --stereo-baseline" in error(depth_run)
    assert "--scale-levels: the model does not choose" in error(
        tiny_ladder_checkpoint, "--scale-levels"
    )
    assert "--disparity: this model does not read disparity" in error(
        tiny_ladder_checkpoint, "--disparity", str(disparity)
    )
    assert "--stereo-baseline: this model does not read disparity" in error(
        tiny_ladder_checkpoint, "--stereo-baseline", "0.2"
    )
    (disparity / "street_disparity.png").unlink()
    message = error(depth_run, "--disparity", str(disparity), "--stereo-baseline", "0.2")
    assert "street_disparity.png" in message and "street.png" in message
    Image.fromarray(np.ones((8, 8), dtype=np.uint16)).save(disparity / "street.png")
    message = error(depth_run, "--disparity", str(disparity), "--stereo-baseline", "0.2")
    assert "disparity size 8x8 differs" in message


def test_bench_measures_a_depth_model_with_neutral_disparity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``leanseg bench`` feeds depth-guided models example disparity shaped like each batch, so
    inference options still apply; a size too small for the pyramid is refused by flag."""
    import yaml

    config = tmp_path / "depth.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "backbone": {"name": "resnet18"},
                    "head": {"name": "scale_invariant", "hidden_channels": 8, "num_levels": 3},
                },
                "data": {"dataset": "synthetic"},
            }
        )
    )
    out = tmp_path / "bench.json"
    argv = ["bench", str(config), "--warmup", "0", "--repeats", "1", "--json", str(out)]
    assert main([*argv, "--size", "128x192"]) == 0
    figures = json.loads(out.read_text())
    assert figures["flops"] > 0 and figures["inference"]["fold_bn"] is True
    assert figures["inference"]["notes"] == []
    capsys.readouterr()
    assert main([*argv, "--force", "--size", "32x48"]) == 2
    assert "--size 32x48" in capsys.readouterr().err  # refused by the flag that set it
