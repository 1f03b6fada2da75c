"""Where one training iteration of the fast CamVid recipe spends its time, by kind of operator.

Builds the :class:`leanseg.training.trainer.Trainer` of a config (default the fast recipe,
``configs/lite0/ladder_camvid_fast.yaml``) at one crop size, runs ``--warmup`` iterations, then
profiles ``--steps`` iterations (real CamVid batches, the real training step) with
``torch.profiler`` and sorts the self CPU time of every operator call into the groups of
:func:`op_group`. The shares say which part of a step is worth making cheaper: the fast recipe
reaches 72 % only with about twice its compute (``docs/fast-training.md``). Needs a quiet
machine: the shares are of wall time spent in each operator.

    python benchmarks/speed/step_profile.py [--threads 2] [--crop 288 384] [--steps 4]

Writes ``benchmarks/results/step_profile.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.profiler import ProfilerActivity, profile

from leanseg.models import load_run_config
from leanseg.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

FAST = REPO / "configs/lite0/ladder_camvid_fast.yaml"
RESULTS = REPO / "benchmarks/results/step_profile.json"
RUN_DIR = REPO / "runs/step_profile"  # the profiled trainer's own folder, rewritten each run

# The logits' way to the loss at full resolution (upsampling, log-softmax, the loss itself).
_TAIL_OPS = (
    "aten::upsample_bilinear2d",
    "aten::upsample_bilinear2d_backward",
    "aten::_log_softmax",
    "aten::_log_softmax_backward_data",
    "aten::nll_loss2d_forward",
    "aten::nll_loss2d_backward",
)
_CONV_FORWARD = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")
_CONV_BACKWARD = ("aten::convolution_backward", "aten::_slow_conv2d_backward")


def op_group(name: str, shapes: Sequence[Sequence[int]]) -> str:
    """The group an operator call belongs to, from its name and input shapes.

    ``depthwise conv backward`` / ``forward``: a convolution whose weight has one input channel
    per group (shape ``(C, 1, k, k)``; the weight is the second input of the forward operators,
    the third, after the output's gradient, of the backward ones); ``conv backward`` /
    ``forward``: the other convolutions; ``full-resolution tail``: the upsampling, log-softmax
    and loss of the logits; ``other``: the rest (activations, BatchNorm, copies, the
    optimizer's update).
    """
    if name in _CONV_BACKWARD or name in _CONV_FORWARD:
        backward = name in _CONV_BACKWARD
        index = 2 if backward else 1
        weight = shapes[index] if len(shapes) > index else []
        depthwise = len(weight) == 4 and weight[1] == 1 and weight[0] > 1
        kind = "depthwise conv" if depthwise else "conv"
        return f"{kind} {'backward' if backward else 'forward'}"
    if name in _TAIL_OPS:
        return "full-resolution tail"
    return "other"


def group_times(prof: profile, steps: int) -> dict[str, dict[str, float]]:
    """Self CPU time per :func:`op_group` of a finished profile (``record_shapes=True``) of
    ``steps`` iterations: milliseconds per iteration and share of the total, largest first."""
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = [list(s) for s in (event.input_shapes or [])]
        groups[op_group(event.key, shapes)] += event.self_cpu_time_total
    total = sum(groups.values())
    return {
        name: {"ms_per_iteration": round(us / 1e3 / steps, 1), "share": round(us / total, 3)}
        for name, us in sorted(groups.items(), key=lambda item: -item[1])
    }


def top_operators(
    prof: profile, steps: int, group: str = "other", count: int = 10
) -> list[dict[str, Any]]:
    """The ``count`` operators of ``group`` that take the most self CPU time, milliseconds per
    iteration, largest first: what the group is made of."""
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = [list(s) for s in (event.input_shapes or [])]
        if op_group(event.key, shapes) == group:
            times[event.key] += event.self_cpu_time_total
    largest = sorted(times.items(), key=lambda item: -item[1])[:count]
    return [
        {"operator": name, "ms_per_iteration": round(us / 1e3 / steps, 1)} for name, us in largest
    ]


def profile_steps(
    config: Path, crop: Sequence[int], threads: int, warmup: int, steps: int
) -> tuple[float, profile]:
    """Seconds per profiled iteration, and the profile of ``steps`` iterations."""
    cfg = load_run_config(
        str(config),
        [
            f"work_dir={RUN_DIR}",
            f"train.num_threads={threads}",
            "train.seed=0",
            "data.crop_schedule=[]",
            f"data.crop_size=[{crop[0]}, {crop[1]}]",
        ],
    )
    trainer = Trainer.from_config(cfg, force=True, show_progress=False)
    batches = trainer._batches()
    for _ in range(warmup):
        trainer.run_step(next(batches))
    timed = [next(batches) for _ in range(steps)]
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for batch in timed:
            trainer.run_step(batch)
    seconds = (time.perf_counter() - start) / steps
    return seconds, prof


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=FAST)
    parser.add_argument("--crop", type=int, nargs=2, default=(288, 384))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds, prof = profile_steps(args.config, args.crop, args.threads, args.warmup, args.steps)
    groups = group_times(prof, args.steps)
    record: dict[str, Any] = {
        "what": "self CPU time of one training iteration by operator group (torch.profiler)",
        "config": str(args.config.resolve().relative_to(REPO)),
        "crop_size": list(args.crop),
        "steps_profiled": args.steps,
        "seconds_per_iteration_profiled": round(seconds, 3),
        "groups": groups,
        "largest_other_operators": top_operators(prof, args.steps),
    }
    write_result(args.json, record)
    for name, entry in groups.items():
        print(f"{name:>26}  {entry['ms_per_iteration']:8.1f} ms  {100 * entry['share']:5.1f} %")
    print(f"{seconds:.3f} s per iteration (profiled) -> {args.json}")


if __name__ == "__main__":
    main()
