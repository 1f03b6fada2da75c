"""``leanseg predict --ood-domain NAME``: per-pixel foreign-class maps as files (thesis 5.3.3).

For a model trained on ``data.datasets``, the union classes native to one entry (the chosen
domain) are those its labels can hold; :func:`leanseg.ood.foreign_map` flags pixels whose most
likely class is any other, and gives the foreign probability mass. Two PNGs per image, each
written atomically:

- ``<stem>_foreign.png``: 8-bit grey, 255 where the prediction is foreign, 0 elsewhere;
- ``<stem>_foreign_mass.png``: 8-bit grey, ``round(255 * mass)`` (a quantisation step of 1/255).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leanseg.config import ConfigError, DataConfig
from leanseg.data import union_label_space
from leanseg.ood import ForeignMap, foreign_map
from leanseg.utils import atomic_write


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
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L")
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def write_ood_maps(
    probabilities: torch.Tensor, native: list[int], out: str | Path, stem: str
) -> ForeignMap:
    """Write the foreign flag and foreign mass of one image (module docstring) into ``out``.

    Args:
        probabilities: union-space probabilities ``(C, H, W)`` of the image
            (:meth:`~leanseg.engine.inference.Predictor.predict_scores`).
        native: the domain's union classes (:func:`domain_classes`).
        out: output folder (created).
        stem: file name stem of the image's outputs.

    Returns:
        The maps written, on the probabilities' device.
    """
    maps = foreign_map(probabilities, native)
    out = Path(out)
    flag_path, mass_path = (out / name for name in ood_output_names(stem))
    _write_grey(maps.foreign.cpu().numpy().astype(np.uint8) * 255, flag_path)
    _write_grey(torch.round(maps.mass * 255).to(torch.uint8).cpu().numpy(), mass_path)
    return maps


def predict_with_ood(
    predictor: Any,
    image: np.ndarray,
    native: list[int] | None,
    inputs: dict[str, torch.Tensor] | None = None,
) -> tuple[np.ndarray, torch.Tensor | None]:
    """The label map of ``predictor.predict`` and, with ``native``, the probabilities too
    (one forward pass for both); ``inputs``: what the model reads besides the image."""
    if native is None:
        return predictor.predict(image, inputs), None
    probabilities = predictor.predict_scores(image, inputs)  # (C, H, W)
    if probabilities.shape[0] > 255:
        raise ValueError(
            f"{probabilities.shape[0]} classes do not fit a uint8 label map (255 = ignore)"
        )
    return probabilities.argmax(dim=0).to(torch.uint8).cpu().numpy(), probabilities


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
    "add_ood_argument",
    "domain_classes",
    "ood_output_names",
    "predict_with_ood",
    "write_ood_maps",
]
