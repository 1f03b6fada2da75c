"""The random number generators' states as checkpoint entries (exact resume)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values (readable with ``weights_only=True``)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # 624 uint32 words
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`; also takes the NumPy tuple of older checkpoints."""
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = rng.get("numpy")
    if isinstance(state, dict):
        keys = state["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (state["name"], keys, state["position"], state["has_gauss"], state["cached_gaussian"])
        )
    elif state is not None:
        np.random.set_state(state)
    if rng.get("python") is not None:
        random.setstate(rng["python"])
