"""``leanseg predict``: label PNGs, overlays and optional maps (OOD, scale levels) of images.

:func:`add_parser` adds it to the ``leanseg`` command. Outputs go into ``--out`` only,
never beside the inputs, and replace only files a previous ``predict`` recorded there; one
process at a time writes into a folder.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanseg.commands import common
from leanseg.config import ConfigError, limits

if TYPE_CHECKING:
    import torch
    from torch import nn

    from leanseg.data.io import ImageRegions
    from leanseg.inference.ood_maps import LabelBand
    from leanseg.inference.predictor import Predictor

# A test-time scale: positive, and at most leanseg.config.limits.MAX_SCALE.
_SCALE = common.number(
    float, lambda v: 0 < v <= limits.MAX_SCALE, f"a positive number, at most {limits.MAX_SCALE:g}"
)

# Names of the files ``predict`` wrote into an output folder, so that a rerun may replace them
# and nothing else.
PREDICT_MANIFEST = ".leanseg_predict.json"
_MANIFEST_TAG = "leanseg predict outputs"


def add_parser(commands: Any) -> None:
    """Add ``predict`` to ``commands`` (what ``add_subparsers`` returned)."""
    from leanseg.inference.speed import add_inference_arguments

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
        help="memory budget: larger images are segmented in overlapping tiles, one at a time, "
        "and their outputs written a tile row at a time, so that memory does not grow with the "
        "image; the decoded image still does (Pillow: up to 4 bytes per pixel) unless "
        "leanseg[large-images] (pyvips) is installed, which decodes it a strip at a time "
        "(default 4)",
    )
    predict.add_argument(
        "--max-image-megapixels",
        type=common.MEGAPIXELS,
        default=limits.MAX_IMAGE_MEGAPIXELS,
        help="refuse images with more pixels than this, read from the file's header before "
        f"decoding (default {limits.MAX_IMAGE_MEGAPIXELS:g})",
    )
    predict.add_argument(
        "--overlap",
        type=common.NON_NEGATIVE_INT,
        default=128,
        help="pixels by which neighbouring tiles overlap, so that tile borders do not show "
        "(default 128)",
    )
    predict.add_argument(
        "--scales",
        type=_SCALE,
        nargs="+",
        default=[1.0],
        help="run the model on the image rescaled by each of these factors and average the "
        "scores, e.g. 0.75 1 1.25 (slower; default 1)",
    )
    predict.add_argument(
        "--flip",
        action="store_true",
        help="also run the model on the mirrored image and average the two (a little more "
        "accurate, twice the time)",
    )
    predict.add_argument(
        "--crf",
        action="store_true",
        help="clean up the label map with a fully connected CRF, which pulls nearby pixels of "
        "similar colour towards the same class (slow on large images; parameters from the "
        "config's eval.crf; Krähenbühl & Koltun 2011, thesis sec. 3.4)",
    )
    predict.add_argument(
        "--disparity",
        metavar="DIR",
        help="for models that choose how far to zoom in by depth (configs/scale_selection): "
        "the stereo disparity maps of the images, DIR/<stem>_disparity.png or DIR/<stem>.png "
        "(16-bit, Cityscapes encoding); thesis ch. 3",
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
        help="with a depth-guided model: also write which zoom level it chose at each pixel, "
        "one map per reference object width, <stem>_levels_<W>m.png (thesis Fig. 3.2)",
    )
    predict.add_argument(
        "--alpha",
        type=common.FRACTION,
        default=0.5,
        help="opacity of the class colours over the image in *_overlay.png (0 to 1, default 0.5)",
    )
    predict.add_argument(
        "--device", type=common.device_name, default="auto", help="cpu, cuda, cuda:1 or auto"
    )
    from leanseg.inference.ood_maps import add_ood_argument

    add_ood_argument(predict)
    add_inference_arguments(predict)
    predict.set_defaults(handler=_cmd_predict)


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
    from leanseg.files.atomic import atomic_write_text

    record = {"written_by": _MANIFEST_TAG, "files": sorted(names)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / PREDICT_MANIFEST, json.dumps(record, indent=1) + "\n")
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _read_manifest(manifest: Path) -> set[str]:
    """Names a previous predict recorded in ``manifest``; empty if there is none."""
    from leanseg.files.atomic import read_output_manifest

    previous = read_output_manifest(manifest, _MANIFEST_TAG)
    if previous is None:
        raise ConfigError(
            f"{manifest} exists and is not a leanseg predict record; move it or choose "
            "another --out"
        )
    return previous


def _cmd_predict(args: argparse.Namespace) -> int:
    """Predict while holding the lock of ``--out``: another process writing into the same folder
    is refused, naming this one (:mod:`leanseg.files.folder_lock`)."""
    from leanseg.files.folder_lock import FolderLock

    with FolderLock(args.out, "leanseg predict"):
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    """Write the label map, overlay and requested maps of every input image into ``--out``."""
    from rich.progress import Progress

    from leanseg.data.io import ImageRegions, streaming_unavailable
    from leanseg.inference.ood_maps import domain_classes, predict_bands

    if len(args.scales) > limits.MAX_SCALE_COUNT:
        raise ConfigError(
            f"--scales: {len(args.scales)} scales given, at most {limits.MAX_SCALE_COUNT}"
        )
    images = common.collect_images(args.images)
    stems = output_stems(images)
    predictor = _load_predictor(args)
    depth = _depth_arguments(args, predictor.model)
    # Thesis 5.3: pixels predicted as classes foreign to a chosen domain flag unfamiliar content.
    native = domain_classes(predictor.cfg.data, args.ood_domain) if args.ood_domain else None
    # Heads with a data-dependent cost (QGN) report it with every prediction.
    reports_cost = predictor.last_active_sites is not None
    names = _output_names(
        predictor, list(stems.values()), native is not None, reports_cost, args.scale_levels
    )
    out = Path(args.out)
    previous = _check_output_folder(out, images, names)
    _remove_stale_temp_files(out, previous)
    console = common.console()
    costs: dict[str, dict[str, float]] = {}
    noted = False
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("predict", total=len(images))
        for index, path in enumerate(images):
            # Refused from its header before decoding when over --max-image-megapixels; decoded
            # a strip at a time when over the budget and pyvips imports.
            image = ImageRegions.open(
                path, predictor.max_image_pixels, stream_over=predictor.max_pixels
            )
            budget = predictor.max_pixels
            large = budget is not None and image.height * image.width > budget
            if large and not image.streamed and not noted and streaming_unavailable():
                console.print(
                    _PYVIPS_NOTE.format(path=path), markup=False, highlight=False, soft_wrap=True
                )
                noted = True
            inputs = _depth_inputs(depth, path, image.shape, args.stereo_baseline)
            bands = _config_errors(predict_bands(predictor, image, native, inputs), path)
            # The first tile row is scored before the output folder appears (with the first
            # image) or any file is opened, so that a refused image leaves nothing behind.
            first = next(bands)
            if index == 0:
                _record_outputs(out, previous | set(names))
            _write_bands(args, predictor, image, itertools.chain([first], bands), out, stems[path])
            if args.scale_levels and inputs is not None:
                _write_level_maps(args, predictor, image, inputs, out, stems[path])
            if reports_cost:
                costs[path.name] = predictor.last_active_sites or {}
            progress.advance(task)
    console.print(f"wrote {len(images)} label maps and overlays to {out}")
    if costs:
        common.write_json(costs, str(out / "active_sites.json"))
        console.print(f"active sites per level of each image: {out / 'active_sites.json'}")
    return 0


_PYVIPS_NOTE = (
    "leanseg: note: {path} is larger than --max-megapixels and is decoded whole (Pillow holds "
    "up to 4 bytes per pixel); installing leanseg[large-images] (pyvips) decodes such images a "
    "strip at a time, keeping them out of memory"
)


def _config_errors(bands: Iterator[LabelBand], path: Path) -> Iterator[LabelBand]:
    """``bands``, with a ``ValueError`` of the prediction (e.g. an overlap too large for the
    tiles of the budget) turned into a :class:`ConfigError` naming the image."""
    try:
        yield from bands
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None


def _remove_stale_temp_files(out: Path, recorded: set[str]) -> None:
    """Remove the temporary files a ``predict`` killed while writing into ``out`` left
    (:func:`leanseg.files.atomic.temp_path` of a name it recorded); called holding the folder's
    lock, so no other process is writing them."""
    from leanseg.files.atomic import is_temp_of

    if not recorded or not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name.startswith(".") and any(is_temp_of(entry.name, name) for name in recorded):
            entry.unlink(missing_ok=True)


def _load_predictor(args: argparse.Namespace) -> Predictor:
    """The predictor of ``--checkpoint`` with the inference flags applied; prints its notes."""
    from leanseg.inference.dense_crf import DenseCRF
    from leanseg.inference.predictor import Predictor, megapixels_to_pixels

    device = common.select_device(args.device)
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=device,
        max_pixels=megapixels_to_pixels(args.max_megapixels),
        max_image_pixels=megapixels_to_pixels(args.max_image_megapixels),
        overlap=args.overlap,
        scales=tuple(args.scales),
        flip=args.flip,
        options=common.inference_options(args, device),
    )
    if args.crf:
        # The run's own CRF parameters where its config has them, else the defaults.
        predictor.crf = DenseCRF(predictor.cfg.eval.crf if predictor.cfg else None)
    common.print_notes(predictor.notes)
    return predictor


def _output_names(
    predictor: Predictor, stems: Sequence[str], ood: bool, reports_cost: bool, scale_levels: bool
) -> list[str]:
    """Names of all files ``predict`` writes for images with output ``stems``."""
    from leanseg.inference.ood_maps import ood_output_names
    from leanseg.inference.scale_levels import level_output_names

    names = [name for stem in stems for name in (f"{stem}.png", f"{stem}_overlay.png")]
    names += ["active_sites.json"] if reports_cost else []
    if ood:
        names += [name for stem in stems for name in ood_output_names(stem)]
    if scale_levels:
        scales = predictor.model.multiplexer.reference_scales
        names += [name for stem in stems for name in level_output_names(stem, scales)]
    return names


def _depth_inputs(
    depth: Path | None, path: Path, shape: tuple[int, int], stereo_baseline: float | None
) -> dict[str, torch.Tensor] | None:
    """The disparity inputs of the image at ``path`` from the ``--disparity`` folder ``depth``;
    None when the model reads no disparity."""
    import torch

    from leanseg.inference.scale_levels import disparity_file, read_disparity

    if depth is None:
        return None
    disparity = torch.from_numpy(read_disparity(disparity_file(depth, path.stem), shape))
    return {"disparity": disparity[None], "stereo_baseline": torch.tensor([stereo_baseline])}


def _write_bands(
    args: argparse.Namespace,
    predictor: Predictor,
    image: ImageRegions,
    bands: Iterable[LabelBand],
    out: Path,
    stem: str,
) -> None:
    """Write the label map, overlay and, with ``--ood-domain``, the OOD pictures of one image
    into ``out``, band by band as :func:`~leanseg.inference.ood_maps.predict_bands` gives them.

    Every file is written to a temporary file and renamed over its name once the last band is
    in (:class:`~leanseg.visualize.PngWriter`); an error on the way removes them all. The
    overlay blends the class colours over the band's image rows
    (:func:`leanseg.visualize.overlay`), read about a megapixel at a time, so no blended copy
    of the image is held. The files equal those of whole maps written at once
    (``tests/test_streamed_predict.py``).
    """
    from leanseg.inference.ood_maps import ood_output_names
    from leanseg.visualize import PngWriter, open_label_png, overlay

    height, width = image.shape
    palette = predictor.palette
    step = max(1, 1_000_000 // width)  # overlay rows blended at a time
    with contextlib.ExitStack() as stack:
        label_png = stack.enter_context(open_label_png(out / f"{stem}.png", height, width, palette))
        overlay_png = stack.enter_context(
            PngWriter(out / f"{stem}_overlay.png", height, width, channels=3)
        )
        pictures: list[PngWriter] = []
        for band in bands:
            label_png.write(band.label)
            for top in range(band.rows.start, band.rows.stop, step):
                rows = slice(top, min(top + step, band.rows.stop))
                labels = band.label[rows.start - band.rows.start : rows.stop - band.rows.start]
                pixels = image.read(rows, slice(0, width))
                overlay_png.write(overlay(pixels, labels, palette, alpha=args.alpha))
            if band.foreign is not None:
                if not pictures:
                    pictures = [
                        stack.enter_context(PngWriter(out / name, height, width))
                        for name in ood_output_names(stem)
                    ]
                for png, picture in zip(pictures, band.foreign, strict=True):
                    png.write(picture)


def _write_level_maps(
    args: argparse.Namespace,
    predictor: Predictor,
    image: ImageRegions,
    inputs: dict[str, torch.Tensor],
    out: Path,
    stem: str,
) -> None:
    """Write the zoom level chosen at each pixel, one map per reference object width
    (``--scale-levels``), whole: the depth-guided models read a whole disparity map anyway."""
    from leanseg.inference.scale_levels import level_maps, save_level_maps

    model = predictor.model
    disparity = inputs["disparity"][0].to(predictor.device)
    levels = level_maps(model, disparity, args.stereo_baseline, image.shape)
    save_level_maps(
        levels, model.multiplexer.reference_scales, model.multiplexer.num_levels, out, stem
    )


def _depth_arguments(args: argparse.Namespace, model: nn.Module) -> Path | None:
    """The ``--disparity`` folder when the model reads disparity; errors name the flag."""
    from leanseg.inference.scale_levels import selects_levels
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
