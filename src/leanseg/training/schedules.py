"""Learning-rate schedules as pure functions of the iteration.

Because the factor depends on the iteration alone, a resumed run continues exactly the schedule
it was on. The backbone multiplier (thesis 4.6.1 divides the backbone rate by 4) scales a whole
parameter group, the floor ``min_lr`` included.
"""

from __future__ import annotations

import math

from leanseg.config import TrainConfig


def learning_rate(iteration: int, cfg: TrainConfig) -> float:
    """Learning rate of a multiplier-1 parameter group at ``iteration`` (0-based).

    - ``poly``: ``min_lr + (lr - min_lr) * (1 - i / N) ** poly_power`` (DeepLab's poly policy).
    - ``cosine``: thesis eq. 4.1 per iteration,
      ``min_lr + (lr - min_lr) / 2 * (1 + cos(pi * i / N))``.
    - ``constant``: ``lr``.

    A linear warm-up from ``warmup_ratio * value`` to ``value`` over the first ``warmup_iters``
    iterations multiplies the scheduled value.
    """
    progress = min(iteration, cfg.max_iters) / max(cfg.max_iters, 1)
    if cfg.schedule == "poly":
        decay = (1.0 - progress) ** cfg.poly_power
    elif cfg.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0
    value = cfg.min_lr + (cfg.lr - cfg.min_lr) * decay
    if iteration < cfg.warmup_iters:
        ramp = iteration / cfg.warmup_iters
        value *= cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * ramp
    return value
