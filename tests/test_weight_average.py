"""``train.ema_decay``: the moving average of the weights, what the trainer evaluates and saves.

The average follows its formula step by step, swaps in and out of the model without changing
the training weights, reaches the checkpoints as ``model`` (beside ``training_model``), and a
resumed run continues both exactly as the uninterrupted one.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from leanseg.cli import main
from leanseg.config import ConfigError
from leanseg.files.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from leanseg.inference.loading import load_trained_model
from leanseg.models import load_run_config
from leanseg.training import trainer as trainer_module
from leanseg.training.trainer import Trainer
from leanseg.training.weight_average import WeightAverage
from test_fast_training import folder_dataset, tiny_config, train_until_killed


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_average_follows_its_formula_with_the_warm_up():
    model = small_model()
    average = WeightAverage(model, decay=0.9)
    expected = model[0].weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(float(step))
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        average.update(model)
    assert average.updates == 5
    assert torch.allclose(average.average["0.weight"], expected, atol=1e-6)
    # the first updates decay less than asked: (1 + 1) / (10 + 1) = 0.18 at the first
    assert WeightAverage(model, 0.9).current_decay() == pytest.approx(2 / 11)


def test_average_covers_float_buffers_and_leaves_integer_ones():
    model = small_model()
    average = WeightAverage(model, decay=0.5)
    assert "1.running_mean" in average.average
    assert "1.num_batches_tracked" not in average.average


def test_applied_swaps_the_average_in_and_the_own_weights_back():
    model = small_model()
    average = WeightAverage(model, decay=0.5)
    start = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    trained = model[0].weight.detach().clone()
    x = torch.randn(4, 3)
    model.eval()
    with average.applied(model):
        assert torch.equal(model[0].weight, start["0.weight"])
        inside = model(x)
        with torch.no_grad():  # a change made inside (recomputed statistics) stays in the average
            model[1].running_mean.fill_(3.0)
    assert torch.equal(model[0].weight, trained)
    assert torch.equal(model[1].running_mean, start["1.running_mean"])
    assert torch.equal(average.average["1.running_mean"], torch.full((2,), 3.0))
    with average.applied(model):
        again = model(x)
    assert not torch.allclose(inside, again)  # the running mean it computes with moved to 3
    assert torch.equal(model[0].weight, trained)


def test_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="decay 1.0"):
        WeightAverage(nn.Linear(1, 1), 1.0)
    for value in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match=r"train\.ema_decay: must be"):
            load_run_config(None, {"train.ema_decay": value})
    assert load_run_config(None, {"train.ema_decay": 0.999}).train.ema_decay == 0.999


# ---------------------------------------------------------------------- in the trainer


def _config(root, work_dir, *, max_iters: int, decay: float | None):
    cfg = tiny_config(root, work_dir)
    cfg.train.max_iters = max_iters
    cfg.train.checkpoint_interval = 2
    cfg.train.eval_interval = max_iters
    cfg.train.ema_decay = decay
    return cfg


def test_checkpoint_holds_the_average_as_model_and_the_trained_weights_beside(tmp_path):
    root = folder_dataset(tmp_path / "data")
    trainer = Trainer.from_config(_config(root, tmp_path / "run", max_iters=4, decay=0.9))
    trainer.train()
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    trained = trainer.model.state_dict()
    for name, value in saved["training_model"].items():
        assert torch.equal(value, trained[name]), name
    for name, value in trainer.weight_average.average.items():
        assert torch.equal(saved["model"][name], value), name
    assert saved["weight_average"] == {"updates": 4}
    differs = [
        n for n in trainer.weight_average.average if not torch.equal(saved["model"][n], trained[n])
    ]
    assert differs, "after four steps of Adam the average and the weights differ"
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert torch.equal(
        best["model"]["head.classifier.weight"], saved["model"]["head.classifier.weight"]
    )
    # leanseg eval / predict / export load the run's best.pt: the average
    loaded = load_trained_model(tmp_path / "run").model.state_dict()
    for name, value in trainer.weight_average.average.items():
        assert torch.allclose(loaded[name], value), name


def test_validation_scores_the_average_and_training_goes_on_from_its_own(tmp_path, monkeypatch):
    root = folder_dataset(tmp_path / "data")
    cfg = _config(root, tmp_path / "run", max_iters=3, decay=0.9)
    cfg.train.eval_interval = 2  # validated after step 2, and training goes on to step 3
    trainer = Trainer.from_config(cfg)
    seen: list[dict[str, torch.Tensor]] = []
    real_evaluate = trainer_module.evaluate

    def evaluate_and_look(model, *args, **kwargs):
        seen.append({name: value.clone() for name, value in model.state_dict().items()})
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate_and_look)
    trainer.train()
    assert len(seen) == 2, "the run was validated mid-run and at its end"
    for name, value in trainer.weight_average.average.items():
        assert torch.equal(seen[-1][name], value), name
    # Step 3 went on from the trained weights, not the average validated after step 2: the
    # weights are those of the same run validated at its end only.
    monkeypatch.undo()
    reference = Trainer.from_config(_config(root, tmp_path / "reference", max_iters=3, decay=0.9))
    reference.train()
    trained = trainer.model.state_dict()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(trained[name], value), name
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for name, value in trained.items():
        assert torch.equal(value, saved["training_model"][name]), name


def test_resumed_run_continues_the_weights_and_the_average_exactly(tmp_path):
    root = folder_dataset(tmp_path / "data")
    Trainer.from_config(_config(root, tmp_path / "whole", max_iters=4, decay=0.8)).train()
    killed = Trainer.from_config(_config(root, tmp_path / "parts", max_iters=4, decay=0.8))
    train_until_killed(killed, 3)  # the last checkpoint is at iteration 2
    resumed = Trainer.from_config(
        _config(root, tmp_path / "parts", max_iters=4, decay=0.8), resume=True
    )
    assert resumed.weight_average.updates == 2
    resumed.train()
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    parts = load_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")
    for entry in ("model", "training_model"):
        for name, value in whole[entry].items():
            assert torch.equal(parts[entry][name], value), (entry, name)


def test_resuming_with_the_average_turned_on_starts_it_at_the_weights(tmp_path):
    root = folder_dataset(tmp_path / "data")
    Trainer.from_config(_config(root, tmp_path / "run", max_iters=2, decay=None)).train()
    plain = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert "training_model" not in plain
    resumed = Trainer.from_config(
        _config(root, tmp_path / "run", max_iters=4, decay=0.9), resume=True, force=True
    )
    assert resumed.weight_average.updates == 0
    for name, value in resumed.weight_average.average.items():
        assert torch.equal(value, plain["model"][name]), name


def test_resuming_without_the_average_goes_on_from_the_trained_weights(tmp_path):
    root = folder_dataset(tmp_path / "data")
    Trainer.from_config(_config(root, tmp_path / "run", max_iters=2, decay=0.9)).train()
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    resumed = Trainer.from_config(
        _config(root, tmp_path / "run", max_iters=4, decay=None), resume=True, force=True
    )
    assert resumed.weight_average is None
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, saved["training_model"][name]), name


def test_checkpoint_with_a_malformed_average_entry_is_refused_by_name(tmp_path):
    root = folder_dataset(tmp_path / "data")
    Trainer.from_config(_config(root, tmp_path / "run", max_iters=2, decay=0.9)).train()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    payload["weight_average"] = {"updates": -3}
    save_checkpoint(payload, path)
    with pytest.raises(CheckpointError, match=r"weight_average\.updates"):
        Trainer.from_config(
            _config(root, tmp_path / "run", max_iters=4, decay=0.9), resume=True, force=True
        )


def test_eval_scores_the_average_or_with_a_flag_the_trained_weights(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    trainer = Trainer.from_config(_config(root, tmp_path / "run", max_iters=3, decay=0.9))
    trainer.train()
    trained = load_trained_model(tmp_path / "run", training_weights=True).model.state_dict()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(trained[name], value), name
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    for flags, out in (([], "average.json"), (["--training-weights"], "trained.json")):
        args = ["eval", str(tmp_path / "run"), "--checkpoint", str(last), *flags]
        assert main([*args, "--no-progress", "--json", str(tmp_path / out)]) == 0
    average = json.loads((tmp_path / "average.json").read_text())["miou"]
    assert average == pytest.approx(trainer._latest_scores.miou)
    trainer.weight_average = None  # the trainer now validates the weights as trained
    as_trained = json.loads((tmp_path / "trained.json").read_text())["miou"]
    assert as_trained == pytest.approx(trainer.validate().miou)


def test_training_weights_of_a_run_without_the_average_are_refused_by_name(tmp_path):
    root = folder_dataset(tmp_path / "data")
    Trainer.from_config(_config(root, tmp_path / "run", max_iters=2, decay=None)).train()
    with pytest.raises(CheckpointError, match=r"best\.pt: holds no 'training_model'.*ema_decay"):
        load_trained_model(tmp_path / "run", training_weights=True)
