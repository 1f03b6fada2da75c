"""What a :class:`~leanseg.training.trainer.Trainer` trains with, and the builders that make it.

A trainer receives its parts built (:class:`TrainingParts`): the model and its loss module, the
training batches and the validation samples, the optimizer, gradient scaler and learning-rate
schedule, the run directory and its metrics log. :meth:`Trainer.from_config
<leanseg.training.trainer.Trainer.from_config>` builds them from a configuration with the
functions here, one per part; a hand-made set of parts trains the same way.

Choices kept from the configured path, so that a run and its resume are the same:

- two optimizer parameter groups, the backbone (``train.backbone_lr_mult``) and the rest, each
  with its ``lr_mult`` that the schedule's rate is multiplied by (:func:`build_optimizer`);
- the batches' sample order and augmentation are functions of the seed and the iteration the
  stream starts at (:class:`TrainBatches`, :mod:`.sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from leanseg.config import Config, CropStage, TrainConfig
from leanseg.data import MixedDataset, MixedSampler, build_dataset
from leanseg.files.folder_lock import FolderLock
from leanseg.files.run_dir import RunDirectory
from leanseg.models import build_model, without_pretrained
from leanseg.nn.segmentor import Segmentor
from leanseg.runtime import distributed
from leanseg.runtime.cpu_share import ThreadGovernor
from leanseg.training.freezing import freeze_backbone
from leanseg.training.metrics_log import MetricsLog
from leanseg.training.prefetch import Prefetcher
from leanseg.training.sampling import CropSchedule, ResumableSampler, SeededSamples
from leanseg.training.schedules import learning_rate
from leanseg.training.weight_average import WeightAverage

__all__ = [
    "TrainBatches",
    "TrainingParts",
    "build_datasets",
    "build_loss_module",
    "build_optimizer",
    "build_scaler",
    "build_schedule",
    "build_thread_governor",
    "build_train_batches",
    "model_to_train",
    "prepare_model",
]


@dataclass
class TrainBatches:
    """Endless training batches of ``dataset``, in an order that a resumed run continues.

    Attributes:
        dataset: training samples; a :class:`~leanseg.data.MixedDataset` is drawn by weight.
        batch_size: samples per batch on this rank.
        seed: ``train.seed``; with the iteration it fixes sample order and augmentation.
        num_workers: data-loader worker processes (0: in this process).
        crop_schedule: progressive resizing stages (``data.crop_schedule``; empty: none).
        mix_batches: several datasets mixed within every batch (thesis 5.2); false: whole
            batches from one dataset (the ablation).
        prefetch: prepare batches in a background thread (:mod:`.prefetch`).
        pin_memory: pin batches for faster copies to a GPU.
    """

    dataset: Dataset
    batch_size: int
    seed: int
    num_workers: int = 0
    crop_schedule: list[CropStage] = field(default_factory=list)
    mix_batches: bool = True
    prefetch: bool = False
    pin_memory: bool = False

    def stream(self, iteration: int) -> Iterator[dict[str, Any]]:
        """Endless stream of batches from ``iteration`` on (0 at the start of a run); a
        :class:`~.prefetch.Prefetcher` (to be closed) when ``prefetch`` is set."""
        loader = DataLoader(
            SeededSamples(self.dataset),
            batch_size=self.batch_size,
            sampler=self.sampler(iteration),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            # Its own generator: starting an iterator draws a seed, which must not advance the
            # global RNG (dropout), or a resumed run would drift from the uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )
        if self.prefetch:
            return Prefetcher(iter(loader))
        return iter(loader)

    def sampler(self, iteration: int) -> Sampler[Any]:
        """The keys (index, seed[, crop]) of this rank's samples from ``iteration`` on."""
        world = distributed.world_size()
        position = {
            "seed": self.seed,
            "start": iteration * self.batch_size * world,
            "rank": distributed.rank(),
            "world_size": world,
        }
        sampler: Sampler[Any]
        if isinstance(self.dataset, MixedDataset):
            block = 1 if self.mix_batches else self.batch_size * world
            sizes, weights = self.dataset.sizes, self.dataset.weights
            sampler = MixedSampler(sizes, weights, **position, block=block)
        else:
            sampler = ResumableSampler(len(self.dataset), **position)
        if self.crop_schedule:
            sampler = CropSchedule(
                sampler,
                self.crop_schedule,
                start_iteration=iteration,
                batch_size=self.batch_size,
            )
        return sampler


@dataclass
class TrainingParts:
    """Everything a :class:`~leanseg.training.trainer.Trainer` trains with, built.

    Attributes:
        device: where the model trains.
        model: the model, on ``device`` (:func:`prepare_model`).
        loss_module: ``forward(images, targets)`` = ``model.losses(images, targets)``, perhaps
            compiled or wrapped for DDP (:func:`build_loss_module`).
        train_batches: the training batches (:class:`TrainBatches`).
        val_set: validation samples.
        class_names: class names, index = train id; as many as the model predicts.
        optimizer: its parameter groups carry ``lr_mult`` (:func:`build_optimizer`).
        scaler: the gradient scaler; enabled means mixed precision (:func:`build_scaler`).
        schedule: learning rate of a multiplier-1 parameter group at an iteration (0-based).
        run_dir: the run directory, ready to be written (checked, an old run replaced).
        metrics: where the run's records go.
        lock: this process's hold on ``run_dir`` (:mod:`leanseg.files.folder_lock`); ``None``
            where this process does not lock it (non-main ranks, a hand-made set of parts).
        thread_governor: resizes torch's thread pool (``train.num_threads: auto``); ``None``
            for a fixed number of threads.
        weight_average: the moving average of the weights (``train.ema_decay``), which is
            evaluated and saved; ``None`` evaluates the weights as trained.
    """

    device: torch.device
    model: nn.Module
    loss_module: nn.Module
    train_batches: TrainBatches
    val_set: Dataset
    class_names: tuple[str, ...]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Callable[[int], float]
    run_dir: RunDirectory
    metrics: MetricsLog
    lock: FolderLock | None = None
    thread_governor: ThreadGovernor | None = None
    weight_average: WeightAverage | None = None


# ---------------------------------------------------------------------- data


def build_datasets(
    cfg: Config, train_set: Dataset | None, val_set: Dataset | None
) -> tuple[Dataset, Dataset]:
    """The training and validation samples: those passed in, else the splits of ``cfg.data``
    (``data.train_split`` with training augmentation, ``data.val_split`` without)."""
    if train_set is None:
        train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    if val_set is None:
        val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    return train_set, val_set


def build_train_batches(cfg: Config, train_set: Dataset, device: torch.device) -> TrainBatches:
    """The training batches of ``train_set`` as ``cfg.data`` and ``train.seed`` say."""
    data_cfg = cfg.data
    return TrainBatches(
        train_set,
        batch_size=data_cfg.batch_size,
        seed=cfg.train.seed,
        num_workers=data_cfg.num_workers,
        crop_schedule=data_cfg.crop_schedule,
        mix_batches=data_cfg.mix_batches,
        prefetch=data_cfg.prefetch,
        pin_memory=device.type == "cuda",
    )


# ---------------------------------------------------------------------- model


def model_to_train(
    cfg: Config, model: Segmentor | nn.Module | None, *, num_classes: int, resume: bool
) -> nn.Module:
    """The model passed in, checked to predict ``num_classes`` classes, else ``cfg.model`` built
    (without its ImageNet weights when resuming: the checkpoint brings every weight).

    Raises:
        ValueError: the model passed in predicts another number of classes.
    """
    if model is None:
        return build_model(without_pretrained(cfg) if resume else cfg)
    if model.num_classes != num_classes:
        raise ValueError(
            f"the model predicts {model.num_classes} classes, but data.dataset "
            f"{cfg.data.dataset!r} has {num_classes}"
        )
    return model


def prepare_model(
    model: nn.Module,
    train_cfg: TrainConfig,
    device: torch.device,
    *,
    say: Callable[[str], None],
) -> nn.Module:
    """``model`` ready to train on ``device``: synchronised BatchNorm across GPU ranks
    (``train.sync_bn``), backbone parts frozen (``train.freeze_backbone_*``, described through
    ``say``) and the ``train.channels_last`` memory format."""
    if train_cfg.sync_bn and distributed.is_distributed():
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            # torch's SyncBatchNorm has GPU kernels only; CPU ranks keep per-rank statistics.
            say("train.sync_bn is ignored on CPU (SyncBatchNorm needs CUDA)")
    if train_cfg.freeze_backbone_bn or train_cfg.freeze_backbone_until is not None:
        frozen = freeze_backbone(
            model.backbone,
            batchnorm=train_cfg.freeze_backbone_bn,
            until_stride=train_cfg.freeze_backbone_until,
            example=torch.zeros(1, getattr(model.backbone, "in_channels", 3), 64, 64),
        )
        say(frozen.describe())
    model = model.to(device)
    if train_cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class _LossModule(nn.Module):
    """``forward(images, targets)`` = ``model.losses(images, targets)``, for DDP."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.model.losses(images, targets)


def build_loss_module(model: nn.Module, train_cfg: TrainConfig, device: torch.device) -> nn.Module:
    """A module whose ``forward`` is ``model.losses``: DDP synchronises gradients through
    ``forward`` only. Compiled with ``train.compile``, wrapped in DDP in a process group."""
    loss_module: nn.Module = _LossModule(model)
    if train_cfg.compile:
        loss_module = torch.compile(loss_module)  # type: ignore[assignment]
    if distributed.is_distributed():
        device_ids = [device.index] if device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=device_ids)
    return loss_module


# ---------------------------------------------------------------------- optimisation


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer`` over two parameter groups: the backbone (``lr_mult`` =
    ``train.backbone_lr_mult``) and the rest (``lr_mult`` 1); frozen parameters left out, and
    an empty group too."""
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.parameters() if id(p) in backbone_ids and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    groups = [
        {"params": backbone, "lr_mult": train_cfg.backbone_lr_mult},
        {"params": rest, "lr_mult": 1.0},
    ]
    groups = [group for group in groups if group["params"]]
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=train_cfg.lr,
            momentum=train_cfg.momentum,
            weight_decay=train_cfg.weight_decay,
        )
    optimizer_class = torch.optim.Adam if train_cfg.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)


def build_scaler(train_cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler, enabled (mixed precision) for ``train.amp`` on a GPU only."""
    return torch.amp.GradScaler("cuda", enabled=train_cfg.amp and device.type == "cuda")


def build_schedule(train_cfg: TrainConfig) -> Callable[[int], float]:
    """``train.schedule`` as a function of the iteration (:func:`.schedules.learning_rate`)."""
    return partial(learning_rate, cfg=train_cfg)


def build_thread_governor(train_cfg: TrainConfig, device: torch.device) -> ThreadGovernor | None:
    """``train.num_threads: auto`` on the CPU: threads follow the cores others leave free."""
    if train_cfg.num_threads == "auto" and device.type == "cpu":
        return ThreadGovernor()
    return None
