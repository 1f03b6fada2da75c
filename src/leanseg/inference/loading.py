"""Load a trained model: from a run directory, a checkpoint, or a config and a checkpoint.

``leanseg eval``, ``leanseg predict`` (through :meth:`Predictor.from_checkpoint
<leanseg.inference.predictor.Predictor.from_checkpoint>`) and the benchmarks that evaluate a run all
load through :func:`load_trained_model`, so a model is rebuilt, and its weights are read, in one
way:

- the config is read with :func:`leanseg.models.load_run_config` (a run's ``config.yaml`` or a
  config file) or :func:`leanseg.models.run_config_from_dict` (the ``config`` entry of a
  checkpoint), so it is checked and its input normalisation filled as for training;
- the model is built with :func:`leanseg.models.without_pretrained`: a checkpoint holds every
  weight, so the ImageNet file the run started from is not read (it may not exist where the
  model is used);
- the checkpoint is read with :func:`leanseg.files.checkpoint.load_checkpoint`
  (``weights_only=True``) and its weights must fit the model exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leanseg import models
from leanseg.config import Config, ConfigError, apply_overrides
from leanseg.files.checkpoint import CheckpointError, load_checkpoint, load_model_state
from leanseg.files.run_dir import RunDirectory
from leanseg.nn.segmentor import Segmentor

# A file with one of these suffixes is a config, not a checkpoint.
CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TrainedModel:
    """A model with its trained weights, and where they came from.

    Attributes:
        model: the model, on the CPU, in eval mode.
        cfg: the run config it was built from.
        checkpoint: the checkpoint file its weights were read from.
        iteration: the training iteration the checkpoint was written at (``None`` for bare
            weights).
    """

    model: Segmentor
    cfg: Config
    checkpoint: Path
    iteration: int | None


def load_trained_model(
    source: str | Path,
    checkpoint: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    training_weights: bool = False,
) -> TrainedModel:
    """Rebuild a trained model and load its weights.

    ``source`` is one of:

    - a run directory of ``leanseg train``: the config is ``RUN/config.yaml``, the checkpoint
      ``checkpoint`` or else ``RUN/checkpoints/best.pt``;
    - a config file (given with ``checkpoint``, or named ``*.yaml`` / ``*.yml``): the config is
      that file and ``checkpoint`` must be given;
    - a checkpoint written by the trainer: the config is the checkpoint's ``config`` entry.

    Args:
        source: run directory, config file or checkpoint, as above.
        checkpoint: the checkpoint to read, for a run directory or a config file.
        overrides: ``--set`` style ``key=value`` overrides of the config (e.g. ``data.root=...``
            where the data has moved).
        training_weights: load the weights as trained (the ``training_model`` entry of a run
            trained with ``train.ema_decay``) instead of the checkpoint's ``model`` (their
            moving average there).

    Returns:
        The model (on the CPU, in eval mode), its config, the checkpoint path and the
        checkpoint's iteration.

    Raises:
        ConfigError: naming the file and key, for a folder that is not a run directory, a config
            file without a checkpoint, or a config that is invalid.
        CheckpointError: naming the file, for a checkpoint that is missing or unreadable, holds
            no config where one is needed (bare weights), holds an invalid config, or whose
            weights do not fit the model the config describes; with ``training_weights``, one
            without a ``training_model`` entry.
    """
    source = Path(source)
    if source.is_dir():
        run = RunDirectory(source)
        if not run.config_path.is_file():
            raise ConfigError(f"{source} is a folder but not a run directory (no config.yaml)")
        cfg = models.load_run_config(run.config_path, list(overrides))
        path = Path(checkpoint) if checkpoint is not None else run.best_checkpoint
        payload = load_checkpoint(path, map_location="cpu")
    elif checkpoint is not None or source.suffix.lower() in CONFIG_SUFFIXES:
        if checkpoint is None:
            raise ConfigError(
                f"{source} is a config file: the checkpoint to load weights from must be given "
                "too (--checkpoint)"
            )
        cfg = models.load_run_config(source, list(overrides))
        path = Path(checkpoint)
        payload = load_checkpoint(path, map_location="cpu")
    else:
        path = source
        payload = load_checkpoint(path, map_location="cpu")
        cfg = _checkpoint_config(payload, path, overrides)
    entry = "training_model" if training_weights else "model"
    if entry not in payload:
        raise CheckpointError(
            f"{path}: holds no {entry!r} entry"
            + (
                " (trained without train.ema_decay: its 'model' is the weights as trained)"
                if training_weights
                else ""
            )
        )
    model = models.build_model(models.without_pretrained(cfg))
    state = payload[entry]
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: the {entry!r} entry is a {type(state).__name__}, not a state dict"
        )
    wrong = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if wrong is not None:
        raise CheckpointError(
            f"{path}: the {entry!r} entry {wrong!r} is a {type(state[wrong]).__name__}, "
            "not a tensor"
        )
    load_model_state(model, state, path)
    iteration = payload.get("iteration")
    return TrainedModel(
        model=model.eval(),
        cfg=cfg,
        checkpoint=path,
        iteration=iteration if isinstance(iteration, int) else None,
    )


def _checkpoint_config(payload: dict[str, Any], path: Path, overrides: Sequence[str]) -> Config:
    """The run config stored in a checkpoint, with ``overrides`` applied."""
    raw = payload.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: not a leanseg checkpoint (no 'config' entry to rebuild the model from); "
            "bare weights must be loaded into a model built from a config (give the config "
            "file and the checkpoint)"
        )
    raw = apply_overrides(raw, list(overrides))
    try:
        return models.run_config_from_dict(raw, source=f"{path} (config)")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
