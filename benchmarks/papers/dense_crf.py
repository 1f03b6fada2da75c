"""The fully connected CRF on a trained CamVid model's val predictions: mIoU, CPU cost (issue 14).

Thesis §3.4 post-processes the network's probabilities with the fully connected CRF; this
measures what leanseg's implementation (:mod:`leanseg.inference.dense_crf`) does for the CamVid
recipe's model (``configs/lite0/ladder_camvid.yaml``, trained by
``benchmarks/training/camvid_recipe.py``). The network runs once per image (the config's eval
scales, i.e. 1.5x for the recipe); its probabilities at label resolution are then scored as
they are and after the CRF with each parameter setting of ``--settings`` (w1/θα/θβ[/w2]; by
default w2 = 3, θγ = 3 and 10 iterations as the thesis):

    python benchmarks/papers/dense_crf.py \
        --checkpoint runs/lite0/ladder_camvid_2t/checkpoints/last.pt

writes ``benchmarks/results/dense_crf.json``: per setting, mIoU and per-class IoU over the images,
and the CRF's median CPU seconds per megapixel (wall time of one image's CRF divided by its
pixels), with the thread count and machine. The settings are scored on the val split only, as
the thesis' grid search scored its settings on held-out Cityscapes images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from leanseg.config import CRFConfig
from leanseg.data import build_dataset, dataset_classes
from leanseg.data.transforms import input_statistics
from leanseg.inference.dense_crf import DenseCRF
from leanseg.inference.loading import load_trained_model
from leanseg.inference.predictor import predict_scores
from leanseg.inference.speed import InferenceOptions, InferenceRunner, prepare_model
from leanseg.metrics.semantic import SegmentationMetric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

# w1, θα, θβ: the thesis grid's middle (leanseg's default) and corners of it.
DEFAULT_SETTINGS = ["5/70/6", "10/70/6", "5/50/3", "5/90/9", "10/90/3"]


def parse_setting(text: str) -> CRFConfig:
    """``w1/θα/θβ`` or ``w1/θα/θβ/w2`` (w2 defaults to the thesis' 3)."""
    try:
        values = [float(v) for v in text.split("/")]
        w1, xy, rgb = values[:3]
        (w2,) = values[3:] or [3.0]
    except ValueError:
        raise SystemExit(f"--settings: expected w1/θα/θβ[/w2], got {text!r}") from None
    return CRFConfig(
        appearance_weight=w1, appearance_xy=xy, appearance_rgb=rgb, smoothness_weight=w2
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=str(REPO / "runs/lite0/ladder_camvid_2t/checkpoints/last.pt")
    )
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="w1/θα/θβ[/w2]")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/dense_crf.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    trained = load_trained_model(args.checkpoint)
    cfg = trained.cfg
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    classes = dataset_classes(cfg.data)
    prepared = prepare_model(trained.model.eval(), InferenceOptions(), device="cpu")
    scorer = InferenceRunner(prepared.model, prepared.options)
    settings = {"none": None, **{text: parse_setting(text) for text in args.settings}}
    crfs = {
        name: DenseCRF(params, image_statistics=input_statistics(cfg.data))
        for name, params in settings.items()
        if params is not None
    }
    metrics = {
        name: SegmentationMetric(len(classes), ignore_index=cfg.data.ignore_index)
        for name in settings
    }
    seconds_per_mp: dict[str, list[float]] = {name: [] for name in crfs}
    network_seconds = []
    for index in range(count):
        sample = dataset[index]
        images, labels = sample["image"][None], sample["label"][None]
        start = time.perf_counter()
        with torch.no_grad():
            probabilities = predict_scores(scorer, images, scales=cfg.eval.scales)
        network_seconds.append(time.perf_counter() - start)
        metrics["none"].update(probabilities.argmax(1), labels)
        megapixels = labels.numel() / 1e6
        for name, crf in crfs.items():
            start = time.perf_counter()
            refined = crf.refine_batch(probabilities, images)
            seconds_per_mp[name].append((time.perf_counter() - start) / megapixels)
            metrics[name].update(refined.argmax(1), labels)
        print(f"{index + 1}/{count}", flush=True)

    rows = {}
    for name, metric in metrics.items():
        scores = metric.compute()
        rows[name] = {
            "crf": None if settings[name] is None else vars(settings[name]),
            "miou": 100 * float(scores.miou),
            "per_class_iou": {c: 100 * float(v) for c, v in zip(classes, scores.iou, strict=True)},
            "crf_seconds_per_megapixel": (
                statistics.median(seconds_per_mp[name]) if name in seconds_per_mp else None
            ),
        }
        print(f"{name:10s} mIoU {rows[name]['miou']:.2f}")
    write_result(
        args.json,
        {
            "checkpoint": args.checkpoint,
            "images": count,
            "split": cfg.data.val_split,
            "eval_scales": cfg.eval.scales,
            "network_seconds_per_image": statistics.median(network_seconds),
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
