"""leanseg's fully connected CRF against the compiled reference, ``pydensecrf2`` (issue 14).

``pydensecrf2`` (Krähenbühl and Koltun's C++ code behind Cython) has no wheel: ``pip install
pydensecrf2`` compiles it, which needs a C++ compiler (20 minutes here at low priority); the other
maintained package, ``SimpleCRF``, does not build against NumPy 2 (its C code uses the removed
``NPY_IN_ARRAY``). So leanseg keeps its own torch implementation (core dependency only) and this
script checks it against the reference, in three steps, because the reference lives in an
environment of its own (numpy only, no torch needed):

    python benchmarks/papers/dense_crf_reference.py export DIR            # leanseg's env
    /path/to/crf-env/bin/python benchmarks/papers/dense_crf_reference.py reference DIR
    python benchmarks/papers/dense_crf_reference.py compare DIR           # leanseg's env

``export`` runs the CamVid recipe model on the first ``--images`` val images and saves, per image,
the RGB image, the network's probabilities at label resolution and the label map, then runs
leanseg's CRF on them (thesis parameters: w1 5, θα 70, θβ 6, w2 3, θγ 3, 10 iterations).
``reference`` runs ``pydensecrf``'s ``DenseCRF2D`` with the same parameters (Potts compatibility,
symmetric normalisation, as its defaults). ``compare`` writes ``benchmarks/results/
dense_crf_reference.json``: the share of pixels whose label the two CRFs agree on, each one's mIoU
against the labels and the mean absolute difference of probabilities, and each one's median CPU
seconds per image (one thread each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"w1": 5.0, "theta_alpha": 70.0, "theta_beta": 6.0, "w2": 3.0, "theta_gamma": 3.0}
ITERATIONS = 10


def export(folder: Path, checkpoint: str, count: int) -> None:
    import torch

    from leanseg.config import CRFConfig
    from leanseg.data import build_dataset
    from leanseg.inference.dense_crf import DenseCRF
    from leanseg.inference.loading import load_trained_model
    from leanseg.inference.predictor import predict_scores
    from leanseg.inference.speed import InferenceOptions, InferenceRunner, prepare_model

    torch.set_num_threads(1)
    trained = load_trained_model(checkpoint)
    cfg = trained.cfg
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    prepared = prepare_model(trained.model.eval(), InferenceOptions(), device="cpu")
    scorer = InferenceRunner(prepared.model, prepared.options)
    params = CRFConfig(
        iterations=ITERATIONS,
        appearance_weight=PARAMS["w1"],
        appearance_xy=PARAMS["theta_alpha"],
        appearance_rgb=PARAMS["theta_beta"],
        smoothness_weight=PARAMS["w2"],
        smoothness_xy=PARAMS["theta_gamma"],
    )
    crf = DenseCRF(params)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        rgb = np.ascontiguousarray(dataset.load_raw(index)["image"])  # uint8 (H, W, 3)
        with torch.no_grad():
            probabilities = predict_scores(scorer, sample["image"][None], scales=cfg.eval.scales)
        start = time.process_time()
        refined = crf(probabilities[0], torch.from_numpy(rgb).permute(2, 0, 1))
        seconds = time.process_time() - start
        np.savez(
            folder / f"{index:03d}.npz",
            image=rgb,
            probabilities=probabilities[0].numpy(),
            label=sample["label"].numpy(),
            leanseg=refined.numpy(),
            leanseg_seconds=seconds,
            num_classes=len(probabilities[0]),
            ignore_index=cfg.data.ignore_index,
        )
        print(f"exported {index + 1}", flush=True)


def reference(folder: Path) -> None:
    import pydensecrf.densecrf as dcrf

    for path in sorted(folder.glob("[0-9][0-9][0-9].npz")):
        data = dict(np.load(path))
        probabilities = data["probabilities"].astype(np.float32)
        classes, height, width = probabilities.shape
        unary = -np.log(np.clip(probabilities, 1e-8, None)).reshape(classes, -1)
        start = time.process_time()
        model = dcrf.DenseCRF2D(width, height, classes)
        model.setUnaryEnergy(np.ascontiguousarray(unary))
        model.addPairwiseGaussian(sxy=PARAMS["theta_gamma"], compat=PARAMS["w2"])
        model.addPairwiseBilateral(
            sxy=PARAMS["theta_alpha"],
            srgb=PARAMS["theta_beta"],
            rgbim=np.ascontiguousarray(data["image"]),
            compat=PARAMS["w1"],
        )
        q = np.array(model.inference(ITERATIONS)).reshape(classes, height, width)
        seconds = time.process_time() - start
        np.savez(path.with_suffix(".reference.npz"), q=q, seconds=seconds)
        print(f"reference {path.name}", flush=True)


def _miou(predictions: list[np.ndarray], labels: list[np.ndarray], classes: int, ignore: int):
    """mIoU in % of label maps, by leanseg's own metric."""
    import torch

    from leanseg.metrics.semantic import SegmentationMetric

    metric = SegmentationMetric(classes, ignore_index=ignore)
    for prediction, label in zip(predictions, labels, strict=True):
        metric.update(torch.from_numpy(prediction)[None], torch.from_numpy(label)[None])
    return 100 * float(metric.compute().miou)


def compare(folder: Path, out: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import write_result

    ours, theirs, none, labels, agree, diffs = [], [], [], [], [], []
    seconds = {"leanseg": [], "pydensecrf": []}
    classes = ignore = None
    for path in sorted(folder.glob("[0-9][0-9][0-9].npz")):
        data = dict(np.load(path))
        ref = dict(np.load(path.with_suffix(".reference.npz")))
        classes, ignore = int(data["num_classes"]), int(data["ignore_index"])
        ours.append(data["leanseg"].argmax(0))
        theirs.append(ref["q"].argmax(0))
        none.append(data["probabilities"].argmax(0))
        labels.append(data["label"])
        agree.append(float((ours[-1] == theirs[-1]).mean()))
        diffs.append(float(np.abs(data["leanseg"] - ref["q"]).mean()))
        seconds["leanseg"].append(float(data["leanseg_seconds"]))
        seconds["pydensecrf"].append(float(ref["seconds"]))
    if not ours:
        raise SystemExit(f"{folder}: nothing exported (run the export and reference steps)")
    pixels = int(labels[0].size)
    result = {
        "images": len(ours),
        "params": {**PARAMS, "iterations": ITERATIONS},
        "label_agreement": statistics.mean(agree),
        "mean_abs_probability_difference": statistics.mean(diffs),
        "miou_no_crf": _miou(none, labels, classes, ignore),
        "miou_leanseg_crf": _miou(ours, labels, classes, ignore),
        "miou_pydensecrf": _miou(theirs, labels, classes, ignore),
        "cpu_seconds_per_image": {k: statistics.median(v) for k, v in seconds.items()},
        "cpu_seconds_per_megapixel": {
            k: statistics.median(v) / (pixels / 1e6) for k, v in seconds.items()
        },
        "threads": 1,
        "commands": [
            "python benchmarks/papers/dense_crf_reference.py export DIR",
            "CRF_ENV/bin/python benchmarks/papers/dense_crf_reference.py reference DIR",
            "python benchmarks/papers/dense_crf_reference.py compare DIR",
        ],
    }
    write_result(out, result)
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["export", "reference", "compare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--checkpoint", default=str(REPO / "runs/lite0/ladder_camvid_2t/checkpoints/last.pt")
    )
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks/results/dense_crf_reference.json"
    )
    args = parser.parse_args()
    if args.step == "export":
        export(args.folder, args.checkpoint, args.images)
    elif args.step == "reference":
        reference(args.folder)
    else:
        compare(args.folder, args.json)


if __name__ == "__main__":
    main()
