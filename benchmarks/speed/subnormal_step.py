"""What subnormal floats in a trained model cost a CPU training step (issue 11).

Loads a checkpoint, counts its subnormal weights and Adam moments, and times forward + backward of
its model on one random batch (``--batch`` x ``--crop``, channels-last) round-robin
(:func:`common.round_robin`) in three variants, each on its own copy of the model:

- as trained, subnormals computed as they are;
- as trained, with ``torch.set_flush_denormal(True)`` during the call (what the trainer sets);
- with the subnormal weights set to zero (what ``inference.speed.prepare_model`` does
  for inference).

    .venv/bin/python benchmarks/speed/subnormal_step.py \
        --checkpoint RUN/checkpoints/last.pt --threads 2

writes ``benchmarks/results/subnormal_step.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from leanseg.inference.loading import load_trained_model
from leanseg.inference.speed import zero_subnormal_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, round_robin, summary, write_result

TINY = torch.finfo(torch.float32).tiny


def count_subnormal(tensors: list[torch.Tensor]) -> int:
    return sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors if t.is_floating_point())


def step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, flush: bool) -> Callable:
    def call() -> None:
        torch.set_flush_denormal(flush)
        loss = sum(model.losses(images, {"label": labels}).values())
        model.zero_grad(set_to_none=True)
        loss.backward()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", default="288x384", help="HxW of the batch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "subnormal_step.json"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(False)  # loading must keep the subnormals to count them
    trained = load_trained_model(args.checkpoint)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    moments = [
        value
        for entry in state.get("optimizer", {}).get("state", {}).values()
        for key, value in entry.items()
        if key in ("exp_avg", "exp_avg_sq")
    ]
    base = trained.model.to(memory_format=torch.channels_last).train()
    zeroed = copy.deepcopy(base)
    zero_subnormal_weights(zeroed)
    height, width = (int(v) for v in args.crop.lower().split("x"))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, height, width, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, trained.model.num_classes, (args.batch, height, width))
    calls = {
        "as trained": step(base, images, labels, flush=False),
        "as trained, flush_denormal": step(copy.deepcopy(base), images, labels, flush=True),
        "subnormal weights zeroed": step(zeroed, images, labels, flush=False),
    }
    times = round_robin(calls, warmup=args.warmup, repeats=args.repeats)
    torch.set_flush_denormal(False)
    rows = {name: summary(values) for name, values in times.items()}
    for name, row in rows.items():
        print(f"{name:30s} {row['median_ms']:8.0f} ms (forward + backward)")
    write_result(
        args.json,
        {
            "checkpoint": str(args.checkpoint),
            "iteration": trained.iteration,
            "subnormal_weights": count_subnormal(list(base.state_dict().values())),
            "subnormal_adam_moments": count_subnormal(moments),
            "batch": f"{args.batch} x {height}x{width}, channels-last, fp32",
            "rows": rows,
        },
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
