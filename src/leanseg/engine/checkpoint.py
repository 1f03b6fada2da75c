"""Checkpoint files: written atomically, read with errors that name the file.

A checkpoint is a ``torch.save`` dict:

- ``model``: the model's ``state_dict``;
- ``config``: the resolved config as a plain dict (so a checkpoint alone rebuilds its model);
- ``iteration``: the number of optimisation steps done;
- ``optimizer``, ``scaler``, ``rng``: training state, absent from weights-only exports;
- ``best``: ``{"metric": name, "value": float, "iteration": int}`` of the best evaluation so far;
- ``leanseg_version``.

Every value is a tensor or a plain Python value (dict, list, tuple, str, int, float, bool, None):
files are read with ``torch.load(weights_only=True)``, which refuses any other object instead of
running the code a pickle can carry. Checkpoints written before that rule stored the NumPy RNG
state as an array: NumPy's array, scalar and dtype constructors are allowed too, to read them.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a run killed at any moment leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import pickle
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leanseg.utils import atomic_write


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename)."""
    return atomic_write(path, lambda handle: torch.save(payload, handle), fsync=True)


# What the NumPy values of checkpoints from older leanseg versions (the RNG state array, a NumPy
# float as best mIoU) unpickle with: array, scalar and dtype constructors only.
_LEGACY_NUMPY_GLOBALS = [
    np.zeros(1).__reduce__()[0],  # numpy.(_)core.multiarray._reconstruct
    np.float64(0).__reduce__()[0],  # numpy.(_)core.multiarray.scalar
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),  # the state's 624 key words
    type(np.dtype(np.float64)),  # a best-mIoU value stored as a NumPy scalar
]


def _allow_legacy_numpy() -> AbstractContextManager[Any]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return safe_globals(_LEGACY_NUMPY_GLOBALS) if safe_globals else nullcontext()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or a bare state dict).

    Only tensors and plain values are read (``weights_only=True``); a file holding any other
    Python object is refused before anything in it runs.

    Raises:
        CheckpointError: the file is missing, torn, not a checkpoint, or holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings(), _allow_legacy_numpy():
            # torch warns about pickles of other protocols before refusing or reading them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: not a weights-only checkpoint (torn, or it holds Python objects "
            "other than tensors and plain values; nothing in it was run)"
        ) from None
    except Exception as err:  # torch raises several types for torn or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({err.__class__.__name__})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(payload).__name__}")
    if "model" not in payload:
        # A bare state dict, as torchvision publishes weights.
        payload = {"model": payload}
    return payload


def load_model_state(model: nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """Load ``state`` into ``model`` exactly; on mismatch, say which keys and shapes differ."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    wrong_shape = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
        if missing:
            problems.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (different architecture or class "
            f"count): {'; '.join(problems)}"
        )
    model.load_state_dict(state)
