"""The whole run: :class:`Config`, the four sections (``model``, ``data``, ``train``, ``eval``)
and ``work_dir``, with :data:`RUN_RANGES` for the keys at the top level."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from leanseg.config.data import DataConfig
from leanseg.config.eval import EvalConfig
from leanseg.config.model import ModelConfig
from leanseg.config.ranges import RangeTable
from leanseg.config.train import TrainConfig


@dataclass
class Config:
    """A whole run: model, data, training and evaluation settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Where ``leanseg train`` writes the run; relative paths are relative to the folder the
    # command runs in (an output, unlike the input paths, which a file states relative to itself).
    work_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


RUN_RANGES: RangeTable = {
    "work_dir": (bool, "a non-empty path"),
}
