"""Time ``Predictor.from_checkpoint`` of an EfficientNet-Lite0 + ladder checkpoint (issue 28).

Loading a trained model for ``leanseg predict`` rebuilds it from the checkpoint's config, reads
the weights and prepares it with the default inference options (BN folded, channels-last), whose
exactness :func:`leanseg.inference.speed.prepare_model` checks on a small example. This script
times that whole call, default options, on the CPU:

- ``first_load``: the first ``from_checkpoint`` of a fresh Python process, after the imports a
  script makes (``from leanseg import Predictor``): what a user of
  ``leanseg predict`` or a script waits for. The CPU kernels of every layer are set up on their
  first call, so this is the larger figure. One process per sample; the median is reported;
- ``warm_load``: the next ``--loads`` calls in the same processes (a service reloading a model).

The checkpoint is ``--checkpoint``, or else one written as the trainer writes it (model weights,
resolved config, Adam state after one step on a random batch) for ``configs/lite0/
ladder_camvid.yaml`` with random weights and randomised BN statistics: the load time does not
depend on the weight values.

``--compare REV`` times the same call with leanseg as committed at git revision ``REV`` too
(``git archive REV src`` put first on ``PYTHONPATH`` of its processes), alternating processes
of the two so that both see the same load on a shared machine; the JSON then gives the ratio.

    .venv/bin/python benchmarks/speed/predictor_load.py --processes 7 --loads 3 --compare 0736ae8

writes ``benchmarks/results/predictor_load.json`` (figures in seconds, command, machine); the
figures quoted in the notes are read from there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/lite0/ladder_camvid.yaml"


def write_checkpoint(path: Path) -> None:
    """A Lite0 ladder checkpoint as the trainer writes it: weights, config, Adam state."""
    import torch

    from leanseg.files.checkpoint import save_checkpoint
    from leanseg.models import build_model, load_run_config, without_pretrained

    cfg = load_run_config(CONFIG)
    torch.manual_seed(0)
    model = build_model(without_pretrained(cfg))
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():  # statistics a trained model could have: folding changes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    images = torch.randn(2, 3, 64, 96, generator=generator)
    model(images).mean().backward()
    optimizer.step()
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": cfg.to_dict(),
        "iteration": 1,
    }
    save_checkpoint(payload, path)


def child(checkpoint: str, loads: int) -> None:
    """Run in a fresh process: time the first and ``loads`` more loads, print them as JSON."""
    start = time.perf_counter()
    import torch

    import leanseg
    from leanseg import Predictor  # the public name: the same at every revision compared

    imported = time.perf_counter() - start
    times = []
    for _ in range(1 + loads):
        start = time.perf_counter()
        predictor = Predictor.from_checkpoint(checkpoint)
        times.append(time.perf_counter() - start)
    result = {
        "import_s": imported,
        "first_s": times[0],
        "warm_s": times[1:],
        "options": predictor.options.describe(),
        "notes": list(predictor.notes),
        "leanseg": str(Path(leanseg.__file__).parent),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


def export_revision(revision: str, folder: Path) -> Path:
    """``src/`` of the repository at ``revision`` extracted under ``folder``; returns that src."""
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def run_child(checkpoint: Path, loads: int, source: Path | None) -> dict[str, Any]:
    """One fresh process's figures; ``source``: the leanseg ``src`` to import instead."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    line = [sys.executable, str(Path(__file__).resolve()), "--child", str(checkpoint)]
    line += ["--loads", str(loads)]
    done = subprocess.run(line, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of the first and warm loads of several processes, in seconds."""
    first = [sample["first_s"] for sample in samples]
    warm = [value for sample in samples for value in sample["warm_s"]]
    imports = [sample["import_s"] for sample in samples]

    def spread(values: list[float]) -> dict[str, Any]:
        return {
            "median_s": round(statistics.median(values), 4),
            "min_s": round(min(values), 4),
            "max_s": round(max(values), 4),
            "count": len(values),
        }

    return {
        "first_load": spread(first),
        "warm_load": spread(warm) if warm else None,
        "import": spread(imports),
        "options": samples[0]["options"],
        "notes": samples[0]["notes"],
        "leanseg": samples[0]["leanseg"],
        "threads": samples[0]["threads"],
        "first_load_s_each": [round(value, 4) for value in first],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: one written for the Lite0 ladder")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes (samples)")
    parser.add_argument("--loads", type=int, default=3, help="warm loads after the first, each")
    parser.add_argument("--compare", metavar="REV", help="also time leanseg at this git revision")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/predictor_load.json")
    parser.add_argument("--child", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.loads)
        return
    # Imported only here: common imports leanseg, whose import a child process times.
    from common import write_result

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = Path(tmp) / "lite0_ladder.pt"
            write_checkpoint(checkpoint)
        sources: dict[str, Path | None] = {"now": None}
        if args.compare:
            sources[args.compare] = export_revision(args.compare, Path(tmp) / "before")
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
        for index in range(args.processes):
            for name, source in sources.items():  # alternating: both see the same load
                sample = run_child(checkpoint, args.loads, source)
                samples[name].append(sample)
                print(
                    f"[{index + 1}/{args.processes}] {name}: first {sample['first_s']:.3f} s, "
                    f"warm {', '.join(f'{value:.3f}' for value in sample['warm_s'])} s",
                    flush=True,
                )
        checkpoint_size = checkpoint.stat().st_size

    results = {name: figures(found) for name, found in samples.items()}
    payload: dict[str, Any] = {
        "checkpoint": str(args.checkpoint) if args.checkpoint else f"written from {CONFIG.name}",
        "checkpoint_bytes": checkpoint_size,
        "results": results,
    }
    if args.compare:
        before, now = results[args.compare], results["now"]
        payload["ratio_now_to_before"] = {
            key: round(now[key]["median_s"] / before[key]["median_s"], 3)
            for key in ("first_load", "warm_load")
            if now[key] and before[key]
        }
    write_result(args.out, payload)
    for name, found in results.items():
        warm = found["warm_load"]
        print(
            f"{name}: first load {found['first_load']['median_s']:.3f} s (median of "
            f"{found['first_load']['count']}), warm load "
            f"{warm['median_s'] if warm else float('nan'):.3f} s"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
