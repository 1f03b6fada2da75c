"""onnxruntime as an execution backend (issue 16): ``InferenceOptions(backend="onnxruntime")``.

The model is exported in-process, verified against PyTorch and run by onnxruntime behind the
same call as the PyTorch model, so ``Predictor``, ``leanseg predict`` / ``eval`` / ``bench`` and
tiled inference use it unchanged. Tiny random models, CPU only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("onnx", reason="the onnxruntime backend needs leanseg[export]")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs leanseg[export]")

from leanseg.cli import main  # noqa: E402
from leanseg.export import ExportError, OnnxRuntimeModel, export_onnx  # noqa: E402
from leanseg.inference.predictor import Predictor, predict_scores  # noqa: E402
from leanseg.inference.speed import (  # noqa: E402
    InferenceOptionError,
    InferenceOptions,
    InferenceRunner,
    prepare_model,
)
from leanseg.models import create_model  # noqa: E402
from leanseg.nn.backbones.base import IMAGENET_NORMALIZATION  # noqa: E402

ONNXRUNTIME = InferenceOptions(backend="onnxruntime")


def _model(head: str = "ladder") -> nn.Module:
    torch.manual_seed(0)
    model = create_model(head, "resnet18", num_classes=5)
    with torch.no_grad():  # BN statistics away from (0, 1), so folding does something
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_prepared_model_runs_in_onnxruntime_and_matches_pytorch() -> None:
    model = _model()
    prepared = prepare_model(model, ONNXRUNTIME, device="cpu")
    assert isinstance(prepared.model, OnnxRuntimeModel)
    assert prepared.options.backend == "onnxruntime" and prepared.options.fold_bn
    assert not prepared.options.channels_last and prepared.notes == ()
    assert prepared.model.size_divisor == model.size_divisor
    assert prepared.model.num_classes == 5
    images = torch.randn(2, 3, 70, 90)  # padded inside the graph, batch 2
    with torch.no_grad():
        expected = model(images)
    got = InferenceRunner(prepared.model, prepared.options)(images)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-3)


def test_tiles_multi_scale_and_flip_work_through_onnxruntime() -> None:
    model = _model("bilinear")
    runtime = prepare_model(model, ONNXRUNTIME, device="cpu").model
    images = torch.randn(1, 3, 96, 160)
    settings = {"scales": (1.0, 0.75), "flip": True, "tile": (64, 96), "overlap": 32}
    expected = predict_scores(model, images, **settings)
    got = predict_scores(runtime, images, **settings)
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_model_that_does_not_export_runs_in_pytorch_with_a_note() -> None:
    torch.manual_seed(0)
    model = create_model(
        "qgn",
        "resnet18",
        num_classes=5,
        backbone_options={"stem_features": True},
        head_options={"in_channels": 128},  # QGN's own width, not the image channels
        decoder_channels=[16, 16, 16, 16, 16],
        decoder_units=[1, 1, 1, 1, 1],
    ).eval()
    prepared = prepare_model(model, ONNXRUNTIME, device="cpu")
    assert not isinstance(prepared.model, OnnxRuntimeModel)
    assert prepared.options.backend == "torch"
    assert any("onnxruntime not used" in note and "sparse" in note for note in prepared.notes)


def test_options_that_do_not_apply_to_onnxruntime_are_refused() -> None:
    with pytest.raises(InferenceOptionError, match="dtype bf16"):
        InferenceOptions(backend="onnxruntime", dtype="bf16")
    with pytest.raises(InferenceOptionError, match="torch.compile"):
        InferenceOptions(backend="onnxruntime", compile=True)
    with pytest.raises(InferenceOptionError, match="unknown inference backend 'tensorrt'"):
        InferenceOptions(backend="tensorrt")
    with pytest.raises(InferenceOptionError, match="runs on the CPU"):
        prepare_model(_model(), ONNXRUNTIME, device="cuda")  # refused before any CUDA call


def test_a_graph_with_normalisation_inside_is_not_taken_for_the_model(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(
        _model("bilinear"), path, normalization=IMAGENET_NORMALIZATION, include_normalization=True
    )
    with pytest.raises(ExportError, match="normalises its input itself"):
        OnnxRuntimeModel(path)


def test_predictor_and_commands_take_the_backend(
    tiny_ladder_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every onnxruntime pass is counted: the same labels could come from PyTorch.
    passes = []
    run_in_onnxruntime = OnnxRuntimeModel.forward

    def counted(self: OnnxRuntimeModel, images: torch.Tensor) -> torch.Tensor:
        passes.append(tuple(images.shape))
        return run_in_onnxruntime(self, images)

    monkeypatch.setattr(OnnxRuntimeModel, "forward", counted)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)
    torch_labels = Predictor.from_checkpoint(tiny_ladder_checkpoint).predict(image)
    assert passes == []
    predictor = Predictor.from_checkpoint(tiny_ladder_checkpoint, options=ONNXRUNTIME)
    assert predictor.options.backend == "onnxruntime"
    # Same scores up to float rounding; a near tie of this untrained model may flip a pixel.
    assert (predictor.predict(image) != torch_labels).mean() <= 0.01
    assert len(passes) == 1

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(tiny_ladder_checkpoint), str(folder), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--backend", "onnxruntime"]) == 0
    assert (np.asarray(Image.open(out / "a.png")) != torch_labels).mean() <= 0.01
    assert len(passes) == 2

    scores = tmp_path / "scores.json"
    eval_args = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--json", str(scores)]
    assert main([*eval_args, "--backend", "onnxruntime"]) == 0
    assert json.loads(scores.read_text())["inference"]["backend"] == "onnxruntime"
    assert len(passes) > 2

    capsys.readouterr()
    assert main([*eval_args, "--force", "--backend", "onnxruntime", "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "--backend onnxruntime" in err and "bf16" in err and len(err.splitlines()) == 1
