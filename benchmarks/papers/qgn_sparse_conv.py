"""Submanifold 3x3 sparse conv vs dense conv2d with a mask (QGN A.1), forward + backward.

Sites are "quadtree-like": a real CamVid label (or a synthetic scene) is resized (nearest) to the
grid, every pixel is ranked by the level of its quadtree leaf (finest first, i.e. class boundaries
first; ties broken by a random key shared by each 8x8 cell) and the top p % become active.
Saved bytes = tensors autograd (or the sparse Function) keeps for backward, as
``leanseg.profiling.memory.activation_memory`` counts them. ``--algorithms`` times each way
:class:`~leanseg.nn.sparse.SubmConv2d` can compute the conv (``gather``, ``offset``, ``dense``,
``auto``) on the same sites; the first one listed fills the summary columns.

    OMP_NUM_THREADS=1 python benchmarks/papers/qgn_sparse_conv.py \
        --json benchmarks/results/qgn_sparse_conv.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leanseg.nn.sparse import SparseTensor, SubmConv2d
from leanseg.profiling.latency import measure_latency
from leanseg.structures.quadtree import leaf_level_map, t_pyramid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import write_result


def quadtree_like_mask(label: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Bool ``(1, H, W)``: the ``fraction`` of pixels whose leaves are finest."""
    levels = leaf_level_map(t_pyramid(label[None], 6))[0].float()
    h, w = levels.shape
    g = torch.Generator().manual_seed(seed)
    tie = torch.rand((h + 7) // 8, (w + 7) // 8, generator=g)
    tie = tie.repeat_interleave(8, 0).repeat_interleave(8, 1)[:h, :w]
    key = (levels + 0.999 * tie).reshape(-1)
    n = max(1, round(fraction * h * w))
    mask = torch.zeros(h * w, dtype=torch.bool)
    mask[key.topk(n, largest=False).indices] = True
    return mask.view(1, h, w)


def load_label(size: tuple[int, int], camvid: Path) -> tuple[torch.Tensor, str]:
    files = sorted((camvid / "valannot").glob("*.png"))
    if files:
        import numpy as np
        from PIL import Image

        label = torch.from_numpy(np.array(Image.open(files[0]))).long()
        source = f"CamVid {files[0].name}"
    else:
        from leanseg.data.synthetic import SyntheticStreetScenes

        label = torch.as_tensor(SyntheticStreetScenes(split="val", size=size)[0]["label"]).long()
        source = "synthetic scene 0"
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return label, source


def saved_bytes(fn) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def timed(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    return measure_latency(fn, warmup=1, repeats=repeats).min_ms / 1e3


def measure(conv: SubmConv2d, dense_x: torch.Tensor, mask: torch.Tensor, repeats: int) -> tuple:
    """Time and saved bytes of one sparse vs dense-masked forward + backward."""
    sp = SparseTensor.from_dense(dense_x, mask)
    # Eq. 11 upsampling leaves sites in parent order, not raster order: time that case.
    order = torch.randperm(sp.num_sites, generator=torch.Generator().manual_seed(0))
    sp = SparseTensor(sp.coords[order], sp.features[order], sp.spatial_shape)
    feats = sp.features.clone().requires_grad_(True)
    t0 = time.perf_counter()
    sp.neighbours()
    table_s = time.perf_counter() - t0

    def sparse_step():
        out = conv(sp.replace(feats))
        out.features.sum().backward()

    m = mask[:, None].float()
    xin = dense_x.clone().requires_grad_(True)

    def dense_fwd():
        return F.conv2d(xin * m, conv.weight, conv.bias, padding=1) * m

    def dense_step():
        dense_fwd().sum().backward()

    sparse_s = timed(sparse_step, repeats)
    dense_s = timed(dense_step, repeats)
    sparse_b = saved_bytes(lambda: conv(sp.replace(feats)).features)
    dense_b = saved_bytes(dense_fwd)
    return sp, table_s, sparse_s, dense_s, sparse_b, dense_b


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.size
    label, source = load_label((h, w), Path(args.camvid))
    c = args.channels
    dense_x = torch.randn(1, c, h, w)
    rows = []
    for pct in args.percents:
        mask = quadtree_like_mask(label, pct / 100)
        row: dict = {"active_percent": pct, "algorithms": {}}
        for algorithm in args.algorithms:
            torch.manual_seed(0)
            conv = SubmConv2d(c, c, 3, algorithm=algorithm)
            sp, table_s, sparse_s, dense_s, sparse_b, dense_b = measure(
                conv, dense_x, mask, args.repeats
            )
            ran = conv.choose_algorithm(sp)
            row["algorithms"][algorithm] = {
                "ran": ran,
                "sparse_s": sparse_s,
                "speedup": dense_s / sparse_s,
                "sparse_saved_bytes": sparse_b,
                "saved_ratio": sparse_b / dense_b,
            }
            if algorithm == args.algorithms[0]:
                row.update(
                    {
                        "algorithm": algorithm,
                        "sites": sp.num_sites,
                        "sparse_s": sparse_s,
                        "dense_masked_s": dense_s,
                        "speedup": dense_s / sparse_s,
                        "neighbour_table_s": table_s,
                        "sparse_saved_bytes": sparse_b,
                        "dense_saved_bytes": dense_b,
                        "saved_ratio": sparse_b / dense_b,
                    }
                )
            print(
                f"{pct:>5.1f} %  sites {sp.num_sites:>8}  {algorithm:>6} ({ran:>6}) "
                f"{sparse_s * 1e3:8.1f} ms  dense-masked {dense_s * 1e3:8.1f} ms  "
                f"speedup {dense_s / sparse_s:5.2f}x  saved {sparse_b / 2**20:7.1f} / "
                f"{dense_b / 2**20:7.1f} MiB ({100 * sparse_b / dense_b:5.1f} %)  "
                f"table {table_s * 1e3:.1f} ms",
                flush=True,
            )
        rows.append(row)
    return {
        "grid": [h, w],
        "channels": c,
        "threads": args.threads,
        "label": source,
        "timing": f"best of {args.repeats} forward+backward, after one warm-up",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--percents", type=float, nargs="+", default=[100, 25, 10, 3])
    parser.add_argument(
        "--algorithms",
        nargs="+",
        default=["auto"],
        choices=["auto", "gather", "offset", "dense"],
        help="SubmConv2d algorithms to time (the first fills the summary columns)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--camvid", default="../shared/data/camvid")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()
