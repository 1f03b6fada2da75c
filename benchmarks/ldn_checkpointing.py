"""Activation memory and step time of the checkpointing strategies of thesis Table 4.11.

LDN121 32→4 (``configs/ldn/ldn121_32to4_cityscapes.yaml``, 19 classes) with the backbone's
``checkpointing`` set to each strategy and the head's TU blocks checkpointed for the "(UP)"
strategies. For each strategy: bytes saved for backward (:func:`leanseg.bench.activation_memory`
of the training losses), peak process memory of a forward+backward step
(:func:`leanseg.bench.measure_memory`), mean step time, and the largest parameter-gradient
difference to the unchecked model (same weights, same batch). Usage::

    python benchmarks/ldn_checkpointing.py [--json] [--size 768] [--batch 2] [--steps 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from leanseg.bench import activation_memory, measure_memory
from leanseg.config import load_config
from leanseg.models import build_segmentor
from leanseg.nn.backbones.densenet import CHECKPOINTING

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ldn" / "ldn121_32to4_cityscapes.yaml"


def build(strategy: str, seed: int = 0) -> torch.nn.Module:
    cfg = load_config(CONFIG)
    cfg.model.backbone["checkpointing"] = strategy
    cfg.model.head["checkpoint"] = CHECKPOINTING[strategy][1]
    torch.manual_seed(seed)
    return build_segmentor(cfg.model, num_classes=19).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    label = torch.randint(0, 19, (args.batch, args.size, args.size), generator=generator)
    targets = {"label": label}
    reference: dict[str, torch.Tensor] | None = None
    results = []
    for strategy in CHECKPOINTING:
        model = build(strategy)

        def loss_fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            return sum(m.losses(x, targets).values())

        saved = activation_memory(model, images, loss_fn)
        state = copy.deepcopy(model.state_dict())

        def step(model: torch.nn.Module = model) -> None:
            model.zero_grad(set_to_none=True)
            loss_fn(model, images).backward()

        peak = measure_memory(step)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.load_state_dict(state)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        if reference is None:
            reference = grads
        max_diff = max((grads[n] - reference[n]).abs().max().item() for n in reference)
        results.append(
            {
                "strategy": strategy,
                "saved_bytes": saved,
                "peak_rss_increase_bytes": peak.increase_bytes,
                "peak_method": peak.method,
                "step_s": sum(times) / len(times),
                "max_grad_diff": max_diff,
            }
        )
    base = results[0]
    for r in results:
        r["memory_reduction"] = round(base["saved_bytes"] / r["saved_bytes"], 2)
        r["time_ratio"] = round(r["step_s"] / base["step_s"], 3)
    meta = {
        "model": "LDN121 32→4",
        "input": [args.batch, 3, args.size, args.size],
        "threads": torch.get_num_threads(),
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
        print(json.dumps({"meta": meta, "results": results}, indent=1, ensure_ascii=False))
        return
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
