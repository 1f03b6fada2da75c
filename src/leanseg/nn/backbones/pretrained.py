"""Loading ImageNet weights from a local torchvision-format state dict.

Nothing is downloaded: users point ``model.backbone.pretrained`` at a file they have (for example
``resnet18-f37072fd.pth`` from torchvision). Parameter names are public API (STYLE.md rule 11), so
the file must use torchvision's names; classifier keys (``fc.*``, ``classifier.*``) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from leanseg.engine.checkpoint import CheckpointError, load_checkpoint

# Keys of ImageNet classifiers that segmentation backbones do not have.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


def load_pretrained(
    module: nn.Module,
    path: str | Path,
    *,
    allow_missing: Iterable[str] = (),
    drop_prefixes: Iterable[str] = CLASSIFIER_PREFIXES,
) -> list[str]:
    """Copy a local ImageNet state dict into ``module``.

    Args:
        module: the backbone.
        path: ``.pth`` file holding a state dict (or a checkpoint dict with a ``model`` key).
        allow_missing: name prefixes of parameters that the file may lack and that keep their
            random initialisation (e.g. a deep stem torchvision does not have).
        drop_prefixes: prefixes of keys in the file to ignore.

    Returns:
        The keys of ``module`` that kept their initialisation.

    Raises:
        CheckpointError: naming the file, on any other missing key, unexpected key or shape.
    """
    state = load_checkpoint(path)["model"]
    drop = tuple(drop_prefixes)
    allow = tuple(allow_missing)
    state = {key: value for key, value in state.items() if not key.startswith(drop)}
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    bad_missing = [key for key in missing if not key.startswith(allow)]
    unexpected = [key for key in state if key not in own and not key.startswith(allow)]
    wrong_shape = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    problems = []
    if bad_missing:
        problems.append(f"{len(bad_missing)} missing keys, e.g. {bad_missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
    if problems:
        raise CheckpointError(
            f"{path}: not ImageNet weights for this backbone (torchvision names expected): "
            + "; ".join(problems)
        )
    with torch.no_grad():
        for key, value in state.items():
            if key in own:
                own[key].copy_(value)
    return missing
