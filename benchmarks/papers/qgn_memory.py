"""QGN activation memory, FLOPs and CPU time for the All / GTC / PC propagation schemes.

Part A (QGN Table 6, decoder and encoder-decoder): training-mode bytes saved for backward on
real CamVid labels at their own size (360x480, padded to 384x480), R50 (deep stem) QGN with
random weights, averaged over ``--images`` val images. "Decoder" = ``head.losses`` on detached
encoder features; "encoder-decoder" = ``model.losses``.

Part B (QGN Table 2) at ``--big`` (2048x1024 by default) on a synthetic street scene rendered at
that size (stands in for Cityscapes): FMAs of one eval forward (leanseg.profiling convention: fused
multiply-adds of convs/linears, sparse convs count active sites only), training-mode saved bytes
(encoder measured at half size and scaled by 4, exact for a conv net whose maps all scale with
the input; decoder measured at full size on detached features), and the decoder's CPU time
(forward + backward, best of two after a warm-up) sparse vs dense-masked on the same sites (at
``--time-size``).

PC follows the network's own composite predictions, so with random weights its site counts are
only a placeholder; ``--run RUN`` measures part A with the model of a ``leanseg train`` run
(``RUN/config.yaml`` + ``RUN/checkpoints/last.pt``, e.g. a QGN trained on CamVid) instead.

    OMP_NUM_THREADS=1 python benchmarks/papers/qgn_memory.py \
        --json benchmarks/results/qgn_memory.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig
from leanseg.models import build_segmentor
from leanseg.nn.heads.qgn import dense_masked_logits
from leanseg.profiling.flops import count_flops
from leanseg.profiling.latency import measure_latency
from leanseg.profiling.memory import activation_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import write_result
from qgn_eval_grid import load_run

TABLE6_CITYSCAPES = {"decoder": {"all": 2.28, "gtc": 0.09}, "r50": {"all": 5.85, "gtc": 3.66}}
TABLE2 = {"all": (5.85, 0.48), "gtc_pc": (3.66, 0.25)}
SCHEMES = ("all", "gtc", "pc")


def build(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone={"name": "resnet50", "deep_stem": True, "stem_features": True},
        head={"name": "qgn"},
    )
    return build_segmentor(cfg, num_classes=num_classes)


def camvid_samples(root: Path, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from leanseg.config import DataConfig
    from leanseg.data import build_dataset

    data = build_dataset(DataConfig(dataset="camvid", root=str(root)), "val", train=False)
    out = []
    for i in range(count):
        s = data[i]
        out.append(
            (torch.as_tensor(s["image"]).float()[None], torch.as_tensor(s["label"]).long()[None])
        )
    return out


def pad32(x: torch.Tensor, value: float) -> torch.Tensor:
    return F.pad(x, (0, (-x.shape[-1]) % 32, 0, (-x.shape[-2]) % 32), value=value)


def decoder_saved(model: nn.Module, image: torch.Tensor, label: torch.Tensor, scheme: str) -> int:
    head = model.head
    head.train_scheme = scheme
    with torch.no_grad():
        feats = model.features(image)
    size = tuple(image.shape[-2:])
    return activation_memory(head, image, lambda h, _: h.losses(feats, {"label": label}, size))


def part_a(args: argparse.Namespace) -> dict:
    samples = camvid_samples(Path(args.camvid), args.images)
    model = load_run(Path(args.run)).model if args.run else build(11)
    described = f"trained model of {args.run}" if args.run else "R50 QGN, random weights"
    rows = {}
    for scheme in SCHEMES:
        dec = enc_dec = sites = 0
        for image, label in samples:
            image, label = pad32(image, 0.0), pad32(label, 255)
            dec += decoder_saved(model, image, label, scheme)
            model.head.train_scheme = scheme
            enc_dec += activation_memory(
                model, image, lambda m, x, label=label: m.losses(x, {"label": label})
            )
            sites += model.head.active_sites()["Q0"]
        n = len(samples)
        rows[scheme] = {
            "decoder_bytes": dec / n,
            "encoder_decoder_bytes": enc_dec / n,
            "level0_sites": sites / n,
        }
    for scheme in SCHEMES:
        r = rows[scheme]
        r["decoder_vs_all"] = r["decoder_bytes"] / rows["all"]["decoder_bytes"]
        r["encoder_decoder_vs_all"] = (
            r["encoder_decoder_bytes"] / rows["all"]["encoder_decoder_bytes"]
        )
    print(f"Part A: CamVid val, {len(samples)} images, 384x480 (padded), {described}, training")
    print(
        f"{'scheme':>6} {'decoder MiB':>12} {'vs All':>7} {'enc-dec MiB':>12} {'vs All':>7} "
        f"{'Q0 sites':>9}   Table 6 Cityscapes (GB, ratio vs All)"
    )
    for scheme in SCHEMES:
        r = rows[scheme]
        ref = ""
        if scheme in ("all", "gtc"):
            d, e = TABLE6_CITYSCAPES["decoder"][scheme], TABLE6_CITYSCAPES["r50"][scheme]
            ref = (
                f"decoder {d:.2f} ({d / TABLE6_CITYSCAPES['decoder']['all']:.3f}), "
                f"R50 {e:.2f} ({e / TABLE6_CITYSCAPES['r50']['all']:.3f})"
            )
        print(
            f"{scheme:>6} {r['decoder_bytes'] / 2**20:12.1f} {r['decoder_vs_all']:7.3f} "
            f"{r['encoder_decoder_bytes'] / 2**20:12.1f} {r['encoder_decoder_vs_all']:7.3f} "
            f"{r['level0_sites']:9.0f}   {ref}",
            flush=True,
        )
    return {
        "images": len(samples),
        "size": [384, 480],
        "model": described,
        "rows": rows,
        "table6_cityscapes_gb": TABLE6_CITYSCAPES,
    }


class _Runner(nn.Module):
    """Eval forward with a given scheme and labels, so bench.count_flops can hook it."""

    def __init__(self, model: nn.Module, scheme: str, label: torch.Tensor) -> None:
        super().__init__()
        self.model, self.scheme, self.label = model, scheme, label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.model.features(images)
        pred = self.model.head.predict_quadtree(
            feats, tuple(images.shape[-2:]), scheme=self.scheme, label=self.label
        )
        return pred.scores


def part_b(args: argparse.Namespace) -> dict:
    from leanseg.data.synthetic import SyntheticStreetScenes

    w, h = args.big
    scene = SyntheticStreetScenes(split="val", num_samples=1, size=(h, w), cache=False)[0]
    label = torch.as_tensor(scene["label"]).long()[None]
    image = torch.randn(1, 3, h, w)
    model = build(len(SyntheticStreetScenes.classes))
    half = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
    encoder = activation_memory(model.backbone, half) * 4
    rows = {}
    for scheme in args.schemes:
        model.eval()
        flops = count_flops(_Runner(model, scheme, label), image)
        sites = model.head.active_sites()
        head_flops = sum(v for k, v in flops.by_module.items() if ".head." in f".{k}")
        dec = decoder_saved(model, image, label, scheme)
        row = {
            "fmas": flops.total,
            "head_fmas": head_flops,
            "decoder_saved_bytes": dec,
            "encoder_saved_bytes_scaled": encoder,
            "total_saved_bytes": dec + encoder,
            "sites": sites,
        }
        if args.time_size and (scheme != "all" or args.time_all):
            tw, th = args.time_size
            t_image = F.interpolate(image, size=(th, tw), mode="bilinear", align_corners=False)
            t_label = F.interpolate(label[None].float(), size=(th, tw), mode="nearest")[0].long()
            with torch.no_grad():
                t_feats = model.features(t_image)
            row.update(time_decoder(model, t_feats, t_label, scheme, (th, tw)))
            row["time_size"] = [th, tw]
        rows[scheme] = row
        print(
            f"{scheme:>4}: {flops.total / 1e12:.3f} TFMA (head {head_flops / 1e9:.1f} GFMA), "
            f"saved {(dec + encoder) / 1e9:.2f} GB (decoder {dec / 1e9:.3f} GB), sites {sites}, "
            + (
                f"decoder fwd+bwd sparse {row['sparse_s']:.2f} s vs dense-masked "
                f"{row['dense_masked_s']:.2f} s"
                if "sparse_s" in row
                else ""
            ),
            flush=True,
        )
    print(
        f"Table 2 (R50, 2048x1024): All {TABLE2['all'][0]} GB / {TABLE2['all'][1]} TFLOPs; "
        f"GTC/PC {TABLE2['gtc_pc'][0]} GB / {TABLE2['gtc_pc'][1]} TFLOPs"
    )
    return {"size": [h, w], "label": "synthetic street scene val 0", "rows": rows, "table2": TABLE2}


def time_decoder(model, feats, label, scheme, size) -> dict:
    head = model.head.train()
    feats = {k: v.detach().requires_grad_(False) for k, v in feats.items()}
    pred = head.predict_quadtree(feats, size, scheme=scheme, label=label, dense_scores=False)
    sites = {lvl: s.coords for lvl, s in pred.logits.items()}

    def sparse_step():
        p = head.predict_quadtree(feats, size, scheme=scheme, label=label, dense_scores=False)
        sum(s.features.sum() for s in p.logits.values()).backward()

    def dense_step():
        logits = dense_masked_logits(head, feats, sites)
        sum(v.sum() for v in logits.values()).backward()

    out: dict = {"time_sites": {lvl: int(c.shape[0]) for lvl, c in sites.items()}}
    for name, fn in (("sparse_s", sparse_step), ("dense_masked_s", dense_step)):
        out[name] = measure_latency(fn, warmup=1, repeats=2).min_ms / 1e3  # best of two
    head.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", default="../shared/data/camvid")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--run", help="part A with the trained model of this leanseg train run")
    parser.add_argument("--big", type=int, nargs=2, default=[2048, 1024], metavar=("W", "H"))
    parser.add_argument("--time-all", action="store_true", help="also time the All decoder")
    parser.add_argument(
        "--time-size", type=int, nargs=2, metavar=("W", "H"), help="time the decoder at W x H"
    )
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    parser.add_argument("--skip", choices=["a", "b"], help="skip one part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads}
    if args.skip != "a":
        result["camvid_table6"] = part_a(args)
    if args.skip != "b":
        result["table2"] = part_b(args)
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()
