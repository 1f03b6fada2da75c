"""``leanseg export``: its arguments and its handler; the export itself is :mod:`leanseg.export`.

The parser reads the exporter's defaults (opset, tolerance) from :mod:`leanseg.export`; onnx
and onnxruntime are imported only by the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leanseg.config import limits
from leanseg.export import DEFAULT_OPSET, DEFAULT_TOLERANCE


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(
        part.isascii() and part.isdigit() and len(part) <= 12 and int(part) > 0 for part in parts
    ):
        raise argparse.ArgumentTypeError(f"expected a size HxW such as 96x128, got {text!r}")
    height, width = int(parts[0]), int(parts[1])
    problem = limits.size_problem(height, width)  # refused before a model runs at that size
    if problem:
        raise argparse.ArgumentTypeError(f"{text} is too large: {problem}")
    return height, width


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_parser(subparsers: Any) -> Any:
    """Add ``leanseg export`` to the ``leanseg`` command's subparsers; returns its parser."""
    export = subparsers.add_parser(
        "export",
        help="export a model to ONNX, verified in onnxruntime",
        description=(
            "Export to ONNX with dynamic batch, height and width. The file is kept only if "
            "onnxruntime matches PyTorch within --tolerance at two input sizes."
        ),
    )
    export.add_argument(
        "source", help="run directory, checkpoint file, or YAML config file (with --checkpoint)"
    )
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument(
        "--checkpoint", help="checkpoint file (default for a run directory: checkpoints/best.pt)"
    )
    export.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )
    export.add_argument(
        "--random-init",
        action="store_true",
        help="export a config without a checkpoint, with random weights (for testing)",
    )
    export.add_argument(
        "--fold-bn",
        action="store_true",
        help="merge each batch-normalisation layer into the convolution before it (same "
        "outputs, a smaller and faster graph)",
    )
    export.add_argument(
        "--include-normalization",
        action="store_true",
        help="the graph takes 0..255 RGB and applies the model's mean/std itself",
    )
    export.add_argument(
        "--input-dtype",
        choices=["float32", "uint8"],
        default="float32",
        help="input dtype with --include-normalization (default float32)",
    )
    export.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    export.add_argument(
        "--check-sizes",
        type=_size,
        nargs="+",
        metavar="HxW",
        help="input sizes to verify at, two or more (default: two small sizes, one padded)",
    )
    export.add_argument(
        "--tolerance",
        type=_positive_float,
        default=DEFAULT_TOLERANCE,
        help=f"largest max-abs score difference accepted (default {DEFAULT_TOLERANCE:g})",
    )
    export.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch's ONNX exporter (default torchscript: fast; dynamo needs onnxscript)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an ONNX model leanseg exported earlier at --out (never another file)",
    )
    export.set_defaults(handler=run_export_command)
    return export


def run_export_command(args: Any) -> int:
    """``leanseg export``: load, export, verify; print the differences. Returns the exit status.

    A model that does not export exits with 2, a failed export or verification with 1; bad
    input (config, checkpoint, existing ``--out``) raises for ``leanseg``'s common handling.
    """
    from leanseg import models
    from leanseg.config import ConfigError
    from leanseg.data import dataset_classes
    from leanseg.export import ONNX_MODEL, ExportError, UnsupportedModelError, export_onnx
    from leanseg.files.outputs import check_output_path
    from leanseg.inference.loading import CONFIG_SUFFIXES, load_trained_model
    from leanseg.nn.backbones.base import Normalization
    from leanseg.version import __version__

    source = Path(args.source)
    out = check_output_path(args.out, ONNX_MODEL, force=args.force, flag="--out")
    is_config = source.is_file() and source.suffix.lower() in CONFIG_SUFFIXES
    if is_config and args.checkpoint is None:
        if not args.random_init:
            raise ConfigError(
                f"{source} is a config file: give --checkpoint to export trained weights, or "
                "--random-init to export random ones"
            )
        cfg = models.load_run_config(source, list(args.overrides))
        model = models.build_model(models.without_pretrained(cfg)).eval()
        origin = {"leanseg.source": str(source), "leanseg.weights": "random init"}
    else:
        trained = load_trained_model(source, args.checkpoint, args.overrides)
        model, cfg = trained.model, trained.cfg
        origin = {
            "leanseg.source": str(source),
            "leanseg.weights": str(trained.checkpoint),
            "leanseg.iteration": str(trained.iteration),
        }
    normalization = Normalization(mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))
    try:
        result = export_onnx(
            model,
            out,
            normalization=normalization,
            class_names=dataset_classes(cfg.data),
            include_normalization=args.include_normalization,
            input_dtype=args.input_dtype,
            fold_bn=args.fold_bn,
            opset=args.opset,
            sizes=args.check_sizes,
            tolerance=args.tolerance,
            exporter=args.exporter,
            force=args.force,
            metadata={**origin, "leanseg.version": __version__},
        )
    except ExportError as err:
        print(f"leanseg: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2 if isinstance(err, UnsupportedModelError) else 1
    for check in result.checks:
        print(f"onnxruntime vs PyTorch, input {check.shape}: max abs diff {check.max_abs_diff:.3g}")
    folded = f", {result.folded_bn} BatchNorm folded" if args.fold_bn else ""
    print(
        f"wrote {result.path} (opset {args.opset}{folded}; max abs diff "
        f"{result.max_abs_diff:.3g} <= {args.tolerance:g})"
    )
    return 0
