"""Time one training step of Lite0 models under the recipe's options (issue 11 recipe choices).

Forward + backward + Adam step, batch 8 at 288x384, one thread by default; each variant gets one
warm-up step and ``--steps`` timed steps (mean reported). Writes
``benchmarks/results/recipe_step_time.json``.

    python benchmarks/speed/recipe_step_time.py [--threads 1] [--steps 2]
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from leanseg.models import create_model
from leanseg.profiling.latency import measure_latency

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

VARIANTS = [
    ("ladder w128, NCHW, fp32", {"channels": 128}, False, False),
    ("ladder w128, channels-last, fp32", {"channels": 128}, True, False),
    ("ladder w128, channels-last, bf16 autocast", {"channels": 128}, True, True),
    ("ladder w128, NCHW, bf16 autocast", {"channels": 128}, False, True),
    ("ladder w64, channels-last, fp32", {"channels": 64}, True, False),
    (
        "ladder w128 out_stride 8, channels-last, fp32",
        {"channels": 128, "out_stride": 8},
        True,
        False,
    ),
]


def step_seconds(head_options: dict, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(
        head="ladder", backbone="efficientnet_lite0", num_classes=11, **head_options
    )
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    images = torch.randn(8, 3, 288, 384)
    targets = {"label": torch.randint(0, 11, (8, 288, 384))}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with autocast:
            loss = sum(model.train().losses(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return measure_latency(step, warmup=1, repeats=steps).mean_ms / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/recipe_step_time.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, options, channels_last, bf16 in VARIANTS:
        rows[name] = step_seconds(options, channels_last, bf16, args.steps)
        print(f"{name}: {rows[name]:.2f} s/step", flush=True)
    record = {
        "seconds_per_step": rows,
        "batch": "8 x 288x384",
    }
    write_result(args.json, record)


if __name__ == "__main__":
    main()
