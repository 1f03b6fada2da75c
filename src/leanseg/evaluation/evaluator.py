"""Evaluation of a model on a dataset: the one code path ``train`` and ``eval`` share.

Both the periodic validation during training and ``leanseg eval`` call :func:`evaluate`, so a
checkpoint evaluated later reproduces the figures logged when it was saved. :func:`evaluate`
runs the model once per batch and hands the batch and its
:class:`~leanseg.evaluation.base.Prediction` to every evaluator of the list it is given, one per
kind of score (:class:`~leanseg.evaluation.base.Evaluator`); :func:`default_evaluators` builds
the list a model and dataset call for: the confusion-matrix scores and boundary mIoU, iIoU and
category IoU (thesis ch. 5) where they apply, foreign-class incidence with a ``label_map``,
instance AP for a model that predicts instances (SSN's instance head) and the active sites of a
head that reports its cost (QGN).

A model that needs sample entries besides the image (:class:`~leanseg.nn.segmentor.ExtraInputs`,
e.g. disparity) gets them from each batch, resized and mirrored with the image
(:mod:`leanseg.inference.model_inputs`); other models take the same path as before. The model
runs with inference-speed options (:mod:`leanseg.inference.speed`), applied to a copy of it: the
defaults (the fastest exact ones) unless the caller passes others, so the periodic validation of
training and ``leanseg eval`` without flags compute the same figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from leanseg.config import EvalConfig
from leanseg.evaluation.base import Evaluator, Prediction
from leanseg.evaluation.cost import ActiveSitesEvaluator, reports_cost
from leanseg.evaluation.extra_scores import ForeignClassEvaluator, InstanceIoUEvaluator
from leanseg.evaluation.instances import InstanceAPEvaluator, predicts_instances
from leanseg.evaluation.semantic import BoundaryEvaluator, SemanticEvaluator, cityscapes_classes
from leanseg.inference.dense_crf import DenseCRF
from leanseg.inference.model_inputs import batch_inputs
from leanseg.inference.predictor import predict_scores
from leanseg.inference.site_cost import SiteCounter
from leanseg.inference.speed import InferenceOptions, InferenceRunner, PreparedModel, prepare_model
from leanseg.metrics.semantic import SegmentationScores
from leanseg.nn.segmentor import extra_inputs
from leanseg.runtime import distributed
from leanseg.structures.labels import IGNORE_INDEX

# Fields of SegmentationScores without a default that only the boundary evaluator fills.
_WITHOUT_BOUNDARY = {"boundary_miou": None, "boundary_iou": None}


def default_evaluators(
    model: nn.Module,
    *,
    num_classes: int,
    boundary_width: int | None = 8,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
    label_map: Tensor | None = None,
) -> list[Evaluator]:
    """The evaluators of every score that applies to ``model`` on a dataset.

    Args:
        num_classes: classes scored (the dataset's, after ``label_map``).
        boundary_width: ``eval.boundary_width``: half-width of the boundary band; None: no
            boundary mIoU.
        class_names: names of the scored classes; Cityscapes' 19 add category IoU and iIoU.
        label_map: ``(K,)`` model class -> scored class, ``IGNORE_INDEX`` for classes foreign
            to the dataset (scored as Void, thesis 5.3.1; pass it to :func:`evaluate` too); None
            when the model predicts the scored classes.
    """
    void_index = None if label_map is None else IGNORE_INDEX
    evaluators: list[Evaluator] = [
        SemanticEvaluator(
            num_classes, ignore_index=ignore_index, void_index=void_index, class_names=class_names
        )
    ]
    if boundary_width is not None:
        evaluators.append(
            BoundaryEvaluator(
                boundary_width, num_classes, ignore_index=ignore_index, void_index=void_index
            )
        )
    categories = cityscapes_classes(class_names)
    evaluators.append(
        InstanceIoUEvaluator(num_classes, ignore_index=ignore_index, categories=categories)
    )
    if label_map is not None:
        evaluators.append(ForeignClassEvaluator(label_map))
    if predicts_instances(model):
        evaluators.append(InstanceAPEvaluator(model))
    if reports_cost(model):
        evaluators.append(ActiveSitesEvaluator(model.head.cost_levels()))
    return evaluators


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    evaluators: Sequence[Evaluator],
    *,
    eval_cfg: EvalConfig,
    device: torch.device,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    label_map: Tensor | None = None,
    options: InferenceOptions | PreparedModel | None = None,
    image_statistics: tuple[Sequence[float], Sequence[float]] | None = None,
) -> SegmentationScores:
    """Scores of ``model`` on ``dataset`` (eval transforms attached), one kind per evaluator.

    Each rank of a distributed run evaluates an interleaved share of the images and every
    evaluator reduces its counts across ranks, so every rank returns the same scores.

    Args:
        evaluators: what to score (:func:`default_evaluators`); one of them must be a
            :class:`~leanseg.evaluation.semantic.SemanticEvaluator`, which fills the fields
            every :class:`~leanseg.metrics.semantic.SegmentationScores` has.
        on_batch: called as ``on_batch(done, total)`` after each batch (progress bars).
        label_map: ``(K,)`` model class -> scored class, ``IGNORE_INDEX`` for classes foreign
            to the dataset (scored as Void, thesis 5.3.1); None when the model predicts the
            scored classes.
        options: inference-speed options applied to a copy of ``model``
            (:func:`~leanseg.inference.speed.prepare_model`), or a model already prepared from
            ``model`` with them (a caller that prints the notes prepares it itself). ``None``
            (training's periodic validation, ``leanseg eval`` without flags) takes the default
            options, so that ``leanseg eval`` reproduces the logged figures exactly;
            :data:`~leanseg.inference.speed.PLAIN` scores ``model`` as it is.
        image_statistics: ``(mean, std)`` the dataset normalises images with; needed when
            ``eval_cfg.crf`` asks for CRF post-processing (its colours are the images').
    """
    if not any(isinstance(evaluator, SemanticEvaluator) for evaluator in evaluators):
        raise ValueError("evaluate needs a SemanticEvaluator among its evaluators")
    was_training = model.training
    model.eval()
    loader = _loader(dataset, eval_cfg, num_workers)
    predict = _BatchPredictor(model, eval_cfg, device, options, image_statistics, label_map)
    source = type(dataset).__name__
    for step, batch in enumerate(loader, start=1):
        prediction = predict(batch, source)
        for evaluator in evaluators:
            evaluator.update(batch, prediction)
        if on_batch is not None:
            on_batch(step, len(loader))
    model.train(was_training)
    return combine_scores(evaluators)


def _loader(dataset: Dataset, eval_cfg: EvalConfig, num_workers: int) -> DataLoader:
    """This rank's interleaved share of the first ``eval.max_images`` images, in batches."""
    count = len(dataset)  # type: ignore[arg-type]
    if eval_cfg.max_images is not None:
        count = min(count, eval_cfg.max_images)
    indices = list(range(distributed.rank(), count, distributed.world_size()))
    return DataLoader(
        Subset(dataset, indices),
        batch_size=eval_cfg.batch_size,
        shuffle=False,
        num_workers=num_workers,
    )


def combine_scores(evaluators: Sequence[Evaluator]) -> SegmentationScores:
    """What every evaluator computes (in list order, as every rank of a distributed run must)
    as one :class:`~leanseg.metrics.semantic.SegmentationScores`.

    Raises:
        ValueError: two evaluators fill the same field.
    """
    entries: dict[str, Any] = dict(_WITHOUT_BOUNDARY)
    filled: set[str] = set()
    for evaluator in evaluators:
        computed = evaluator.compute()
        if filled & computed.keys():
            raise ValueError(f"two evaluators fill {sorted(filled & computed.keys())}")
        filled |= computed.keys()
        entries.update(computed)
    return SegmentationScores(**entries)


class _BatchPredictor:
    """The model's :class:`~leanseg.evaluation.base.Prediction` of a batch, run the way
    ``eval`` says (scales, flip, CRF) with the inference ``options``; see :func:`evaluate`."""

    def __init__(
        self,
        model: nn.Module,
        eval_cfg: EvalConfig,
        device: torch.device,
        options: InferenceOptions | PreparedModel | None,
        image_statistics: tuple[Sequence[float], Sequence[float]] | None,
        label_map: Tensor | None,
    ) -> None:
        prepared = options
        if not isinstance(prepared, PreparedModel):
            prepared = prepare_model(model, options or InferenceOptions(), device=device)
        # A head that reports its cost (QGN) is counted over every pass: tiles, scales, flips.
        self.sites = SiteCounter.wrap(prepared.model)
        self.runner = InferenceRunner(self.sites or prepared.model, prepared.options)
        self.crf = None
        if eval_cfg.crf is not None:
            if image_statistics is None:
                raise ValueError("eval.crf needs the images' mean and std (image_statistics)")
            self.crf = DenseCRF(eval_cfg.crf, image_statistics=image_statistics)
        self.eval_cfg, self.device = eval_cfg, device
        self.needed = extra_inputs(model)
        self.label_map = None if label_map is None else label_map.to(torch.int64).cpu()

    def __call__(self, batch: Mapping[str, Any], source: str) -> Prediction:
        images = batch["image"].to(self.device)
        inputs = None
        if self.needed:
            inputs = batch_inputs(batch, self.needed, self.device, source=source)
        if self.sites is not None:
            self.sites.reset()
        probabilities = predict_scores(
            self.runner, images, scales=self.eval_cfg.scales, flip=self.eval_cfg.flip, inputs=inputs
        )
        if self.crf is not None:
            probabilities = self.crf.refine_batch(probabilities, images)
        classes = probabilities.argmax(dim=1).to(torch.int64).cpu()
        labels = classes if self.label_map is None else self.label_map[classes]
        return Prediction(
            images=images,
            probabilities=probabilities,
            classes=classes,
            labels=labels,
            active_sites=None if self.sites is None else self.sites.totals,
        )
