"""Evaluate a trained QGN with the All / GTC / PC propagation schemes and anytime budgets.

Loads ``RUN/config.yaml`` and ``RUN/checkpoints/last.pt`` of a ``leanseg train`` run, runs the val
split (eval transform, full images) and prints a Table-1-style row (pixel accuracy and mIoU per
eval scheme) and the anytime trade-off: mIoU vs active sites per level for several budgets
(``min_level``: stop after that level; ``max_sites``: cap of propagated sites per level).

    OMP_NUM_THREADS=1 python benchmarks/papers/qgn_eval_grid.py runs/qgn_r18_synthetic_cpu \
        --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from leanseg.data import build_dataset, dataset_classes
from leanseg.files.run_dir import RunDirectory
from leanseg.inference.loading import TrainedModel, load_trained_model
from leanseg.metrics.semantic import SegmentationMetric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import write_result


def evaluate(model, dataset, count, num_classes, **knobs) -> dict:
    metric = SegmentationMetric(num_classes, ignore_index=255)
    sites: dict[int, float] = {}
    model.eval()
    with torch.no_grad():
        for index in range(count):
            sample = dataset[index]
            image = torch.as_tensor(sample["image"]).float()[None]
            label = torch.as_tensor(sample["label"]).long()[None]
            # Padded to the output stride as the segmentor pads, the label with "ignore".
            height, width = label.shape[-2:]
            padding = (0, -width % model.size_divisor, 0, -height % model.size_divisor)
            padded = F.pad(image, padding)
            lab = F.pad(label, padding, value=255)
            pred = model.head.predict_quadtree(
                model.features(padded), tuple(padded.shape[-2:]), label=lab, **knobs
            )
            scores = pred.scores[..., : label.shape[-2], : label.shape[-1]]
            metric.update(scores.argmax(1), label)
            for lvl, n in pred.active_sites.items():
                sites[lvl] = sites.get(lvl, 0) + n / count
    s = metric.compute()
    return {
        "pixel_accuracy": 100 * s.pixel_accuracy,
        "miou": 100 * s.miou,
        "sites_per_level": {f"Q{k}": round(v, 1) for k, v in sorted(sites.items(), reverse=True)},
    }


def load_run(run: Path) -> TrainedModel:
    """Config and model of a ``leanseg train`` run directory, weights from ``last.pt``."""
    return load_trained_model(run, RunDirectory(run).last_checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory of leanseg train")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    trained = load_run(run)
    cfg, model = trained.cfg, trained.model
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    count = min(args.images, len(dataset))
    k = len(dataset_classes(cfg.data))
    grid = {s: evaluate(model, dataset, count, k, scheme=s) for s in ("all", "gtc", "pc")}
    print(f"{run.name}: train {model.head.train_scheme}, {count} val images")
    print("eval   Acc    mIoU   active sites per level")
    for s, r in grid.items():
        print(f"{s:>4} {r['pixel_accuracy']:6.2f} {r['miou']:6.2f}   {r['sites_per_level']}")
    budgets = [
        ("pc", 5, None),
        ("pc", 3, None),
        ("pc", 1, None),
        ("pc", 0, None),
        ("pc", 0, 200),
        ("pc", 0, 50),
        ("all", 2, None),
    ]
    anytime = []
    print("anytime: scheme min_level max_sites -> mIoU, sites per level, total sites")
    for scheme, min_level, cap in budgets:
        r = evaluate(model, dataset, count, k, scheme=scheme, min_level=min_level, max_sites=cap)
        total = sum(r["sites_per_level"].values())
        anytime.append(
            {"scheme": scheme, "min_level": min_level, "max_sites": cap, **r, "total_sites": total}
        )
        print(
            f"{scheme:>4} {min_level} {cap!s:>5} -> {r['miou']:6.2f}  {r['sites_per_level']}  "
            f"{total:.0f}"
        )
    if args.json:
        record = {"run": str(run), "images": count, "grid": grid, "anytime": anytime}
        write_result(args.json, record, threads=args.threads)


if __name__ == "__main__":
    main()
