"""SSN Table 6 on CPU: sampling iterations t of the instance module vs latency (and AP).

Latency: the SSN encoder with the instance head (``ssn_instance``) at 1024x512 (19 classes,
batch 1, BN folded), median over ``--repeats`` after ``--warmup``, t = 3 ... 40 timed round-robin:

- ``full_ms``: image -> class scores + instance ids (:func:`predict_instances`, everything
  included: encoder, three branches, t sampling steps, guided upsampling, unique ids,
  area threshold);
- ``module_ms``: the instance module alone on fixed coarse offsets (t steps + guided upsampling
  + ids);
- ``sampling_ms``: the t sampling steps alone (coarse 2 x 64 x 128 grid), the only part t changes.

With ``--run RUN_DIR`` (a ``leanseg train`` run of ``configs/ssn/ssn_instance_synthetic.yaml``)
it also reports AP / AP50 (``leanseg.metrics.instance``) for every t on held-out synthetic scenes
(the config's ``val_split``, full 256x512 frames).

    nice -n 10 .venv/bin/python benchmarks/papers/ssn_instance_iterations.py \
        --json benchmarks/results/ssn_instance_iterations.json [--run runs/ssn_instance_synthetic]
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

from leanseg.config import ModelConfig
from leanseg.data import build_dataset, dataset_classes
from leanseg.files.run_dir import RunDirectory
from leanseg.inference.loading import load_trained_model
from leanseg.metrics.instance import InstanceAP
from leanseg.models import build_segmentor
from leanseg.nn.fold_bn import fold_batchnorm
from leanseg.nn.heads.ssn_instance import (
    coordinate_grid,
    coordinates_to_instances,
    iterative_sampling,
    predict_instances,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import machine, round_robin, summary, write_result

ITERATIONS = (40, 30, 20, 15, 10, 7, 5, 3)


def time_iterations(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Latency of the full model and of the instance module for every t, round-robin."""
    torch.manual_seed(0)
    size = (args.height, args.width)
    model = build_segmentor(
        ModelConfig(
            backbone={"name": "ssn_encoder"},
            head={"name": "ssn_instance", "thing_classes": list(range(11, 19))},
        ),
        num_classes=19,
    ).eval()
    images = torch.randn(1, 3, *size)
    # Non-trivial offsets, so that the sampled values change from step to step.
    with torch.no_grad():
        model.head.guidance.conv.weight.normal_(std=0.05)
        model.head.instance_guidance[-1].conv.weight.normal_(std=0.05)
    model = fold_batchnorm(model, images[..., :128, :256])
    head = model.head
    with torch.no_grad():
        features = model.features(images)
        _, offsets, instance_offsets = head.coarse(features)
        scores = torch.randn(1, 19, *size)

    def full(t: int) -> None:
        predict_instances(model, images, iterations=t)

    def module(t: int) -> None:
        coords = head.instance_coordinates(
            offsets, instance_offsets, size, iterations=t, mode=head.inference_mode
        )
        coordinates_to_instances(
            coords, scores, head.thing_classes, cluster_size=head.cluster_size, min_area=64
        )

    grid = coordinate_grid(tuple(instance_offsets.shape[-2:]), size)

    def sampling(t: int) -> None:
        iterative_sampling(grid, instance_offsets, t, head.inference_mode)

    kinds = {"full": full, "module": module, "sampling": sampling}
    calls = {(t, key): partial(fn, t) for t in ITERATIONS for key, fn in kinds.items()}
    with torch.no_grad():
        times = round_robin(calls, args.warmup, args.repeats)
    median = {call: summary(values)["median_ms"] for call, values in times.items()}
    return {
        t: {
            "full_ms": median[(t, "full")],
            "module_ms": median[(t, "module")],
            "sampling_ms": median[(t, "sampling")],
            "fps": 1e3 / median[(t, "full")],
        }
        for t in ITERATIONS
    }


def evaluate_iterations(
    run: Path, iterations: tuple[int, ...], max_images: int | None
) -> dict[int, dict[str, float]]:
    """AP / AP50 of a trained instance model on the held-out split, for every t."""
    trained = load_trained_model(RunDirectory(run).last_checkpoint)
    model, cfg = trained.model, trained.cfg
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    names = dataset_classes(cfg.data)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    metrics = {t: InstanceAP(model.head.thing_classes, names, min_gt_area=64) for t in iterations}
    with torch.no_grad():
        for index in range(count):
            sample = dataset[index]
            images = sample["image"].unsqueeze(0)
            for t in iterations:
                prediction = predict_instances(model, images, iterations=t)
                metrics[t].update(
                    prediction.instance[0],
                    prediction.scores[0],
                    sample["instance"],
                    sample["label"],
                )
    return {t: {**metric.compute(), "images": count} for t, metric in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--run", type=Path, default=None, help="trained run for AP / AP50")
    parser.add_argument("--max-images", type=int, default=50)
    parser.add_argument("--no-timing", action="store_true", help="only evaluate AP")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"machine": machine()}
    if not args.no_timing:
        result["machine"].update(input=[1, 3, args.height, args.width], bn_folded=True)
        result["latency"] = time_iterations(args)
        print(f"input 1x3x{args.height}x{args.width}, BN folded, median of {args.repeats}")
        print(f"{'t':>3s} {'full ms':>9s} {'FPS':>7s} {'module ms':>10s} {'sampling ms':>12s}")
        for t, row in result["latency"].items():
            print(
                f"{t:3d} {row['full_ms']:9.1f} {row['fps']:7.2f} {row['module_ms']:10.1f} "
                f"{row['sampling_ms']:12.2f}"
            )
    if args.run is not None:
        result["accuracy"] = evaluate_iterations(args.run, ITERATIONS, args.max_images)
        print(f"{'t':>3s} {'AP':>6s} {'AP50':>6s}  (held-out synthetic, {args.run})")
        for t, row in result["accuracy"].items():
            print(f"{t:3d} {100 * row['AP']:6.1f} {100 * row['AP50']:6.1f}")
    print("machine:", json.dumps(result["machine"]))
    if args.json:
        write_result(args.json, result)  # keeps the machine above


if __name__ == "__main__":
    main()
