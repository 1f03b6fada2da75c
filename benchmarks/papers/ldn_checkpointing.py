"""Activation memory and step time of the checkpointing strategies of thesis Table 4.11.

LDN121 32→4 (``configs/ldn/ldn121_32to4_cityscapes.yaml``, 19 classes) with the backbone's
``checkpointing`` set to each strategy and the head's TU blocks checkpointed for the "(UP)"
strategies. For each strategy: bytes saved for backward
(:func:`leanseg.profiling.memory.activation_memory` of the training losses), peak process memory of
a forward+backward step (:func:`leanseg.profiling.memory.measure_memory`; this step is also the
strategy's untimed warm-up), the median time of ``--steps`` timed forward+backward steps, and the
largest parameter-gradient difference to the unchecked model (same weights, same batch).

The timed steps run round-robin over the strategies (round 1: one step of every strategy, then
round 2, ...) so that a change of load on a shared machine affects every strategy alike instead of
whichever strategy happened to be timed at the time. Progress goes to stderr. Usage::

    python benchmarks/papers/ldn_checkpointing.py [--size 768] [--batch 2] [--steps 3] \
        [--json benchmarks/results/ldn_checkpointing_768_quiet.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

from leanseg.models import build_segmentor, load_run_config
from leanseg.nn.backbones.densenet import CHECKPOINTING
from leanseg.profiling.memory import (
    activation_memory,
    measure_memory,
    resident_memory_bytes,
    trim_heap,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, round_robin, summary, write_result


def rss_after_trim() -> float:
    """Return freed heap memory to the OS and give the resident set size in GiB.

    Called between steps, outside the timing: without it, a long run of steps with different
    allocation patterns grows the process far beyond one step's peak (heap fragmentation).
    """
    trim_heap()
    return (resident_memory_bytes() or 0) / 2**30


CONFIG = REPO / "configs" / "ldn" / "ldn121_32to4_cityscapes.yaml"


def build(strategy: str, seed: int = 0) -> torch.nn.Module:
    cfg = load_run_config(CONFIG)
    cfg.model.backbone["checkpointing"] = strategy
    cfg.model.head["checkpoint"] = CHECKPOINTING[strategy][1]
    torch.manual_seed(seed)
    return build_segmentor(cfg.model, num_classes=19).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps per strategy (after an untimed warm-up)"
    )
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    label = torch.randint(0, 19, (args.batch, args.size, args.size), generator=generator)
    targets = {"label": label}
    reference: dict[str, torch.Tensor] | None = None
    results = []
    steps = {}

    def loss_fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return sum(m.losses(x, targets).values())

    for strategy in CHECKPOINTING:
        model = build(strategy)
        saved = activation_memory(model, images, loss_fn)
        state = copy.deepcopy(model.state_dict())

        def step(model: torch.nn.Module = model) -> None:
            model.zero_grad(set_to_none=True)
            loss_fn(model, images).backward()

        start = time.perf_counter()
        peak = measure_memory(step)  # the untimed warm-up step
        warmup_s = time.perf_counter() - start
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.load_state_dict(state)
        if reference is None:
            reference = grads
        max_diff = max((grads[n] - reference[n]).abs().max().item() for n in reference)
        del grads
        steps[strategy] = step
        rss = rss_after_trim()
        print(
            f"{strategy}: warm-up {warmup_s:.1f} s, RSS {rss:.2f} GiB", file=sys.stderr, flush=True
        )
        results.append(
            {
                "strategy": strategy,
                "saved_bytes": saved,
                "peak_rss_increase_bytes": peak.increase_bytes,
                "peak_method": peak.method,
                "warmup_step_s": round(warmup_s, 3),
                "max_grad_diff": max_diff,
                "grads_equal_1e-5": max_diff <= 1e-5,
            }
        )

    def progress(strategy: str, round_index: int, ms: float) -> None:
        rss = rss_after_trim()
        print(
            f"round {round_index + 1} {strategy}: {ms / 1e3:.1f} s, RSS after {rss:.2f} GiB",
            file=sys.stderr,
            flush=True,
        )

    times_ms = round_robin(steps, warmup=0, repeats=args.steps, after=progress)
    for r in results:
        times = times_ms[r["strategy"]]
        r["step_times_s"] = [round(t / 1e3, 3) for t in times]
        r["step_s"] = round(summary(times)["median_ms"] / 1e3, 3)
    base = results[0]
    for r in results:
        r["memory_reduction"] = round(base["saved_bytes"] / r["saved_bytes"], 2)
        r["time_ratio"] = round(r["step_s"] / base["step_s"], 3)
    meta = {
        "model": "LDN121 32→4",
        "input": [args.batch, 3, args.size, args.size],
        "threads": torch.get_num_threads(),
        "timed_steps": args.steps,
        "step_s": "median of the timed steps, run round-robin after one untimed warm-up each",
        "paper_table_4_11_mb_bs6": {
            "none": 11265,
            "(3x3)": 10107,
            "(cat 1x1)": 6620,
            "(cat 1x1)(3x3)": 5552,
            "(block)(stem)(TD)(UP)": 3902,
            "(cat 1x1 3x3)": 3620,
            "(cat 1x1 3x3)(stem)(TD)(UP)": 2106,
        },
    }
    if args.json:
        write_result(args.json, {"meta": meta, "results": results})
    print(f"{meta['model']} input {meta['input']}, {meta['threads']} thread(s)")
    for r in results:
        paper = meta["paper_table_4_11_mb_bs6"][r["strategy"]]
        print(
            f"{r['strategy']:30}{r['saved_bytes'] / 2**20:9.1f} MiB saved "
            f"({r['memory_reduction']:4.1f}x, paper {11265 / paper:3.1f}x)"
            f"{r['peak_rss_increase_bytes'] / 2**20:9.1f} MiB peak"
            f"{r['step_s']:7.2f} s ({r['time_ratio']:4.2f}x)  grad diff {r['max_grad_diff']:.1e}"
        )


if __name__ == "__main__":
    main()
