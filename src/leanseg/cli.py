"""The ``leanseg`` command: its parser, and train, eval, predict and demo.

The other subcommands add themselves from their own modules: ``data`` and ``quadtree``
(:mod:`leanseg.commands.data`), ``bench`` (:mod:`leanseg.commands.bench`), ``export``
(:mod:`leanseg.export`) and ``report`` (:mod:`leanseg.report.command`).

Every subcommand has ``--help``. Bad input (config, dataset, checkpoint, run directory, a flag's
value, an output folder that cannot be written) ends with a one-line ``leanseg: error: ...``
naming the file, key or flag, and exit status 2; a training run that cannot go on (NaN loss)
exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console

from leanseg import __version__
from leanseg.commands import common
from leanseg.commands.bench import add_bench_parser
from leanseg.commands.data import add_data_parsers
from leanseg.config import Config, ConfigError

if TYPE_CHECKING:
    from torch import nn

    from leanseg.engine.ood_eval import OODSeparation

# Exit statuses, kept here too for callers that read them from the command's module.
EXIT_BAD_INPUT = common.EXIT_BAD_INPUT
EXIT_FAILED = common.EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leanseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        # ``leanseg`` or ``leanseg data`` alone: the help of that level, then what is missing.
        level = getattr(args, "command_parser", parser)
        level.print_help()
        common.print_error(f"{level.prog}: choose a command (see {level.prog} --help)")
        return EXIT_BAD_INPUT
    from leanseg.data.base import DatasetError
    from leanseg.engine.checkpoint import CheckpointError
    from leanseg.engine.run_dir import RunDirError
    from leanseg.engine.trainer import TrainingError

    try:
        return int(args.handler(args) or 0)
    except (ConfigError, DatasetError, CheckpointError, RunDirError, FileNotFoundError) as err:
        common.print_error(str(err))
        return EXIT_BAD_INPUT
    except OSError as err:  # a file or folder the system refuses (permissions, disk full ...)
        where = f"{err.filename}: " if err.filename else ""
        common.print_error(f"{where}{err.strerror or err}")
        return EXIT_BAD_INPUT
    except TrainingError as err:
        common.print_error(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        common.print_error("interrupted")
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse with leanseg's one-line errors (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        common.print_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    from leanseg.engine.speed import add_inference_arguments

    parser = _Parser(
        prog="leanseg",
        description="Efficient semantic segmentation of large images.",
    )
    parser.add_argument("--version", action="version", version=f"leanseg {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a config")
    train.add_argument("config", help="YAML config file")
    common.add_overrides(train)
    train.add_argument("--work-dir", help="run directory (default: the config's work_dir)")
    train.add_argument(
        "--resume", action="store_true", help="continue from RUN/checkpoints/last.pt"
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="replace a run already in the run directory (or resume with a changed config)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    evaluate.add_argument(
        "target", help="run directory, checkpoint file, or YAML config file (with --checkpoint)"
    )
    evaluate.add_argument(
        "--checkpoint", help="checkpoint file (default for a run directory: checkpoints/best.pt)"
    )
    common.add_overrides(evaluate)
    evaluate.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    evaluate.add_argument(
        "--scales",
        type=common.POSITIVE_FLOAT,
        nargs="+",
        help="multi-scale testing, e.g. 0.75 1 1.25",
    )
    evaluate.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    evaluate.add_argument(
        "--crf",
        action="store_true",
        help="refine with the fully connected CRF (thesis 3.4; eval.crf.* sets its parameters)",
    )
    evaluate.add_argument(
        "--ood-images",
        metavar="DIR",
        help="out-of-distribution images: report the image-level AUROC of max-softmax (and, "
        "with --ood-domain, of the foreign-class flag and mass) against the evaluated split",
    )
    evaluate.add_argument(
        "--ood-domain",
        metavar="NAME",
        help="the data.datasets entry whose images are in-domain and whose classes are native",
    )
    evaluate.add_argument(
        "--max-images", type=common.POSITIVE_INT, help="evaluate at most this many images"
    )
    evaluate.add_argument(
        "--json", metavar="PATH", help="also write the scores as JSON ('-' = stdout)"
    )
    evaluate.add_argument(
        "--device", type=common.device_name, default="auto", help="cpu, cuda, cuda:1 or auto"
    )
    add_inference_arguments(evaluate)
    evaluate.set_defaults(handler=_cmd_eval)

    predict = commands.add_parser("predict", help="write label PNGs and colour overlays")
    predict.add_argument("images", nargs="+", help="image files or folders of images")
    predict.add_argument(
        "--checkpoint", required=True, help="checkpoint written by leanseg train, or its run"
    )
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--max-megapixels",
        type=common.MEGAPIXELS,
        default=4.0,
        help="memory budget: larger images are processed in overlapping tiles (default 4)",
    )
    predict.add_argument(
        "--overlap", type=common.NON_NEGATIVE_INT, default=128, help="tile overlap in pixels"
    )
    predict.add_argument(
        "--scales", type=common.POSITIVE_FLOAT, nargs="+", default=[1.0], help="test scales"
    )
    predict.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    predict.add_argument(
        "--crf",
        action="store_true",
        help="refine with the fully connected CRF (thesis 3.4), the config's eval.crf or defaults",
    )
    predict.add_argument(
        "--disparity",
        metavar="DIR",
        help="disparity maps of the images, DIR/<stem>_disparity.png or DIR/<stem>.png (16-bit, "
        "Cityscapes encoding), for depth-guided scale selection (thesis ch. 3)",
    )
    predict.add_argument(
        "--stereo-baseline",
        type=common.POSITIVE_FLOAT,
        metavar="METRES",
        help="stereo baseline of the camera that took the images (with --disparity)",
    )
    predict.add_argument(
        "--scale-levels",
        action="store_true",
        help="also write the pyramid level chosen at each pixel for each reference scale, "
        "<stem>_levels_<W>m.png (thesis Fig. 3.2; depth-guided models)",
    )
    predict.add_argument("--alpha", type=common.FRACTION, default=0.5, help="overlay opacity")
    predict.add_argument(
        "--device", type=common.device_name, default="auto", help="cpu, cuda, cuda:1 or auto"
    )
    from leanseg.engine.ood_maps import add_ood_argument

    add_ood_argument(predict)
    add_inference_arguments(predict)
    predict.set_defaults(handler=_cmd_predict)

    add_data_parsers(commands)
    add_bench_parser(commands)

    demo = commands.add_parser(
        "demo", help="generate street scenes, train a small model, evaluate, predict"
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument(
        "--iters", type=common.POSITIVE_INT, help="training iterations (default: the demo's)"
    )
    demo.add_argument("--force", action="store_true", help="replace an earlier demo run")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)

    from leanseg.export import add_export_parser
    from leanseg.report.command import add_report_parser

    add_export_parser(commands)
    add_report_parser(commands)
    return parser


# ---------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from leanseg.engine.trainer import Trainer

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    cfg = common.load_run_config(args.config, overrides)
    common.select_device(cfg.train.device, key="train.device")
    _check_crop_size(cfg)
    console = common.console()
    trainer = Trainer(
        cfg,
        resume=args.resume,
        force=args.force,
        console=console,
        show_progress=not args.no_progress,
    )
    result = trainer.train()
    if trainer.is_main:
        summary = f"best mIoU {result.best_miou:.4f}" if result.best_miou is not None else ""
        console.print(f"run finished at iteration {result.iteration}: {summary}")
        console.print(f"run directory: {result.run_dir}")
    return 0


def _check_crop_size(cfg: Config) -> None:
    """Refuse a training crop too small for batch normalisation before the run starts.

    Crops are padded to a multiple of the model's output stride; BatchNorm in training mode needs
    more than one value per channel at the coarsest level, which a batch of two always has. So
    only ``data.batch_size: 1`` needs the model, to learn its stride.
    """
    if cfg.data.batch_size > 1:
        return
    from leanseg.models import build_model, without_pretrained

    stride = build_model(without_pretrained(cfg)).size_divisor
    height, width = cfg.data.crop_size
    if -(-height // stride) * -(-width // stride) < 2:
        raise ConfigError(
            f"data.crop_size {[height, width]} with data.batch_size 1 is too small for this "
            f"model: its output stride is {stride}, and batch normalisation needs at least two "
            f"positions at that stride; use a crop of at least {stride}x{2 * stride} or a batch "
            "of 2"
        )


# ---------------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from leanseg.data import build_dataset, dataset_classes
    from leanseg.data.transforms import input_statistics
    from leanseg.engine.evaluator import evaluate
    from leanseg.engine.loading import load_trained_model
    from leanseg.engine.speed import prepare_model
    from leanseg.metrics import format_scores

    overrides = list(args.overrides)
    if args.scales:
        overrides.append(f"eval.scales={list(args.scales)}")
    if args.flip:
        overrides.append("eval.flip=true")
    if args.max_images is not None:
        overrides.append(f"eval.max_images={args.max_images}")
    if args.crf:
        overrides.append("eval.crf={}")
    device = common.select_device(args.device)
    trained = load_trained_model(args.target, args.checkpoint, overrides)
    cfg = trained.cfg
    model = trained.model.to(device)
    prepared = prepare_model(model, common.inference_options(args, device), device=device)
    common.print_notes(prepared.notes)
    split = args.split or cfg.data.val_split
    dataset = build_dataset(cfg.data, split, train=False)
    class_names = dataset_classes(cfg.data)
    console = common.console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"eval {split}", total=None)
        scores = evaluate(
            model,
            dataset,
            num_classes=len(class_names),
            eval_cfg=cfg.eval,
            device=device,
            ignore_index=cfg.data.ignore_index,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
            class_names=class_names,
            options=prepared,
            image_statistics=input_statistics(cfg.data),
        )
    out = Console()
    out.print(format_scores(scores, class_names))
    out.print(f"inference: {prepared.options.describe()}")
    if scores.active_sites is not None:
        cost = ", ".join(f"{level} {sites:.0f}" for level, sites in scores.active_sites.items())
        out.print(f"active sites per image: {cost}")
    if scores.instance_ap is not None:
        from leanseg.instance_metrics import format_instance_ap

        out.print(format_instance_ap(scores.instance_ap, class_names))
    if scores.category_iou is not None and scores.category_miou is not None:
        cats = ", ".join(f"{name} {100 * v:.1f}" for name, v in scores.category_iou.items())
        out.print(f"category IoU {100 * scores.category_miou:.2f} % ({cats})")
    if scores.miiou is not None:
        out.print(f"iIoU {100 * scores.miiou:.2f} % (classes with instances)")
    if scores.category_miiou is not None:
        out.print(f"category iIoU {100 * scores.category_miiou:.2f} %")
    ood = _ood_separation(args, model, cfg, split, device) if args.ood_images else None
    if ood is not None:
        aurocs = ", ".join(f"{name} {value:.3f}" for name, value in ood.auroc.items())
        out.print(f"OOD image AUROC ({ood.in_images} in-domain, {ood.out_images} OOD): {aurocs}")
    per_dataset = {}
    if cfg.data.datasets is not None:
        from leanseg.engine.domain_eval import evaluate_per_dataset

        per_dataset = evaluate_per_dataset(model, cfg.data, split, eval_cfg=cfg.eval, device=device)
        for name, own in per_dataset.items():
            foreign = own.foreign_fraction or 0.0
            out.print(f"{name}: mIoU {100 * own.miou:.2f} %, foreign pixels {100 * foreign:.3f} %")
    if args.json:
        record = {
            "checkpoint": str(trained.checkpoint),
            "iteration": trained.iteration,
            "split": split,
            "scales": cfg.eval.scales,
            "flip": cfg.eval.flip,
            "inference": {**prepared.options.to_dict(), "notes": list(prepared.notes)},
            **scores.to_dict(),
        }
        if per_dataset:
            record["per_dataset"] = {name: own.to_dict() for name, own in per_dataset.items()}
        if ood is not None:
            record["ood"] = ood.to_dict()
        common.write_json(record, args.json)
    return 0


def _ood_separation(
    args: argparse.Namespace, model: nn.Module, cfg: Config, split: str, device: object
) -> OODSeparation:
    """``--ood-images`` / ``--ood-domain`` of ``leanseg eval`` (:mod:`leanseg.engine.ood_eval`)."""
    from leanseg.engine.inference import Predictor
    from leanseg.engine.ood_eval import in_domain_images, ood_separation, read_images
    from leanseg.engine.ood_maps import domain_classes

    native = None if args.ood_domain is None else domain_classes(cfg.data, args.ood_domain)
    try:
        out_paths = _collect_images([args.ood_images])
    except FileNotFoundError as err:
        raise ConfigError(f"--ood-images: {err}") from None
    predictor = Predictor(
        model,
        cfg,
        device=device,
        scales=tuple(cfg.eval.scales),
        flip=cfg.eval.flip,
        options=common.inference_options(args, device),
    )
    return ood_separation(
        predictor.predict_scores,
        in_domain_images(cfg, split, args.ood_domain),
        read_images(out_paths),
        native,
    )


# ---------------------------------------------------------------------- predict


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
# Names of the files ``predict`` wrote into an output folder, so that a rerun may replace them
# and nothing else.
PREDICT_MANIFEST = ".leanseg_predict.json"
_MANIFEST_TAG = "leanseg predict outputs"


def _collect_images(paths: Sequence[str]) -> list[Path]:
    images: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            images += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    if not images:
        raise FileNotFoundError(f"no images found in {', '.join(paths)}")
    seen: set[Path] = set()
    unique = []  # an image named twice (as a file and in its folder) is predicted once
    for path in images:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def output_stems(images: Sequence[Path]) -> dict[Path, str]:
    """The stem of each input's outputs: its own stem, plus its suffix where stems collide.

    ``a.png`` alone gives ``a`` (outputs ``a.png``, ``a_overlay.png``); ``a.png`` and ``a.jpg``
    together give ``a_png`` and ``a_jpg``. Stems are compared case-insensitively, as some file
    systems do.

    Raises:
        ConfigError: naming both inputs, when two inputs would still write the same file (the
            same name in two folders, or ``a.png`` beside ``a_overlay.png``).
    """
    by_stem: dict[str, list[Path]] = {}
    for path in images:
        by_stem.setdefault(path.stem.casefold(), []).append(path)
    stems = {
        path: path.stem
        if len(by_stem[path.stem.casefold()]) == 1
        else f"{path.stem}_{path.suffix[1:]}"
        for path in images
    }
    writers: dict[str, Path] = {}
    for path, stem in stems.items():
        for name in (f"{stem}.png", f"{stem}_overlay.png"):
            other = writers.setdefault(name.casefold(), path)
            if other != path:
                raise ConfigError(
                    f"{other} and {path} would both write {name}; predict them into separate "
                    "--out folders"
                )
    return stems


def _check_output_folder(out: Path, images: Sequence[Path], names: Sequence[str]) -> set[str]:
    """Check that ``names`` may be written into ``out``; writes nothing.

    Returns:
        The names a previous ``predict`` recorded in ``out`` (empty for a new folder).

    Raises:
        ConfigError: ``out`` is a folder the inputs are read from, or is not a folder; a file to
            be written exists and is not a previous output of ``predict``.
    """
    resolved = out.resolve()
    for path in images:
        if path.resolve().parent == resolved:
            raise ConfigError(
                f"--out {out} is the folder of the input image {path}; choose another folder "
                "(predict never writes beside its inputs)"
            )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    previous = _read_manifest(out / PREDICT_MANIFEST)
    for name in names:
        target = out / name
        if (target.exists() or target.is_symlink()) and (
            name not in previous or target.is_symlink() or not target.is_file()
        ):
            raise ConfigError(
                f"{target} exists and was not written by leanseg predict; move it or choose "
                "another --out"
            )
    return previous


def _record_outputs(out: Path, names: set[str]) -> None:
    """Create ``out`` and record ``names`` as outputs of ``predict`` in its manifest."""
    from leanseg.utils import atomic_write_text

    record = {"written_by": _MANIFEST_TAG, "files": sorted(names)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / PREDICT_MANIFEST, json.dumps(record, indent=1) + "\n")
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _read_manifest(manifest: Path) -> set[str]:
    """Names a previous predict recorded in ``manifest``; empty if there is none."""
    from leanseg.utils import read_output_manifest

    previous = read_output_manifest(manifest, _MANIFEST_TAG)
    if previous is None:
        raise ConfigError(
            f"{manifest} exists and is not a leanseg predict record; move it or choose "
            "another --out"
        )
    return previous


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from rich.progress import Progress

    from leanseg.data.io import read_rgb
    from leanseg.engine.dense_crf import DenseCRF
    from leanseg.engine.inference import Predictor, megapixels_to_pixels
    from leanseg.engine.ood_maps import (
        domain_classes,
        ood_output_names,
        predict_with_ood,
        write_ood_maps,
    )
    from leanseg.engine.scale_levels import (
        disparity_file,
        level_maps,
        level_output_names,
        read_disparity,
        save_level_maps,
    )
    from leanseg.visualize import overlay, save_label_png, save_rgb_png

    images = _collect_images(args.images)
    stems = output_stems(images)
    device = common.select_device(args.device)
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=device,
        max_pixels=megapixels_to_pixels(args.max_megapixels),
        overlap=args.overlap,
        scales=tuple(args.scales),
        flip=args.flip,
        options=common.inference_options(args, device),
    )
    if args.crf:
        # The run's own CRF parameters where its config has them, else the defaults.
        predictor.crf = DenseCRF(predictor.cfg.eval.crf if predictor.cfg else None)
    common.print_notes(predictor.notes)
    depth = _depth_arguments(args, predictor.model)
    # Thesis 5.3: pixels predicted as classes foreign to a chosen domain flag unfamiliar content.
    native = domain_classes(predictor.cfg.data, args.ood_domain) if args.ood_domain else None
    # Heads with a data-dependent cost (QGN) report it with every prediction.
    reports_cost = predictor.last_active_sites is not None
    names = [name for stem in stems.values() for name in (f"{stem}.png", f"{stem}_overlay.png")]
    names += ["active_sites.json"] if reports_cost else []
    if native is not None:
        names += [name for stem in stems.values() for name in ood_output_names(stem)]
    if args.scale_levels:
        scales = predictor.model.multiplexer.reference_scales
        names += [name for stem in stems.values() for name in level_output_names(stem, scales)]
    out = Path(args.out)
    previous = _check_output_folder(out, images, names)
    console = common.console()
    costs: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("predict", total=len(images))
        for index, path in enumerate(images):
            image = read_rgb(path)
            inputs = None
            if depth is not None:
                disparity_path = disparity_file(depth, path.stem)
                disparity = torch.from_numpy(read_disparity(disparity_path, image.shape[:2]))
                inputs = {
                    "disparity": disparity[None],
                    "stereo_baseline": torch.tensor([args.stereo_baseline]),
                }
            try:
                label, probabilities = predict_with_ood(predictor, image, native, inputs)
            except ValueError as err:  # e.g. an overlap too large for the tiles of the budget
                raise ConfigError(f"{path}: {err}") from None
            if index == 0:  # the output folder appears with the first result, not before
                _record_outputs(out, previous | set(names))
            stem = stems[path]
            save_label_png(label, out / f"{stem}.png", predictor.palette)
            blended = overlay(image, label, predictor.palette, alpha=args.alpha)
            save_rgb_png(np.asarray(blended), out / f"{stem}_overlay.png")
            if probabilities is not None:
                write_ood_maps(probabilities, native, out, stem)
            if args.scale_levels and inputs is not None:
                model = predictor.model
                levels = level_maps(
                    model, disparity.to(predictor.device), args.stereo_baseline, image.shape[:2]
                )
                save_level_maps(
                    levels,
                    model.multiplexer.reference_scales,
                    model.multiplexer.num_levels,
                    out,
                    stem,
                )
            if reports_cost:
                costs[path.name] = predictor.last_active_sites or {}
            progress.advance(task)
    console.print(f"wrote {len(images)} label maps and overlays to {out}")
    if costs:
        common.write_json(costs, str(out / "active_sites.json"))
        console.print(f"active sites per level of each image: {out / 'active_sites.json'}")
    return 0


def _depth_arguments(args: argparse.Namespace, model: nn.Module) -> Path | None:
    """The ``--disparity`` folder when the model reads disparity; errors name the flag."""
    from leanseg.engine.scale_levels import selects_levels
    from leanseg.nn.segmentor import extra_inputs

    needs = "disparity" in extra_inputs(model)
    if args.scale_levels and not selects_levels(model):
        raise ConfigError(
            "--scale-levels: the model does not choose pyramid levels from depth (only "
            "head scale_invariant does)"
        )
    if not needs:
        for flag, value in (
            ("--disparity", args.disparity),
            ("--stereo-baseline", args.stereo_baseline),
        ):
            if value is not None:
                raise ConfigError(f"{flag}: this model does not read disparity")
        return None
    if args.disparity is None or args.stereo_baseline is None:
        raise ConfigError(
            "the model selects scales by depth: give --disparity DIR and --stereo-baseline METRES"
        )
    folder = Path(args.disparity)
    if not folder.is_dir():
        raise ConfigError(f"--disparity: {folder} is not a folder")
    return folder


# ---------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from leanseg.demo import run_demo

    run_demo(Path(args.out), iters=args.iters, force=args.force, show_progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
