"""What the report measures itself: scores and prediction panels on the val split, and cost.

- **Scores**: the run's checkpoint (``best.pt``, else ``last.pt``) is loaded with
  :func:`~leanseg.inference.loading.load_trained_model` and evaluated with
  :func:`~leanseg.evaluation.evaluator.evaluate` (the run's own ``eval`` settings) on the first
  ``max_images`` images of its val split: the confusion matrix, per-class IoU and, for instance
  heads, AP. The logged validation (``metrics.jsonl``) may cover more images; the report says
  how many it evaluated. A run on several datasets (``data.datasets``) is also scored on each
  of them in its own classes (the first ``max_images`` val images of each).
- **Panels**: image | ground truth | prediction | error for ``num_panels`` val images spread over
  the split (:func:`panel_indices`), predicted at one scale. In the error picture wrong pixels
  are red, right ones dark grey and ignored ones white. Pictures wider than
  :data:`PANEL_WIDTH` are shrunk (labels nearest).
- **Cost**: parameters, FLOPs, activation and peak memory and latency from
  :func:`leanseg.bench.benchmark_model` at a small size (the same for every run of a report, so
  that they compare), or read from a ``leanseg bench --json`` file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leanseg.config import Config, ConfigError
from leanseg.files.run_dir import RunDirectory
from leanseg.metrics.semantic import SegmentationScores
from leanseg.report.gather import RunLog
from leanseg.structures.labels import IGNORE_INDEX

# Width in pixels of one picture of a panel in the report.
PANEL_WIDTH = 320
RIGHT = (64, 64, 64)
WRONG = (230, 40, 40)
IGNORED = (255, 255, 255)


@dataclass
class Panel:
    """One val image: the four pictures as ``uint8 (H, W, 3)``."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    error: np.ndarray


@dataclass
class Evaluation:
    """The report's own evaluation of a run's checkpoint.

    ``per_dataset``: for a run on several datasets (``data.datasets``), each dataset's scores in
    its own classes (:func:`~leanseg.evaluation.domains.evaluate_per_dataset`, on the first
    ``num_images`` val images of each), by entry name; empty for a run on one dataset.
    """

    checkpoint: Path
    iteration: int | None
    split: str
    num_images: int
    scores: SegmentationScores
    class_names: list[str]
    panels: list[Panel]
    per_dataset: dict[str, SegmentationScores] = field(default_factory=dict)


@dataclass
class Cost:
    """What ``leanseg bench`` measures of one model, in the units the report shows."""

    parameters: int
    gflops: float
    latency_ms: float
    peak_memory_mib: float | None
    activation_memory_mib: float | None
    input_shape: list[int]
    device_name: str
    source: str  # "measured" or the bench JSON file it was read from

    @classmethod
    def from_bench(cls, data: dict[str, Any], source: str) -> Cost:
        """From :meth:`leanseg.bench.BenchResult.to_dict` (or its JSON file)."""
        return cls(
            parameters=int(data["parameters"]),
            gflops=float(data["gflops"]),
            latency_ms=float(data["latency_median_ms"]),
            peak_memory_mib=_optional(data.get("peak_memory_mib")),
            activation_memory_mib=_optional(data.get("activation_memory_mib")),
            input_shape=[int(v) for v in data["input_shape"]],
            device_name=str(data.get("device_name", "?")),
            source=source,
        )


def load_model(run: RunLog) -> tuple[torch.nn.Module, Config, int | None]:
    """The run's model with its checkpoint's weights; without a checkpoint, as configured.

    Returns:
        The model (CPU, eval mode), its config and the checkpoint's iteration (None without).
    """
    from leanseg import models
    from leanseg.inference.loading import load_trained_model

    if run.checkpoint is not None:
        trained = load_trained_model(run.path, run.checkpoint)
        return trained.model, trained.cfg, trained.iteration
    cfg = models.load_run_config(RunDirectory(run.path).config_path, [])
    return models.build_model(models.without_pretrained(cfg)).eval(), cfg, None


def evaluate_run(
    model: torch.nn.Module,
    cfg: Config,
    run: RunLog,
    iteration: int | None,
    *,
    max_images: int,
    num_panels: int,
    device: torch.device,
) -> Evaluation:
    """Scores of ``model`` on the first ``max_images`` val images, and ``num_panels`` panels."""
    from leanseg.data import build_dataset, dataset_classes, dataset_palette
    from leanseg.evaluation.evaluator import default_evaluators, evaluate

    assert run.checkpoint is not None
    split = cfg.data.val_split
    dataset = build_dataset(cfg.data, split, train=False)
    class_names = list(dataset_classes(cfg.data))
    eval_cfg = dataclasses.replace(cfg.eval, max_images=max_images)
    model = model.to(device)
    evaluators = default_evaluators(
        model,
        num_classes=len(class_names),
        boundary_width=eval_cfg.boundary_width,
        ignore_index=cfg.data.ignore_index,
    )
    scores = evaluate(model, dataset, evaluators, eval_cfg=eval_cfg, device=device)
    per_dataset = {}
    if cfg.data.datasets is not None:
        from leanseg.evaluation.domains import evaluate_per_dataset

        per_dataset = evaluate_per_dataset(model, cfg.data, split, eval_cfg=eval_cfg, device=device)
    palette = dataset_palette(cfg.data)
    panels = [
        _panel(model, dataset, index, palette, device)
        for index in panel_indices(len(dataset), num_panels)  # type: ignore[arg-type]
    ]
    return Evaluation(
        checkpoint=run.checkpoint,
        iteration=iteration,
        split=split,
        num_images=min(max_images, len(dataset)),  # type: ignore[arg-type]
        scores=scores,
        class_names=class_names,
        panels=panels,
        per_dataset=per_dataset,
    )


def measure_cost(model: torch.nn.Module, size: tuple[int, int], device: torch.device) -> Cost:
    """:func:`leanseg.bench.benchmark_model` of one inference at ``size`` (3 timed calls).

    Raises:
        ConfigError: ``size`` is smaller than the model's output stride.
    """
    from leanseg.profiling.benchmark import benchmark_model

    stride = int(getattr(model, "size_divisor", 32))
    if min(size) < stride:
        raise ConfigError(
            f"--bench-size {size[0]}x{size[1]} is too small for {type(model).__name__}: each "
            f"side needs at least its output stride, {stride} pixels"
        )
    result = benchmark_model(model, size, device=device, warmup=1, repeats=3)
    return Cost.from_bench(result.to_dict(), "measured")


def panel_indices(count: int, num_panels: int) -> list[int]:
    """``num_panels`` val images spread evenly over the split (first and last included).

    Splits such as CamVid's are video frames in order: neighbours look alike, spread ones do not.
    """
    if num_panels <= 0 or count <= 0:
        return []
    if num_panels == 1 or count == 1:
        return [0]
    return sorted({round(i * (count - 1) / (num_panels - 1)) for i in range(num_panels)})


@torch.no_grad()
def _panel(
    model: torch.nn.Module, dataset: Any, index: int, palette: Any, device: torch.device
) -> Panel:
    from leanseg.inference.model_inputs import batch_inputs
    from leanseg.inference.predictor import predict_scores
    from leanseg.nn.segmentor import extra_inputs
    from leanseg.visualize import colorize

    raw = dataset.load_raw(index)
    sample = dataset[index]
    images = sample["image"][None].to(device)
    needed = extra_inputs(model)
    inputs = None
    if needed:
        batch = {k: torch.as_tensor(sample[k])[None] for k in needed if k in sample}
        inputs = batch_inputs(batch, needed, device, source=type(dataset).__name__)
    scores = predict_scores(model, images, inputs=inputs)
    truth = np.asarray(raw["label"]).astype(np.int64)
    prediction = scores.argmax(1)[0].cpu()
    if tuple(prediction.shape) != truth.shape:  # a transform that resizes: back to the label
        prediction = torch.nn.functional.interpolate(
            prediction[None, None].float(), size=truth.shape, mode="nearest"
        )[0, 0].long()
    predicted = prediction.numpy()
    error = np.empty((*truth.shape, 3), np.uint8)
    error[:] = RIGHT
    error[predicted != truth] = WRONG
    error[truth == IGNORE_INDEX] = IGNORED
    pictures = [
        _shrink(np.asarray(raw["image"], np.uint8), Image.BILINEAR),
        _shrink(colorize(truth, palette), Image.NEAREST),
        _shrink(colorize(predicted, palette), Image.NEAREST),
        _shrink(error, Image.NEAREST),
    ]
    return Panel(str(raw.get("name", index)), *pictures)


def _shrink(picture: np.ndarray, resample: int) -> np.ndarray:
    height, width = picture.shape[:2]
    if width <= PANEL_WIDTH:
        return picture
    size = (PANEL_WIDTH, max(1, round(height * PANEL_WIDTH / width)))
    return np.asarray(Image.fromarray(picture).resize(size, resample))


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)
