"""QGN Table 5 for a configured dataset: pixels per quadtree leaf level and compression ratio.

Used by ``leanseg quadtree stats CONFIG``. Labels are read at their stored resolution through the
evaluation transform (no crop, no rescale), in the lossless ``"keep"`` ignore mode, with a 6-level
quadtree (Q5..Q0) as in QGN Table 5. Ignore pixels count like any other pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from leanseg.config import DataConfig
from leanseg.data import build_dataset
from leanseg.structures.quadtree import LevelStats, level_pixel_counts


@dataclass
class SplitStats:
    """Table 5 row: one split of one dataset."""

    dataset: str
    split: str
    images: int
    stats: LevelStats

    def to_dict(self) -> dict:
        pct = self.stats.percentages
        return {
            "dataset": self.dataset,
            "split": self.split,
            "images": self.images,
            **{f"Q{lvl}": pct[lvl] for lvl in reversed(range(len(pct)))},
            "ratio_percent": self.stats.ratio,
        }


def split_stats(
    data_cfg: DataConfig,
    split: str,
    *,
    num_levels: int = 6,
    max_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SplitStats:
    """Walk a split's label maps and aggregate :class:`LevelStats`."""
    dataset = build_dataset(data_cfg, split, train=False)
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    stats = LevelStats([0] * num_levels)
    for index in range(total):
        label = dataset[index]["label"]
        label = torch.as_tensor(np.asarray(label)) if not torch.is_tensor(label) else label
        stats.add(level_pixel_counts(label.long(), num_levels, data_cfg.ignore_index))
        if progress is not None:
            progress(index + 1, total)
    return SplitStats(data_cfg.dataset, split, total, stats)


def format_table(rows: list[SplitStats]) -> str:
    """Plain-text Table 5: ``Dataset Split Q5 .. Q0 Ratio``."""
    if not rows:
        return ""
    levels = len(rows[0].stats.counts)
    head = ["Dataset", "Split", "Images", *[f"Q{lvl}" for lvl in reversed(range(levels))], "Ratio"]
    lines = ["  ".join(f"{h:>8}" for h in head)]
    for row in rows:
        pct = row.stats.percentages
        cells = [row.dataset, row.split, str(row.images)]
        cells += [f"{pct[lvl]:.2f}" for lvl in reversed(range(levels))]
        cells.append(f"{row.stats.ratio:.2f} %")
        lines.append("  ".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)
