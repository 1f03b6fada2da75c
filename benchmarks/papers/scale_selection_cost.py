"""Cost of the thesis Table 3.1 rows at 1024x2048 beside the single-scale model (issue 14).

Builds Single5, Single3+5, FixedScales and ScaleInvariant from ``configs/scale_selection/
*_lite0_synthetic.yaml`` (random weights: cost does not depend on them) and measures each with
:func:`leanseg.profiling.benchmark.benchmark_model` in one process: parameters, GMAC (multiply-adds
of convolutions and linear layers), activation memory of a training forward (batch 1), and CPU
inference latency with leanseg's default inference options (BN folded, channels-last). The
depth-guided row gets neutral disparity (:class:`leanseg.inference.speed.WithExampleInputs`): its
pyramid computes every level whatever the disparity, so the cost does not depend on it.

    python benchmarks/papers/scale_selection_cost.py [--size 1024x2048] [--repeats 3]

writes ``benchmarks/results/scale_selection_cost.json`` with each row's figures and its ratios
to Single5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from leanseg.inference.speed import (
    InferenceOptions,
    InferenceRunner,
    WithExampleInputs,
    prepare_model,
)
from leanseg.models import build_model, load_run_config, without_pretrained
from leanseg.nn.segmentor import extra_inputs
from leanseg.profiling.benchmark import benchmark_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

ROWS = {
    "Single5": "single5",
    "Single3+5": "single3_5",
    "FixedScales": "fixed_scales",
    "ScaleInvariant": "scale_invariant",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks/results/scale_selection_cost.json"
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    rows = {}
    for label, name in ROWS.items():
        cfg = load_run_config(REPO / f"configs/scale_selection/{name}_lite0_synthetic.yaml")
        torch.manual_seed(0)
        model = build_model(without_pretrained(cfg))
        if extra_inputs(model):
            model = WithExampleInputs(model)
        prepared = prepare_model(model, InferenceOptions(), device="cpu")
        result = benchmark_model(
            model,
            size,
            warmup=args.warmup,
            repeats=args.repeats,
            inference_model=InferenceRunner(prepared.model, prepared.options),
        )
        rows[label] = {
            "parameters": result.parameters,
            "gmac": result.flops.total / 1e9,
            "activation_memory_mib": result.activation_memory_bytes / 2**20,
            "latency_ms": result.latency.median_ms,
            "inference": prepared.options.describe(),
        }
        row = rows[label]
        print(
            f"{label:15s} {row['gmac']:8.1f} GMAC {row['activation_memory_mib']:8.0f} MiB "
            f"{row['latency_ms']:9.0f} ms",
            flush=True,
        )
    base = rows["Single5"]
    for row in rows.values():
        for key in ("gmac", "activation_memory_mib", "latency_ms"):
            row[f"{key}_vs_single5"] = row[key] / base[key]
    write_result(
        args.json,
        {
            "size": list(size),
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
