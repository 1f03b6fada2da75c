"""``leanseg predict --ood-domain NAME``: per-pixel foreign-class maps as files (thesis 5.3.3).

For a model trained on ``data.datasets``, the union classes native to one entry (the chosen
domain) are those its labels can hold; :func:`leanseg.metrics.ood.foreign_map` flags pixels whose
most
likely class is any other, and gives the foreign probability mass. Two PNGs per image, each
written atomically:

- ``<stem>_foreign.png``: 8-bit grey, 255 where the prediction is foreign, 0 elsewhere;
- ``<stem>_foreign_mass.png``: 8-bit grey, ``round(255 * mass)`` (a quantisation step of 1/255).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from leanseg.config import ConfigError, DataConfig
from leanseg.data import union_label_space
from leanseg.metrics.ood import ForeignMap, foreign_map


def domain_classes(data_cfg: DataConfig, domain: str) -> list[int]:
    """Union classes native to entry ``domain`` of ``data.datasets``.

    Raises:
        ConfigError: when the config has no ``data.datasets`` or no entry of that name (the
            message lists the names).
    """
    if data_cfg.datasets is None:
        raise ConfigError(
            "--ood-domain: the model was trained on one dataset; foreign classes need a model "
            "trained on data.datasets"
        )
    space = union_label_space(data_cfg)
    if domain not in space.datasets:
        raise ConfigError(
            f"--ood-domain: no dataset {domain!r} in data.datasets; names: "
            f"{', '.join(space.datasets)}"
        )
    return space.datasets[domain].own_classes(len(space.classes))


def ood_output_names(stem: str) -> list[str]:
    """The files :func:`write_ood_maps` writes for ``stem``."""
    return [f"{stem}_foreign.png", f"{stem}_foreign_mass.png"]


def _write_grey(array: np.ndarray, path: Path) -> Path:
    from leanseg.visualize import save_rgb_png  # streams rows: no copy of the picture

    return save_rgb_png(np.asarray(array, dtype=np.uint8), path)


def write_ood_maps(
    probabilities: torch.Tensor, native: list[int], out: str | Path, stem: str
) -> ForeignMap:
    """Write the foreign flag and foreign mass of one image (module docstring) into ``out``.

    Args:
        probabilities: union-space probabilities ``(C, H, W)`` of the image
            (:meth:`~leanseg.inference.predictor.Predictor.predict_scores`).
        native: the domain's union classes (:func:`domain_classes`).
        out: output folder (created).
        stem: file name stem of the image's outputs.

    Returns:
        The maps written, on the probabilities' device.
    """
    maps = foreign_map(probabilities, native)
    write_ood_pictures(*_pictures(maps), out, stem)
    return maps


def _pictures(maps: ForeignMap) -> tuple[np.ndarray, np.ndarray]:
    """The two grey pictures of the module docstring, ``uint8``, of a :class:`ForeignMap`."""
    flag = maps.foreign.cpu().numpy().astype(np.uint8) * 255
    return flag, torch.round(maps.mass * 255).to(torch.uint8).cpu().numpy()


def write_ood_pictures(flag: np.ndarray, mass: np.ndarray, out: str | Path, stem: str) -> None:
    """Write the foreign flag and mass pictures (``uint8 (H, W)``, as :func:`predict_with_ood`
    gives them) of ``stem`` into ``out``."""
    flag_path, mass_path = (Path(out) / name for name in ood_output_names(stem))
    _write_grey(flag, flag_path)
    _write_grey(mass, mass_path)


class LabelBand(NamedTuple):
    """Whole rows of an image's outputs, as :func:`predict_bands` yields them."""

    rows: slice  # the image rows the band covers
    label: np.ndarray  # uint8 (h, W) class ids
    foreign: tuple[np.ndarray, np.ndarray] | None  # uint8 (h, W) flag and mass pictures


def predict_bands(
    predictor: Any,
    image: Any,
    native: list[int] | None,
    inputs: dict[str, torch.Tensor] | None = None,
) -> Iterator[LabelBand]:
    """The label map of ``predictor.predict`` (and, with ``native``, the foreign flag and mass
    pictures of the module docstring), a band of whole rows at a time, top to bottom.

    :meth:`~leanseg.inference.predictor.Predictor.predict_blocks` yields the kept part of each
    tile in row-major order, so the rows of a tile row are complete after its last column:
    each band is one tile row (the whole image when it fits the budget), and nothing of the
    size of the image is held. ``inputs``: what the model reads besides the image.
    """
    from leanseg.inference.predictor import class_ids

    regions = predictor.regions(image)
    width = regions.width
    band: LabelBand | None = None
    filled = 0  # columns of the band filled so far
    for rows, cols, probabilities in predictor.predict_blocks(regions, inputs):
        if band is None:
            shape = (rows.stop - rows.start, width)
            pictures = None
            if native is not None:
                pictures = (np.empty(shape, np.uint8), np.empty(shape, np.uint8))
            band, filled = LabelBand(rows, np.empty(shape, np.uint8), pictures), 0
        if rows != band.rows or cols.start != filled:
            raise RuntimeError(f"blocks out of row-major order at rows {rows}, columns {cols}")
        band.label[:, cols] = class_ids(probabilities)
        if native is not None and band.foreign is not None:
            flag, mass = _pictures(foreign_map(probabilities, native))
            band.foreign[0][:, cols], band.foreign[1][:, cols] = flag, mass
        del probabilities  # not held while the next tile is scored
        filled = cols.stop
        if filled == width:
            yield band
            band = None
    if band is not None:
        raise RuntimeError(f"the blocks of rows {band.rows} end at column {filled} of {width}")


def predict_with_ood(
    predictor: Any,
    image: Any,
    native: list[int] | None,
    inputs: dict[str, torch.Tensor] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The label map of ``predictor.predict`` and, with ``native``, the foreign flag and mass
    pictures (``uint8 (H, W)`` each, module docstring), whole, from one pass over the image's
    bands (:func:`predict_bands`: no float map of the whole image is made); ``inputs``: what
    the model reads besides the image."""
    regions = predictor.regions(image)
    label = np.empty(regions.shape, np.uint8)
    if native is not None:
        flag, mass = np.empty(regions.shape, np.uint8), np.empty(regions.shape, np.uint8)
    for band in predict_bands(predictor, regions, native, inputs):
        label[band.rows] = band.label
        if band.foreign is not None:
            flag[band.rows], mass[band.rows] = band.foreign
    return label, None if native is None else (flag, mass)


def add_ood_argument(parser: argparse.ArgumentParser) -> None:
    """``--ood-domain NAME`` of ``leanseg predict``."""
    parser.add_argument(
        "--ood-domain",
        metavar="NAME",
        help="for a model trained on several datasets (data.datasets): treat this entry as the "
        "images' own domain and also write where the model sees classes of the other "
        "datasets (<stem>_foreign.png) and how much probability it gives them "
        "(<stem>_foreign_mass.png)",
    )


__all__ = [
    "LabelBand",
    "add_ood_argument",
    "domain_classes",
    "ood_output_names",
    "predict_bands",
    "predict_with_ood",
    "write_ood_maps",
    "write_ood_pictures",
]
