"""Model size and FLOPs of the LDN variants of thesis Tables 4.1, 4.2 and 4.9.

Every row is built from its config under ``configs/ldn/`` (19 Cityscapes classes) and counted
with :func:`leanseg.profiling.flops.count_flops` (fused multiply-adds of convolutions and linear
layers) on one 1024x1024 image, as the thesis counts "FLOP 1MPx" (thesis 4.6.1). Parameters exclude
the auxiliary classifiers, which exist only for training. Usage::

    python benchmarks/papers/ldn_tables.py [--size 1024] [--json benchmarks/results/ldn_tables.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from leanseg.models import build_segmentor, load_run_config
from leanseg.profiling.flops import count_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import REPO, write_result

CONFIGS = REPO / "configs" / "ldn"

# (table, row label, config stem, paper params [M], paper GFLOP@1MPx)
ROWS: list[tuple[str, str, str, float, float]] = [
    ("4.1", "DN121 32↓", "dn121_32down", 8.2, 56.1),
    ("4.1", "LDN121 64→4", "ldn121_64to4", 9.5, 66.5),
    ("4.1", "LDN121 32→4", "ldn121_32to4", 9.0, 75.4),
    ("4.1", "LDN169 32→4", "ldn169_32to4", 15.6, 88.8),
    ("4.1", "LDN121 32→2", "ldn121_32to2", 9.4, 154.5),
    ("4.1", "ResNet18 32→4", "rn18_32to4", 13.3, 55.7),
    ("4.1", "ResNet101 32→4", "rn101_32to4", 45.9, 186.7),
    ("4.1", "ResNet50 32→4", "rn50_32to4", 26.9, 109.0),
    ("4.1", "DDN-121 8↓", "ddn121_8down", 8.2, 147.8),
    ("4.1", "LDDN-121 8→4", "lddn121_8to4", 8.6, 174.8),
    ("4.1", "LDDN-121 16→4", "lddn121_16to4", 8.9, 87.0),
    ("4.2", "LDN121 128→4", "ldn121_128to4", 9.9, 66.2),
    ("4.2", "LDN161 64→4", "ldn161_64to4", 30.0, 138.7),
    ("4.9", "LDN121 64→4 NoSPP", "ldn121_64to4_nospp", 10.2, 66.7),
    ("4.9", "LDN121 64→4 SPP [36]", "ldn121_64to4_pspspp", 10.6, 66.9),
    ("4.9", "LDN121 64→4 DWS", "ldn121_64to4_dws", 8.7, 54.2),
]


def measure(stem: str, size: int) -> tuple[float, float]:
    """(parameters in millions without auxiliary classifiers, GFLOP at ``size``^2)."""
    cfg = load_run_config(CONFIGS / f"{stem}_cityscapes.yaml")
    model = build_segmentor(cfg.model, num_classes=19, ignore_index=cfg.data.ignore_index)
    params = sum(
        p.numel() for name, p in model.named_parameters() if ".aux_classifiers." not in name
    )
    flops = count_flops(model, torch.zeros(1, 3, size, size))
    return params / 1e6, flops.gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--size", type=int, default=1024, help="square input side (1024: 1MPx)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = []
    for table, label, stem, paper_params, paper_gflops in ROWS:
        params, gflops = measure(stem, args.size)
        results.append(
            {
                "table": table,
                "model": label,
                "config": f"configs/ldn/{stem}_cityscapes.yaml",
                "params_m": round(params, 3),
                "paper_params_m": paper_params,
                "params_rel": round(params / paper_params - 1, 4),
                "gflops": round(gflops, 2),
                "paper_gflops": paper_gflops,
                "gflops_rel": round(gflops / paper_gflops - 1, 4),
                "input": [args.size, args.size],
            }
        )
    if args.json:
        write_result(args.json, {"rows": results})
    print(
        f"{'table':6}{'model':24}{'params M':>10}{'paper':>8}{'Δ':>8}"
        f"{'GFLOP':>9}{'paper':>8}{'Δ':>8}"
    )
    for r in results:
        print(
            f"{r['table']:6}{r['model']:24}{r['params_m']:10.2f}{r['paper_params_m']:8.1f}"
            f"{100 * r['params_rel']:7.1f}%{r['gflops']:9.1f}{r['paper_gflops']:8.1f}"
            f"{100 * r['gflops_rel']:7.1f}%"
        )


if __name__ == "__main__":
    main()
