"""SSN Table 1 / Table 2 on CPU: ERFNet decoder vs iGUM on the same encoder, and the SSN encoder.

At Cityscapes half resolution (1024x512, 19 classes, batch 1, as SSN §6.1), for each model:
parameters, GFLOPs (fused multiply-adds of convolutions, ``leanseg.profiling.flops.count_flops``;
the sampling of iGUM/GUM and bilinear interpolation are not counted, like every interpolation), and
latency = median wall time of ``--repeats`` eval-mode no-grad forwards after ``--warmup`` with
every foldable BatchNorm folded (``leanseg.nn.fold_bn``, SSN §6). Models are timed round-robin
(one forward of each model per round) so that the ratios come from one run on the same load.

It also times the upsampling operators alone on the same coarse scores (19 x 64 x 128 -> 512 x
1024): bilinear interpolation vs iGUM (bilinear and nearest sampling), and checks the issue's
criteria: iGUM faster than the ERFNet decoder it replaces, and encoder+iGUM at most 10 % slower
than encoder+bilinear upsampling of the same scores.

    nice -n 10 .venv/bin/python benchmarks/papers/ssn_table1.py --threads 1 \
        --json benchmarks/results/ssn_table1_threads1_rerun.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.fold_bn import fold_batchnorm
from leanseg.nn.heads.igum import guided_upsample
from leanseg.profiling.flops import count_flops, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import machine, round_robin, summary, write_result

MODELS: dict[str, tuple[str, str]] = {
    "erfnet + erfnet decoder": ("erfnet_encoder", "erfnet_decoder"),
    "erfnet + iGUM": ("erfnet_encoder", "igum"),
    "erfnet + bilinear": ("erfnet_encoder", "bilinear"),
    "erfnet + GUM": ("erfnet_encoder", "gum"),
    "ssn encoder + iGUM": ("ssn_encoder", "igum"),
    "ssn encoder + bilinear": ("ssn_encoder", "bilinear"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = (args.height, args.width)
    images = torch.randn(1, 3, *size)

    rows: dict[str, dict] = {}
    forwards = {}
    for name, (backbone, head) in MODELS.items():
        model = build_segmentor(
            ModelConfig(backbone={"name": backbone}, head={"name": head}),
            num_classes=args.num_classes,
        ).eval()
        folded = fold_batchnorm(model, images[..., :128, :256])
        flops = count_flops(folded, images)
        rows[name] = {
            "backbone": backbone,
            "head": head,
            "parameters": count_parameters(model),
            "gflops": flops.gflops,
            "gflops_head": flops.by_top_level().get("head", 0) / 1e9,
        }
        forwards[name] = (lambda m: lambda: m(images))(folded)

    # Upsampling operators alone, on the coarse scores of a stride-8 encoder.
    coarse = torch.randn(1, args.num_classes, args.height // 8, args.width // 8)
    offsets = 0.5 * torch.tanh(torch.randn(1, 2, args.height // 8, args.width // 8))
    forwards["op: bilinear interpolate"] = lambda: F.interpolate(
        coarse, size=size, mode="bilinear", align_corners=False
    )
    forwards["op: iGUM bilinear"] = lambda: guided_upsample(coarse, offsets, size, "bilinear")
    forwards["op: iGUM nearest"] = lambda: guided_upsample(coarse, offsets, size, "nearest")

    with torch.no_grad():
        times = round_robin(forwards, args.warmup, args.repeats)
    for name, values in times.items():
        latency = summary(values, warmup=args.warmup)
        row = rows.setdefault(name, {})
        row["latency_median_ms"] = latency["median_ms"]
        row["latency_min_ms"] = latency["min_ms"]
        row["latency_max_ms"] = latency["max_ms"]

    def ms(name: str) -> float:
        return rows[name]["latency_median_ms"]

    checks = {
        "igum_vs_erfnet_decoder_speedup": ms("erfnet + erfnet decoder") / ms("erfnet + iGUM"),
        "igum_faster_than_erfnet_decoder": ms("erfnet + iGUM") < ms("erfnet + erfnet decoder"),
        "erfnet_igum_over_bilinear": ms("erfnet + iGUM") / ms("erfnet + bilinear"),
        "ssn_igum_over_bilinear": ms("ssn encoder + iGUM") / ms("ssn encoder + bilinear"),
        "igum_at_most_10pct_over_bilinear": (
            ms("erfnet + iGUM") <= 1.10 * ms("erfnet + bilinear")
            and ms("ssn encoder + iGUM") <= 1.10 * ms("ssn encoder + bilinear")
        ),
        "ssn_igum_vs_erfnet_baseline_speedup": ms("erfnet + erfnet decoder")
        / ms("ssn encoder + iGUM"),
    }
    described = machine(
        input=[1, 3, *size], warmup=args.warmup, repeats=args.repeats, bn_folded=True
    )

    print(
        f"input 1x3x{args.height}x{args.width}, {args.num_classes} classes, BN folded, "
        f"median of {args.repeats} after {args.warmup} warm-up, round-robin"
    )
    print(f"{'model':28s} {'params M':>9s} {'GFLOPs':>8s} {'head GF':>8s} {'ms':>9s} {'FPS':>7s}")
    for name, row in rows.items():
        params = f"{row['parameters'] / 1e6:9.3f}" if "parameters" in row else f"{'':9s}"
        gflops = f"{row['gflops']:8.2f}" if "gflops" in row else f"{'':8s}"
        head = f"{row['gflops_head']:8.3f}" if "gflops_head" in row else f"{'':8s}"
        latency = row["latency_median_ms"]
        print(f"{name:28s} {params} {gflops} {head} {latency:9.1f} {1e3 / latency:7.2f}")
    for key, value in checks.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print("machine:", json.dumps(described))
    if args.json:
        write_result(args.json, {"rows": rows, "checks": checks, "machine": described})


if __name__ == "__main__":
    main()
