"""The ``train`` section: :class:`TrainConfig`, the optimisation schedule and bookkeeping of a
run, with :data:`TRAIN_RANGES`, the values each of its keys may take."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from leanseg.config.ranges import RangeTable, finite, non_negative, optional, positive


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping of a training run."""

    # The defaults are the CamVid recipe's (configs/lite0/ladder_camvid.yaml, 72.1 % val mIoU on a
    # CPU): Adam at 6e-4 with a pretrained backbone at 1/4 of that, cosine decay after a 50-step
    # warm-up. A config that names no optimizer gets what is known to train.
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 6e-4
    # Used by SGD only.
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Multiplier of the learning rate of backbone parameters (the thesis divides it by 4).
    backbone_lr_mult: float = 0.25
    schedule: Literal["poly", "cosine", "constant"] = "cosine"
    poly_power: float = 0.9
    # Final learning rate of the cosine schedule (thesis eq. 4.1 uses 1e-7).
    min_lr: float = 0.0
    warmup_iters: int = 50
    # Learning-rate factor at the first warm-up iteration, rising linearly to 1.
    warmup_ratio: float = 0.1
    max_iters: int = 1000
    eval_interval: int = 500
    checkpoint_interval: int = 500
    log_interval: int = 10
    # Mixed precision; only used on CUDA devices.
    amp: bool = False
    # Max gradient norm; ``null`` disables clipping.
    grad_clip: float | None = None
    seed: int = 0
    # Recompute BatchNorm statistics as exact averages over this many training batches after
    # training (thesis 4.6.1); 0 disables it.
    bn_recompute_batches: int = 0
    sync_bn: bool = False
    device: str = "auto"
    # CPU threads of torch's intra-op pool. ``auto``: the cores other processes leave free,
    # looked at again every 15 s (runtime/cpu_share.py; two threads beside one busy process were
    # 3.6x slower per step, benchmarks/speed/thread_contention.py). A number fixes it; ``null``
    # keeps torch's default (one per core).
    num_threads: int | Literal["auto"] | None = "auto"
    # Keep weights and activations channels-last (NHWC): about 14 % faster training steps of the
    # Lite0 ladder on this project's CPUs, same results up to float rounding.
    channels_last: bool = False
    # On the CPU, flush subnormal floats (below 1.2e-38) to zero (``torch.set_flush_denormal``).
    # Weights that weight decay drives towards zero become subnormal as training goes on, and x86
    # CPUs compute on subnormals many times slower: the CamVid recipe's steps slowed from 1.3 to
    # 2.3 s between iterations 900 and 1700 without it (2,559 subnormal weights at 1600; zeroing
    # them: forward + backward 0.84x, benchmarks/speed/subnormal_step.py). With flushing on, the
    # optimizer's updates no longer create them: none in the recipe's checkpoints, steps stayed
    # at 1.3-1.6 s (docs/notes/issue-11.md).
    flush_denormal: bool = True
    # Keep the backbone's BatchNorm statistics (and affine parameters) as the pretrained weights
    # have them: the layers normalise with their running statistics in training too. Frozen BN
    # skips the batch statistics and their backward pass: on the Lite0 ladder recipe the
    # iteration went from 0.958 to 0.822 s (benchmarks/results/fast_training.json).
    freeze_backbone_bn: bool = False
    # Freeze the backbone up to and including the feature it returns at this stride (4, 8, ...):
    # no gradients, no optimizer state, no stored activations there. ``null`` trains all of it.
    freeze_backbone_until: int | None = None
    # Compile the training step (forward and loss) with ``torch.compile``; the first step of
    # each crop size pays the compilation (minutes on a CPU; benchmarks/training/fast_training.py).
    compile: bool = False
    # Evaluate and save an exponential moving average of the weights (Polyak averaging; per step
    # ``average <- d * average + (1 - d) * weights``, ``d`` this value, less over the first
    # steps): validation, best.pt and the checkpoints' ``model`` are the average, and training
    # goes on from its own weights (``training_model`` in the checkpoints). ``null``: off.
    ema_decay: float | None = None


# ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``: the device strings torch accepts that a
# run can use. Whether CUDA is present is checked where the device is used, not at load time.
# N is 0..127: torch keeps a device index in 8 signed bits (``cuda:200`` becomes ``cuda:-56``).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:(1[01]\d|12[0-7]|\d\d?))?")

TRAIN_RANGES: RangeTable = {
    "train.lr": (positive, "a positive number"),
    "train.momentum": (lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "train.weight_decay": (non_negative, "0 or more"),
    "train.backbone_lr_mult": (non_negative, "0 or more"),
    "train.poly_power": (non_negative, "0 or more"),
    "train.min_lr": (non_negative, "0 or more"),
    "train.warmup_iters": (non_negative, "0 or more"),
    "train.warmup_ratio": (lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "train.max_iters": (positive, "a positive integer"),
    "train.eval_interval": (positive, "a positive integer"),
    "train.checkpoint_interval": (positive, "a positive integer"),
    "train.log_interval": (positive, "a positive integer"),
    "train.grad_clip": (optional(positive), "a positive number or null"),
    "train.bn_recompute_batches": (non_negative, "0 or more"),
    # torch, NumPy and Python's random all take a seed in this range (NumPy refuses others).
    "train.seed": (lambda v: 0 <= v < 2**32, "in 0..4294967295 (2^32 - 1)"),
    "train.freeze_backbone_until": (optional(positive), "a stride (4, 8, 16, ...) or null"),
    "train.ema_decay": (
        lambda v: v is None or (finite(v) and 0 < v < 1),
        "in (0, 1), e.g. 0.999, or null",
    ),
    "train.device": (
        lambda v: DEVICE_PATTERN.fullmatch(v) is not None,
        "auto, cpu, cuda, cuda:N or mps",
    ),
    "train.num_threads": (
        lambda v: v is None or v == "auto" or positive(v),
        "auto, a positive integer or null (more than the cores are clamped to them)",
    ),
}
