"""BatchNorm statistics recomputed as exact averages over training batches (thesis 4.6.1)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from leanseg.nn.segmentor import Segmentor
from leanseg.runtime import distributed


@torch.no_grad()
def recompute_bn_statistics(
    model: Segmentor,
    batches: Iterator[tuple[Tensor, dict[str, Tensor]]],
    num_batches: int,
) -> None:
    """Replace BatchNorm running statistics by exact averages over ``num_batches`` batches.

    Thesis 4.6.1: "we recompute the batchnorm statistics as exact averages over the training
    set instead of decayed moving averages". Setting ``momentum=None`` makes PyTorch keep a
    cumulative average; the batches are training crops (with training augmentation).

    The batches go through ``losses``, the training path every head has (``forward`` in
    training mode is not defined for all of them, e.g. QGN's ``gtc`` scheme needs labels),
    so each BatchNorm sees what it sees in training. Other buffers a training pass updates
    (QGN's adaptive level weights) are put back afterwards: only BN statistics change. In a
    distributed run the statistics are averaged over the ranks.

    Args:
        model: the model, left in training mode.
        batches: ``(images, targets)`` on the model's device; ``num_batches`` are drawn.
        num_batches: how many batches the averages run over.
    """
    model.train()
    # Layers that stay in eval mode in training (``train.freeze_backbone_bn``) keep theirs.
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    if not norms:
        return
    norm_buffers = {id(b) for m in norms for b in m.buffers(recurse=False)}
    others = [b for b in model.buffers() if id(b) not in norm_buffers]
    saved = [b.clone() for b in others]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    for _ in range(num_batches):
        model.losses(*next(batches))
    for buffer, value in zip(others, saved, strict=True):
        buffer.copy_(value)
    for module, momentum in zip(norms, momenta, strict=True):
        module.momentum = momentum
        if distributed.is_distributed():
            for buffer in (module.running_mean, module.running_var):
                torch.distributed.all_reduce(buffer)
                buffer /= distributed.world_size()
