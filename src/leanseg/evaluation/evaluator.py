"""Evaluation of a model on a dataset: the one code path ``train`` and ``eval`` share.

Both the periodic validation during training and ``leanseg eval`` call :func:`evaluate`, so a
checkpoint evaluated later reproduces the figures logged when it was saved. A model that needs
sample entries besides the image (:class:`~leanseg.nn.segmentor.ExtraInputs`, e.g. disparity)
gets them from each batch, resized and mirrored with the image
(:mod:`leanseg.inference.model_inputs`); other models take the same path as before. A model that
predicts instances (SSN's instance head) also gets AP / AP50 on data with instance labels
(:mod:`leanseg.evaluation.instances`). Category IoU, iIoU and foreign-class incidence (thesis
ch. 5) are added where they apply (:mod:`leanseg.evaluation.extra_scores`). The model runs with
inference-speed options (:mod:`leanseg.inference.speed`), applied to a copy of it: the defaults
(the fastest exact ones) unless the caller passes others, so the periodic validation of training
and ``leanseg eval`` without flags compute the same figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from leanseg.config import EvalConfig
from leanseg.evaluation.extra_scores import ExtraScores
from leanseg.evaluation.instances import InstanceEvaluation
from leanseg.inference.dense_crf import DenseCRF
from leanseg.inference.model_inputs import batch_inputs
from leanseg.inference.predictor import predict_scores
from leanseg.inference.site_cost import SiteCounter
from leanseg.inference.speed import InferenceOptions, InferenceRunner, PreparedModel, prepare_model
from leanseg.metrics.semantic import SegmentationMetric, SegmentationScores
from leanseg.nn.segmentor import extra_inputs
from leanseg.runtime import distributed


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    eval_cfg: EvalConfig,
    device: torch.device,
    ignore_index: int = 255,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    class_names: Sequence[str] | None = None,
    label_map: torch.Tensor | None = None,
    options: InferenceOptions | PreparedModel | None = None,
    image_statistics: tuple[Sequence[float], Sequence[float]] | None = None,
) -> SegmentationScores:
    """Confusion-matrix metrics of ``model`` on ``dataset`` (eval transforms attached).

    Each rank of a distributed run evaluates an interleaved share of the images and the
    confusion matrices are summed across ranks, so every rank returns the same scores.

    Args:
        on_batch: called as ``on_batch(done, total)`` after each batch (progress bars).
        class_names: names of the scored classes; Cityscapes' 19 add category IoU.
        label_map: ``(K,)`` model class -> scored class, 255 for classes foreign to the dataset
            (scored as Void, thesis 5.3.1); None when the model predicts the scored classes.
        options: inference-speed options applied to a copy of ``model``
            (:func:`~leanseg.inference.speed.prepare_model`), or a model already prepared from
            ``model`` with them (a caller that prints the notes prepares it itself). ``None``
            (training's periodic validation, ``leanseg eval`` without flags) takes the default
            options, so that ``leanseg eval`` reproduces the logged figures exactly;
            :data:`~leanseg.inference.speed.PLAIN` scores ``model`` as it is.
        image_statistics: ``(mean, std)`` the dataset normalises images with; needed when
            ``eval_cfg.crf`` asks for CRF post-processing (its colours are the images').
    """
    was_training = model.training
    model.eval()
    count = len(dataset)  # type: ignore[arg-type]
    if eval_cfg.max_images is not None:
        count = min(count, eval_cfg.max_images)
    indices = list(range(distributed.rank(), count, distributed.world_size()))
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=eval_cfg.batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    metric = SegmentationMetric(
        num_classes,
        ignore_index=ignore_index,
        boundary_width=eval_cfg.boundary_width,
        void_index=None if label_map is None else 255,
    )
    extras = ExtraScores(num_classes, class_names, label_map, ignore_index)
    prepared = options
    if not isinstance(prepared, PreparedModel):
        prepared = prepare_model(model, options or InferenceOptions(), device=device)
    # A head that reports its cost (QGN) is counted over every pass: tiles, scales, flips.
    sites = SiteCounter.wrap(prepared.model)
    scorer = InferenceRunner(sites or prepared.model, prepared.options)
    crf = None
    if eval_cfg.crf is not None:
        if image_statistics is None:
            raise ValueError("eval.crf needs the images' mean and std (image_statistics)")
        crf = DenseCRF(eval_cfg.crf, image_statistics=image_statistics)
    needed = extra_inputs(model)
    instances = InstanceEvaluation.for_model(model)
    for step, batch in enumerate(loader, start=1):
        images = batch["image"].to(device)
        inputs = None
        if needed:
            inputs = batch_inputs(batch, needed, device, source=type(dataset).__name__)
        probabilities = predict_scores(
            scorer, images, scales=eval_cfg.scales, flip=eval_cfg.flip, inputs=inputs
        )
        if crf is not None:
            probabilities = crf.refine_batch(probabilities, images)
        pred = extras.scored(probabilities.argmax(dim=1).cpu())
        metric.update(pred, batch["label"])
        extras.update(pred, batch)
        if instances is not None:
            instances.update(images, batch)
        if on_batch is not None:
            on_batch(step, len(loader))
    metric.reduce_across_processes()
    model.train(was_training)
    scores = extras.apply(metric.compute(), metric.confusion, metric.void)
    if sites is not None:
        per_image = {level: total / max(1, len(indices)) for level, total in sites.totals.items()}
        reduced = distributed.mean_across_processes(per_image, device)
        scores = dataclasses.replace(scores, active_sites={k: reduced[k] for k in per_image})
    if instances is not None:
        scores = dataclasses.replace(scores, instance_ap=instances.compute())
    return scores
