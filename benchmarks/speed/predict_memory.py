"""Peak memory of ``leanseg predict`` on 2- to 150-megapixel images (issue 27, item 4).

``leanseg predict --max-megapixels B`` segments an image larger than ``B`` megapixels tile by
tile and never holds a float map of the whole image (:meth:`leanseg.inference.predictor.Predictor.
predict_blocks`); it writes the label PNG, overlay and OOD pictures a tile row at a time, so it
holds no full-size label map either. What may still grow is the decoded image: Pillow decodes a
PNG whole (4 bytes per pixel of colour), while with ``pyvips`` installed
(``leanseg[large-images]``) an image over the budget is decoded a strip at a time and only the
rows of one tile row are held. This script measures the whole process:

- a checkpoint of a small model (EfficientNet-Lite0 + bilinear head, random weights, the
  synthetic scenes' classes), written as the trainer writes one;
- synthetic RGB PNGs of each ``--megapixels`` size (road-scene aspect 1:2), written row block by
  row block (:func:`leanseg.visualize.write_png`);
- one ``leanseg predict`` process per image and decoder (default budget, 4 megapixels): with
  ``pyvips`` as installed (``decoder: pyvips``; the script refuses to run it where ``pyvips``
  does not import), and with ``pyvips`` made unimportable in the child (``decoder: pillow``:
  ``sys.modules["pyvips"] = None`` before ``leanseg.cli.main``, as if it were not installed);
  its peak resident memory read from the kernel's accounting of that child (``os.wait4``:
  ``ru_maxrss``), and its wall time.

``--compare REV:MP,MP`` runs the same command with leanseg as committed at git revision ``REV``
(``git archive REV src`` first on ``PYTHONPATH``) on those sizes, with Pillow; it may be given
several times. 0fba213 is leanseg before tiled prediction (a 150-megapixel image needed tens of
gigabytes, more than a shared machine should be asked for), c6a4068 before streamed outputs
and decoding.

    .venv/bin/python benchmarks/speed/predict_memory.py --megapixels 2 4 20 150 \\
        --compare 0fba213:2,20 --compare c6a4068:20,150

writes ``benchmarks/results/predict_memory.json`` (peak RSS in MiB and seconds per run, the ratio
of the largest to the smallest image per decoder, the pyvips and libvips versions, command,
machine).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks" / "results" / "predict_memory.json"


def write_checkpoint(path: Path) -> None:
    """A small model's checkpoint as the trainer writes one (weights and resolved config)."""
    import torch

    from leanseg.files.checkpoint import save_checkpoint
    from leanseg.models import build_model, run_config_from_dict

    raw = {
        "model": {
            "backbone": {"name": "efficientnet_lite0", "pretrained": None},
            "head": {"name": "bilinear"},
        },
        "data": {"dataset": "synthetic"},
        "work_dir": str(path.parent),
    }
    cfg = run_config_from_dict(raw)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0}, path)


def write_image(path: Path, megapixels: float) -> tuple[int, int]:
    """A synthetic RGB PNG of about ``megapixels`` (height : width = 1 : 2); its size."""
    from leanseg.visualize import write_png

    height = round(math.sqrt(megapixels * 1e6 / 2))
    width = 2 * height
    columns = np.arange(width)

    def blocks():  # gradients and stripes, a block of rows at a time
        step = max(1, 2_000_000 // width)
        for top in range(0, height, step):
            rows = np.arange(top, min(height, top + step))[:, None]
            red = (rows * 255 // height + 0 * columns) % 256
            green = np.broadcast_to(columns * 255 // width, red.shape)
            blue = ((rows // 64 + columns // 64) % 2) * 200
            yield np.stack([red, green, blue], axis=-1).astype(np.uint8)

    write_png(path, height, width, blocks(), channels=3)
    return height, width


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``command``; its peak resident memory in MiB, wall seconds and exit status."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, process.returncode


def source_at(revision: str, folder: Path) -> Path:
    """``src/`` of leanseg at git ``revision``, unpacked into ``folder``."""
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


# Run in the child instead of ``-m leanseg`` for decoder "pillow": pyvips cannot be imported.
WITHOUT_PYVIPS = (
    "import sys; sys.modules['pyvips'] = None; from leanseg.cli import main; sys.exit(main())"
)


def compare_item(text: str) -> tuple[str, list[float]]:
    """``REV:MP,MP`` of ``--compare``."""
    revision, _, sizes = text.partition(":")
    if not revision or not sizes:
        raise argparse.ArgumentTypeError(f"expected REV:MP[,MP...], got {text!r}")
    return revision, [float(size) for size in sizes.split(",")]


def pyvips_versions() -> dict[str, str] | None:
    """The versions of pyvips and of the libvips it loads; ``None`` when it does not import."""
    try:
        import pyvips
    except Exception:
        return None
    libvips = ".".join(str(pyvips.version(i)) for i in range(3))
    return {"pyvips": pyvips.__version__, "libvips": libvips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[2.0, 150.0])
    parser.add_argument("--max-megapixels", type=float, default=4.0, help="predict's budget")
    parser.add_argument(
        "--decoders", nargs="+", choices=["pyvips", "pillow"], default=["pyvips", "pillow"]
    )
    parser.add_argument(
        "--compare",
        type=compare_item,
        action="append",
        default=[],
        metavar="REV:MP,MP",
        help="also run leanseg at git revision REV on these sizes",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import write_result

    versions = pyvips_versions()
    if "pyvips" in args.decoders and versions is None:
        parser.error(
            "pyvips does not import: pip install -e '.[large-images]' (or --decoders pillow)"
        )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "tiny.pt"
        write_checkpoint(checkpoint)
        # (name, decoder, src folder or None for this checkout, sizes)
        variants = [("this checkout", decoder, None, args.megapixels) for decoder in args.decoders]
        for revision, sizes in args.compare:
            source = source_at(revision, work / f"compare_{revision}")
            variants.append((f"git {revision}", "pillow", source, sizes))
        for megapixels in sorted({size for *_, sizes in variants for size in sizes}):
            image = work / f"image_{megapixels:g}mp.png"
            height, width = write_image(image, megapixels)
            for name, decoder, source, sizes in variants:
                if megapixels not in sizes:
                    continue
                env = dict(os.environ)
                if source is not None:
                    env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
                out = work / f"out_{name.replace(' ', '_')}_{decoder}_{megapixels:g}"
                start = ["-m", "leanseg"] if decoder == "pyvips" else ["-c", WITHOUT_PYVIPS]
                command = [
                    sys.executable,
                    *start,
                    "predict",
                    "--checkpoint",
                    str(checkpoint),
                    str(image),
                    "--out",
                    str(out),
                    "--max-megapixels",
                    f"{args.max_megapixels:g}",
                ]
                rss, seconds, status = peak_rss(command, env)
                run = {
                    "leanseg": name,
                    "decoder": decoder,
                    "megapixels": height * width / 1e6,
                    "size": [height, width],
                    "image_file_mib": round(image.stat().st_size / 2**20, 1),
                    "peak_rss_mib": round(rss, 1),
                    "seconds": round(seconds, 1),
                    "exit_status": status,
                }
                runs.append(run)
                print(run, flush=True)
            image.unlink()
    figures: dict[str, Any] = {
        "what": "peak resident memory of one leanseg predict process per image (os.wait4 "
        "ru_maxrss), a small model (EfficientNet-Lite0 + bilinear head, random weights), "
        "synthetic RGB PNGs; decoder pyvips: pyvips as installed, pillow: pyvips made "
        "unimportable in the child",
        "max_megapixels": args.max_megapixels,
        "pyvips": versions,
        "runs": runs,
    }
    for decoder in args.decoders:
        ours = [r for r in runs if r["leanseg"] == "this checkout" and r["decoder"] == decoder]
        smallest = min(ours, key=lambda run: run["megapixels"])
        largest = max(ours, key=lambda run: run["megapixels"])
        figures[f"ratio_largest_to_smallest_{decoder}"] = round(
            largest["peak_rss_mib"] / smallest["peak_rss_mib"], 2
        )
    write_result(args.out, figures)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
