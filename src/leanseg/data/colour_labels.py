"""Colour-mask labels: RGB label images whose colours name classes (``data.label_colors``).

Many annotation tools save labels as pictures, one colour per class. The ``folder`` dataset
reads them through a :class:`ColourTable` (colour -> class id, exact colours only), and
:func:`convert_colour_labels` writes them once as index PNGs (pixel value = class id, class
colours as the PNG palette so viewers still show the picture), which read faster and need no
table afterwards.

The lookup is vectorised: every pixel's colour is packed into one ``int32``
(``r << 16 | g << 8 | b``) and found with :func:`numpy.searchsorted` in the sorted packed
colours of the table; no Python loop runs over pixels. Colours are matched exactly, never to the
nearest entry: an anti-aliased edge or a JPEG-compressed mask has colours between the classes,
and guessing their class would silently move boundaries. Such colours are an error naming the
file, the colours and their pixel counts, or the ignore label when ``data.unknown_colors`` is
``ignore``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from leanseg.config import IGNORE_KEY, ConfigError, DataConfig, parse_label_colors
from leanseg.data.base import IGNORE_INDEX, DatasetError
from leanseg.data.classes import Colour
from leanseg.data.io import open_image
from leanseg.files.atomic import atomic_write_text, read_output_manifest
from leanseg.visualize import save_label_png

UnknownColours = Literal["error", "ignore"]
# Colours shown in an unknown-colour error; the rest are counted.
_SHOWN_COLOURS = 5
# The record of the files :func:`convert_colour_labels` wrote into its output folder, so that a
# rerun replaces them and nothing else.
CONVERT_MANIFEST = ".leanseg_convert.json"
_MANIFEST_TAG = "leanseg data convert outputs"
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".ppm")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``int32 (...)`` keys ``r << 16 | g << 8 | b`` of ``uint8 (..., 3)`` colours."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected colours (..., 3), got shape {rgb.shape}")
    wide = rgb.astype(np.int32)
    return (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]


def unpack_rgb(key: int) -> Colour:
    """The colour ``(r, g, b)`` of a key of :func:`pack_rgb`."""
    key = int(key)
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


@dataclass(frozen=True)
class ColourTable:
    """Exact colour -> class id table of colour-mask labels.

    Attributes:
        classes: Class names; class id = index.
        keys: ``int32 (N,)`` packed colours (:func:`pack_rgb`), sorted ascending.
        ids: ``uint8 (N,)`` class id of each key, 255 for the ignore entry.
        palette: First colour of each class (``None`` for a class without one) and, last, of
            the ignore label: the colours :meth:`to_colours` paints.
    """

    classes: tuple[str, ...]
    keys: np.ndarray
    ids: np.ndarray
    palette: tuple[Colour | None, ...]

    @classmethod
    def from_config(
        cls,
        label_colors: Mapping[str, Any],
        classes: Sequence[str],
        key: str = "data.label_colors",
    ) -> ColourTable:
        """Build the table of ``data.label_colors`` for the class names ``classes``.

        Args:
            label_colors: class name (or ``ignore``) -> ``[r, g, b]`` or a list of colours.
            classes: ``data.classes``; class id = index.
            key: the dotted key that error messages name.

        Raises:
            ConfigError: naming the entry, for a malformed colour, a colour given twice, or a
                name that is neither a class nor ``ignore``; for an empty table.
        """
        if not label_colors:
            raise ConfigError(f"{key}: needs at least one entry class name -> [r, g, b]")
        classes = tuple(classes)
        if IGNORE_KEY in classes:
            raise ConfigError(
                f"data.classes: a class named {IGNORE_KEY!r} cannot be told apart from the "
                f"ignore entry of {key}; rename the class"
            )
        entries = parse_label_colors(dict(label_colors), key)
        class_ids = {name: index for index, name in enumerate(classes)}
        keys, ids = [], []
        palette: list[Colour | None] = [None] * (len(classes) + 1)
        for name, colours in entries.items():
            if name == IGNORE_KEY:
                class_id = IGNORE_INDEX
            elif name in class_ids:
                class_id = class_ids[name]
            else:
                raise ConfigError(
                    f"{key}.{name}: not a class of data.classes ({', '.join(classes)}) "
                    f"nor {IGNORE_KEY}"
                )
            keys += [int(pack_rgb(np.array(c, np.uint8))) for c in colours]
            ids += [class_id] * len(colours)
            palette[-1 if class_id == IGNORE_INDEX else class_id] = colours[0]
        order = np.argsort(keys)
        return cls(
            classes=classes,
            keys=np.asarray(keys, np.int32)[order],
            ids=np.asarray(ids, np.uint8)[order],
            palette=tuple(palette),
        )

    def to_index(
        self, rgb: np.ndarray, *, unknown: UnknownColours = "error", source: str | Path = "label"
    ) -> np.ndarray:
        """Class ids ``uint8 (H, W)`` (255 = ignore) of an RGB label picture ``uint8 (H, W, 3)``.

        Raises:
            DatasetError: with ``unknown="error"``, naming ``source`` and each colour that is not
                in the table (most frequent first) with its pixel count.
        """
        label, known = self.lookup(rgb)
        if unknown == "error" and not known.all():
            raise DatasetError(f"{source}: {_describe_unknown(pack_rgb(rgb)[~known])}")
        return label

    def lookup(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids ``uint8 (H, W)`` of an RGB picture, 255 where the colour is unknown, and
        the mask ``bool (H, W)`` of known colours."""
        packed = pack_rgb(rgb)  # (H, W)
        # searchsorted gives the insertion point; the colour is known where the key there equals
        # it. The clip keeps colours above the largest key in range (and unequal).
        where = np.minimum(np.searchsorted(self.keys, packed), len(self.keys) - 1)  # (H, W)
        known = self.keys[where] == packed
        label = np.where(known, self.ids[where], np.uint8(IGNORE_INDEX)).astype(np.uint8)
        return label, known

    def to_colours(self, label: np.ndarray, *, source: str | Path = "label") -> np.ndarray:
        """RGB picture ``uint8 (H, W, 3)`` of class ids ``(H, W)``: the inverse of :meth:`to_index`.

        Each class is painted in its first colour, so ``to_index(to_colours(label))`` gives
        ``label`` back exactly.

        Raises:
            DatasetError: naming ``source`` when a value has no colour in the table (a class
                without an entry, 255 without an ``ignore`` entry, or no class at all).
        """
        lookup = np.zeros((256, 3), np.uint8)
        painted = np.zeros(256, bool)
        for class_id, colour in enumerate(self.palette[:-1]):
            if colour is not None:
                lookup[class_id], painted[class_id] = colour, True
        if self.palette[-1] is not None:
            lookup[IGNORE_INDEX], painted[IGNORE_INDEX] = self.palette[-1], True
        label = np.asarray(label)
        values = np.unique(label)
        missing = values[(values < 0) | (values > 255)].tolist()
        inside = values[(values >= 0) & (values <= 255)]
        missing += inside[~painted[inside]].tolist()
        if missing:
            raise DatasetError(
                f"{source}: label values {missing[:8]} have no colour in data.label_colors"
            )
        return lookup[label.astype(np.intp)]

    def display_palette(self) -> tuple[Colour, ...]:
        """One colour per class for pictures of predictions: the table's first colour of each
        class, black for a class without an entry."""
        return tuple(colour or (0, 0, 0) for colour in self.palette[:-1])


def _describe_unknown(packed: np.ndarray) -> str:
    """``N colours not in data.label_colors: [r, g, b] (n pixels), ...`` of unknown keys."""
    keys, counts = np.unique(packed, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(
        f"{list(unpack_rgb(keys[i]))} ({counts[i]} pixel{'s' if counts[i] != 1 else ''})"
        for i in order[:_SHOWN_COLOURS]
    )
    more = f" and {len(keys) - _SHOWN_COLOURS} more" if len(keys) > _SHOWN_COLOURS else ""
    return (
        f"{len(keys)} colour(s) not in data.label_colors: {shown}{more}; add them to "
        "data.label_colors or set data.unknown_colors: ignore"
    )


def read_colour_label(
    path: str | Path, table: ColourTable, *, unknown: UnknownColours = "error"
) -> np.ndarray:
    """Class ids ``uint8 (H, W)`` of a colour-mask label file, read as stored (no EXIF turn).

    Palette PNGs are read by their colours; an alpha channel is dropped.

    Raises:
        DatasetError: naming the file, for an unreadable file or an unknown colour (with
            ``unknown="error"``).
    """
    return table.to_index(_read_label_rgb(path), unknown=unknown, source=path)


def _read_label_rgb(path: str | Path) -> np.ndarray:
    """``uint8 (H, W, 3)`` colours of a label picture as stored."""
    image = open_image(path)
    if image.mode not in ("RGB", "RGBA", "P", "PA", "L", "LA", "1"):
        raise DatasetError(
            f"{path}: expected an RGB colour-mask label (data.label_colors is set), got mode "
            f"{image.mode}"
        )
    return np.asarray(image.convert("RGB"))


def colour_table(data_cfg: DataConfig) -> ColourTable:
    """The :class:`ColourTable` of a config's ``data.label_colors`` and ``data.classes``.

    Raises:
        ConfigError: when ``data.label_colors`` or ``data.classes`` is not set, or as
            :meth:`ColourTable.from_config`.
    """
    if not data_cfg.label_colors:
        raise ConfigError("data.label_colors: not set; colour-mask labels need the colour table")
    if not data_cfg.classes:
        raise ConfigError("data.classes: colour-mask labels need the list of class names")
    return ColourTable.from_config(data_cfg.label_colors, data_cfg.classes)


# --------------------------------------------------------------------------------------------
# Converting a folder once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_colour_labels` did.

    Attributes:
        written: Index PNGs written, in ``dst_dir``.
        ignored_pixels: Pixels of unknown colours that became the ignore label (only with
            ``unknown="ignore"``).
    """

    written: tuple[Path, ...]
    ignored_pixels: int


def convert_colour_labels(
    src_dir: str | Path,
    dst_dir: str | Path,
    table: ColourTable,
    *,
    unknown: UnknownColours = "error",
) -> ConvertResult:
    """Write every colour-mask label below ``src_dir`` as an index PNG below ``dst_dir``.

    The folder structure is kept (``src/train/a.png`` -> ``dst/train/a.png``). Each PNG holds
    class ids (255 = ignore) with the class colours as its palette, so the ``folder`` dataset
    reads it without ``data.label_colors`` and image viewers still show the colours. Files are
    written atomically; ``dst_dir`` records their names in ``.leanseg_convert.json`` before the
    first is written, and a rerun replaces only files recorded there: a file of the same name
    that the conversion did not write stops it before anything is written. A conversion stopped
    by a bad file (unknown colour) leaves the files written so far, recorded, for the rerun.

    Args:
        src_dir: Folder of RGB label pictures (searched recursively).
        dst_dir: Output folder; must not be ``src_dir``, inside it, or hold it.
        table: The colour table, e.g. :func:`colour_table` of a config.
        unknown: ``error`` stops at the first unknown colour, naming file and colour;
            ``ignore`` maps such pixels to 255.

    Returns:
        The :class:`ConvertResult`.

    Raises:
        ConfigError: for a missing or empty ``src_dir``, a ``dst_dir`` that overlaps it or is
            not a folder, or a file in the way that the conversion did not write.
        DatasetError: naming the file, for an unreadable label or an unknown colour.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    if not src.is_dir():
        raise ConfigError(f"source folder not found: {src}")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"{dst} exists and is not a folder")
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or src_real in dst_real.parents or dst_real in src_real.parents:
        raise ConfigError(
            f"output folder {dst} overlaps the source folder {src}; choose a folder outside it "
            "(the conversion never writes beside or above its inputs)"
        )
    sources = sorted(
        p for p in src.rglob("*") if p.suffix.lower() in LABEL_SUFFIXES and p.is_file()
    )
    if not sources:
        raise ConfigError(f"no label images ({', '.join(LABEL_SUFFIXES)}) found below {src}")
    names = [p.relative_to(src).with_suffix(".png").as_posix() for p in sources]
    _check_unique(sources, names)
    previous = _read_manifest(dst / CONVERT_MANIFEST)
    for name in names:
        target = dst / name
        parent = target.parent.resolve()
        if parent == src_real or src_real in parent.parents:
            raise ConfigError(f"{target} lies in the source folder {src} (through a link)")
        if (target.exists() or target.is_symlink()) and (
            name not in previous or target.is_symlink() or not target.is_file()
        ):
            raise ConfigError(
                f"{target} exists and was not written by leanseg data convert; move it or "
                "choose another output folder"
            )
    record = {"written_by": _MANIFEST_TAG, "files": sorted(previous | set(names))}
    atomic_write_text(dst / CONVERT_MANIFEST, json.dumps(record, indent=1) + "\n")
    palette = [colour or (0, 0, 0) for colour in table.palette[:-1]]
    written, ignored = [], 0
    for path, name in zip(sources, names, strict=True):
        rgb = _read_label_rgb(path)
        label, known = table.lookup(rgb)
        if not known.all():
            if unknown == "error":
                raise DatasetError(f"{path}: {_describe_unknown(pack_rgb(rgb)[~known])}")
            ignored += int((~known).sum())
        written.append(save_label_png(label, dst / name, palette))
    return ConvertResult(written=tuple(written), ignored_pixels=ignored)


def _check_unique(sources: Sequence[Path], names: Sequence[str]) -> None:
    """Two sources (``a.png`` and ``a.bmp``) that would write the same file are an error."""
    seen: dict[str, Path] = {}
    for path, name in zip(sources, names, strict=True):
        other = seen.setdefault(name.casefold(), path)
        if other != path:
            raise ConfigError(f"{other} and {path} would both be written as {name}")


def _read_manifest(manifest: Path) -> set[str]:
    """Names a previous data convert recorded in ``manifest``; empty if there is none."""
    previous = read_output_manifest(manifest, _MANIFEST_TAG)
    if previous is None:
        raise ConfigError(
            f"{manifest} exists and is not a leanseg data convert record; move it or choose "
            "another output folder"
        )
    return previous
