"""Gradient checkpointing that keeps batch-norm statistics single (thesis 4.5, Table 4.11).

:func:`checkpointed` wraps :func:`torch.utils.checkpoint.checkpoint`: a checkpointed segment runs
its forward once without keeping activations and again during backward to recompute them. The
recomputation must not update batch-norm running statistics a second time, or the momentum
would be applied twice per step; :func:`frozen_batchnorm_statistics` prevents that. Used by the
DenseNet backbone (units, blocks, stem, transitions) and by the LDN head (its TU blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norms of ``module`` normalise with batch statistics but leave running stats alone.

    Used while a checkpointed segment is recomputed during backward: the first forward already
    updated the running statistics (and ``num_batches_tracked``); updating them again would
    apply the momentum twice per step. The momentum is set to 0 (the running averages stay
    exactly as they are) and ``num_batches_tracked`` is restored afterwards. The batch-norm call
    itself is unchanged, so the recomputation saves the same tensors as the forward, which
    ``torch.utils.checkpoint`` checks.
    """
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def checkpointed(function: Callable[..., Tensor], owner: nn.Module, *inputs: Tensor) -> Tensor:
    """``torch.utils.checkpoint`` of ``function(*inputs)`` that keeps BN statistics single.

    The first call of ``function`` (the forward) runs normally; any later call is the
    recomputation during backward and runs under :func:`frozen_batchnorm_statistics` of
    ``owner`` (the module holding the segment's layers). Without grad (evaluation) the
    function simply runs.
    """
    if not torch.is_grad_enabled():
        return function(*inputs)
    calls = [0]

    def run(*args: Tensor) -> Tensor:
        calls[0] += 1
        if calls[0] == 1:
            return function(*args)
        with frozen_batchnorm_statistics(owner):
            return function(*args)

    return checkpoint(run, *inputs, use_reentrant=False)
