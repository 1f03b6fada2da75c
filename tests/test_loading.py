"""One loader of a trained model: run directory, checkpoint, or config file and checkpoint.

``leanseg eval``, ``Predictor.from_checkpoint`` (``leanseg predict``) and the benchmark that
evaluates a run (``benchmarks/papers/qgn_eval_grid.py``) must rebuild the same model with the same
weights from one tiny trained run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from leanseg.cli import main
from leanseg.config import ConfigError
from leanseg.files.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from leanseg.inference.loading import load_trained_model
from leanseg.inference.predictor import Predictor
from leanseg.models import load_run_config
from leanseg.training.trainer import Trainer

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = [
    "model.backbone.name=resnet18",
    "model.head.name=bilinear",
    "data.dataset=synthetic",
    "data.options={num_samples: 2, size: [64, 96], seed: 0}",
    "data.crop_size=[64, 96]",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_iters=2",
    "train.eval_interval=2",
    "train.checkpoint_interval=2",
    "train.num_threads=1",
    "eval.max_images=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run of two iterations; its config then names an ImageNet file that does not exist."""
    root = tmp_path_factory.mktemp("loading") / "run"
    Trainer.from_config(
        load_run_config(None, [*TINY, f"work_dir={root}"]), show_progress=False
    ).train()
    config = root / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["model"]["backbone"]["pretrained"] = str(root / "absent-imagenet.pth")
    config.write_text(yaml.safe_dump(raw))
    return root


def _benchmark(name: str, monkeypatch):
    """A paper benchmark script as a module; its folder is on the path, as when it runs."""
    monkeypatch.syspath_prepend(str(BENCHMARKS / "papers"))
    return importlib.import_module(name)


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    images = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(images)


def test_eval_predict_and_benchmark_load_the_same_model(run, monkeypatch):
    last = run / "checkpoints" / "last.pt"
    stored = load_checkpoint(last)["model"]

    from leanseg.evaluation import evaluator

    evaluated = []
    original = evaluator.evaluate

    def capture(model, *args, **kwargs):
        evaluated.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate", capture)
    assert main(["eval", str(run), "--checkpoint", str(last), "--device", "cpu"]) == 0
    models = {
        "eval": evaluated[0],
        "predict": Predictor.from_checkpoint(last).model,
        "qgn_eval_grid": _benchmark("qgn_eval_grid", monkeypatch).load_run(run).model,
        "config file": load_trained_model(run / "config.yaml", last).model,
    }
    reference = _outputs(models["predict"])
    for name, model in models.items():
        state = model.state_dict()
        assert state.keys() == stored.keys(), name
        for key, value in stored.items():
            assert torch.equal(state[key], value), f"{name}: {key}"
        assert torch.equal(_outputs(model), reference), name


def test_sources_resolve_to_their_config_and_checkpoint(run):
    from_run = load_trained_model(run)
    assert from_run.checkpoint == run / "checkpoints" / "best.pt"
    assert from_run.iteration == 2
    assert not from_run.model.training
    # The checkpoint's own config entry rebuilds the model; overrides apply to it.
    from_checkpoint = load_trained_model(
        run / "checkpoints" / "last.pt", overrides=["eval.flip=true"]
    )
    assert from_checkpoint.cfg.eval.flip and not from_run.cfg.eval.flip
    assert from_checkpoint.cfg.model == load_run_config(None, TINY).model


def test_errors_name_the_file(run, tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path}.*not a run directory"):
        load_trained_model(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.yaml.*checkpoint"):
        load_trained_model(run / "config.yaml")
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_trained_model(run, tmp_path / "missing.pt")
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    bare = save_checkpoint(payload["model"], tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt.*not a leanseg checkpoint"):
        load_trained_model(bare)
    # Bare weights load with the config they were trained with.
    assert load_trained_model(run / "config.yaml", bare).iteration is None
    broken = save_checkpoint({**payload, "model": [1, 2]}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken\.pt.*'model' entry"):
        load_trained_model(broken)
    wrong = save_checkpoint(
        {**payload, "config": {**payload["config"], "train": {"lr": -1}}}, tmp_path / "wrong.pt"
    )
    with pytest.raises(CheckpointError, match=r"wrong\.pt \(config\).*train\.lr"):
        load_trained_model(wrong)
