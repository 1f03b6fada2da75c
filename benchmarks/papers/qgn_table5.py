"""QGN Table 5: share of label-quadtree leaves per level (Q5 .. Q0) and the paper's ratio.

The statistics of ``leanseg quadtree stats`` (:func:`leanseg.data.quadtree_stats.split_stats`)
for the train and val splits of a config's dataset, written as a result file with its provenance
(:func:`common.write_result`); the command's own ``--json`` has no command, date or machine.

    python benchmarks/papers/qgn_table5.py configs/baseline/rn18_bilinear_camvid.yaml \
        --json benchmarks/results/qgn_table5_camvid.json
    python benchmarks/papers/qgn_table5.py configs/baseline/rn18_bilinear_synthetic.yaml \
        --json benchmarks/results/qgn_table5_synthetic.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leanseg.data.quadtree_stats import format_table, split_stats
from leanseg.models import load_run_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config whose data section names the dataset")
    parser.add_argument("--split", nargs="+", help="splits (default: the config's train and val)")
    parser.add_argument("--max-images", type=int, help="images per split (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    cfg = load_run_config(args.config)
    splits = args.split or [cfg.data.train_split, cfg.data.val_split]
    rows = [split_stats(cfg.data, split, max_images=args.max_images) for split in splits]
    print(format_table(rows))
    if args.json:
        record = {"config": str(args.config), "rows": [row.to_dict() for row in rows]}
        write_result(args.json, record)


if __name__ == "__main__":
    main()
