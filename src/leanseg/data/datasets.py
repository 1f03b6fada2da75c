"""File-backed datasets: CamVid, Cityscapes, KITTI, ADE20K, Pascal VOC and generic folders.

Each class lists its files once (:meth:`_list_files`, at construction) and reads one sample with
:meth:`load_raw`, which returns the numpy sample contract of :mod:`leanseg.data.base` with labels
already mapped to train ids. Reading problems raise :class:`DatasetError` naming the file:
an unreadable or truncated image, a label whose size differs from its image, label values that
are neither a class id nor 255, or a label file that does not exist for an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from leanseg.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    SampleFiles,
    SegmentationDataset,
    Transform,
    check_label_values,
)
from leanseg.data.classes import (
    ADE20K_CLASSES,
    ADE20K_LUT,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_LUT,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    NUM_CITYSCAPES_LABEL_IDS,
    VOC_CLASSES,
    VOC_PALETTE,
    Colour,
    bit_palette,
)
from leanseg.data.colour_labels import ColourTable, UnknownColours, read_colour_label
from leanseg.data.io import open_image, read_rgb
from leanseg.data.stereo import cityscapes_camera_path, read_cityscapes_camera

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Modes of single-channel PNGs whose pixel values are the stored ids.
_INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
# Cityscapes instance ids are ``class_id * 1000 + index``; smaller values are class ids of
# pixels without an instance.
_CITYSCAPES_INSTANCE_BASE = 1000


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_index_map(path: Path, kind: str = "label") -> np.ndarray:
    """Read a single-channel map (grey or palette PNG, 8 or 16 bit) as its stored integers.

    Like :func:`leanseg.data.io.read_label`, but names what the file is (label, instance,
    disparity) in errors and accepts big-endian 16-bit PNGs. Palette PNGs give their palette
    indices, not their colours.
    """
    img = open_image(path)
    if img.mode not in _INDEX_MODES:
        raise DatasetError(
            f"{path}: expected a single-channel {kind} file (grey or palette PNG), "
            f"got mode {img.mode}"
        )
    array = np.array(img)
    return array.astype(np.uint8) if array.dtype == bool else array


def decode_disparity(raw: np.ndarray) -> np.ndarray:
    """Decode a Cityscapes 16-bit disparity PNG: ``d = (p - 1) / 256`` for ``p > 0``, else 0."""
    raw = raw.astype(np.float32)
    return np.where(raw > 0, (raw - 1.0) / 256.0, 0.0).astype(np.float32)


def _check_size(
    image_path: Path, image_hw: tuple[int, ...], path: Path, kind: str, hw: tuple[int, ...]
) -> None:
    if tuple(hw) != tuple(image_hw):
        raise DatasetError(
            f"{path}: {kind} size {hw[1]}x{hw[0]} differs from image {image_path} size "
            f"{image_hw[1]}x{image_hw[0]}"
        )


def _resolve_root(root: str | Path, *inner: str) -> Path:
    """``root`` itself, or ``root/inner...`` when the user pointed at a parent folder."""
    root = Path(root)
    for depth in range(len(inner)):
        candidate = root.joinpath(*inner[depth:])
        if candidate.is_dir():
            return candidate
    return root


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")
    return path


def _list_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise DatasetError(f"two images with the same name: {seen[path.stem]} and {path}")
        seen[path.stem] = path
    return images


def _require_labels(files: list[SampleFiles]) -> list[SampleFiles]:
    """Raise one DatasetError naming every image (up to 5) whose label file is missing."""
    missing = [f for f in files if f.label is not None and not f.label.is_file()]
    if missing:
        shown = "; ".join(f"{f.image} (expected {f.label})" for f in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"label file missing for {len(missing)} image(s): {shown}{more}")
    return files


def _read_split_file(path: Path) -> list[str]:
    """Sample names of a split list: one per line, first column, directory and suffix dropped.

    Accepts plain stems (``2007_000032``) as well as DeepLab-style pair lists
    (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``).
    """
    if not path.is_file():
        raise DatasetError(f"split list not found: {path}")
    names = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields:
            names.append(Path(fields[0]).stem)
    return names


# --------------------------------------------------------------------------------------------
# Shared reading logic
# --------------------------------------------------------------------------------------------


class _FileDataset(SegmentationDataset):
    """Reads the files of a :class:`SampleFiles` into the sample contract.

    Subclasses describe their label files with two class attributes: ``label_lut`` (file value
    -> train id, or ``None`` when the file already holds train ids) and ``num_label_values``
    (file values ``0..n-1`` are valid, 255 is always allowed; ``None`` means ``num_classes``).
    """

    label_lut: ClassVar[np.ndarray | None] = None
    num_label_values: ClassVar[int | None] = None

    def load_raw(self, index: int) -> Sample:
        """Read sample ``index`` without transforms, in the numpy contract of ``base``."""
        files = self.files[index]
        image = read_rgb(files.image)
        hw = image.shape[:2]
        sample: Sample = {"image": image, "name": files.name}
        if files.label is None:  # an unlabelled image: everything is ignored
            sample["label"] = np.full(hw, IGNORE_INDEX, dtype=np.uint8)
        else:
            label = self._read_label(files.label)
            _check_size(files.image, hw, files.label, "label", label.shape)
            sample["label"] = label
        if files.instance is not None:
            raw = read_index_map(files.instance, "instance")
            _check_size(files.image, hw, files.instance, "instance", raw.shape)
            sample["instance"] = self._convert_instance(raw)
        if files.disparity is not None:
            raw = read_index_map(files.disparity, "disparity")
            _check_size(files.image, hw, files.disparity, "disparity", raw.shape)
            sample["disparity"] = decode_disparity(raw)
        if files.camera is not None:
            sample["stereo_baseline"] = read_cityscapes_camera(files.camera).baseline
        return sample

    def _read_label(self, path: Path) -> np.ndarray:
        """Train ids ``uint8 (H, W)`` of a label file (255 = ignore)."""
        return self._convert_label(read_index_map(path, "label"), path)

    def _convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Check the stored values and map them to ``uint8`` train ids (255 = ignore)."""
        num_values = self.num_label_values or self.num_classes
        check_label_values(raw, num_values, path)
        label = raw.astype(np.uint8)  # safe: every value is now < 256
        return self.label_lut[label] if self.label_lut is not None else label

    def _convert_instance(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


class CamVid(_FileDataset):
    """CamVid in the SegNet layout (Brostow et al. 2008; 480x360, 11 classes).

    ``root/<split>/*.png`` images with labels of the same name in ``root/<split>annot/``.
    File value 11 (Unlabelled) becomes 255.

    Args:
        root: Folder holding ``train/``, ``trainannot/``, ``val/`` ... ``testannot/``.
        split: ``train``, ``val`` or ``test`` (any ``<split>`` + ``<split>annot`` pair works).
        transform: Applied to each sample by ``__getitem__``.
    """

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    label_lut = CAMVID_LUT
    num_label_values = len(CAMVID_CLASSES) + 1  # 0..10 and void 11

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        images = _list_images(_require_dir(self.root / self.split, f"CamVid split {self.split!r}"))
        labels = self.root / f"{self.split}annot"
        return _require_labels([SampleFiles(p.stem, p, labels / f"{p.stem}.png") for p in images])


class Cityscapes(_FileDataset):
    """Cityscapes fine annotations (Cordts et al. 2016), 19 train classes.

    Reads ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``, mapped from the 34 label ids to the 19 train
    ids on load (so the ``labelTrainIds`` files are not needed). Where present, also
    ``*_gtFine_instanceIds.png`` as ``instance`` (raw Cityscapes ids ``class_id * 1000 + index``;
    values below 1000 -> 0) and ``disparity/<split>/<city>/*_disparity.png`` as ``disparity``,
    with the stereo baseline of ``camera/<split>/<city>/*_camera.json`` as ``stereo_baseline``
    when both files exist (depth-guided scale selection, thesis ch. 3, needs the two together).

    Args:
        root: The Cityscapes folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: Applied to each sample by ``__getitem__``.
        instances: Load instance ids when the file exists.
        disparity: Load disparity (and the camera's stereo baseline) when the files exist.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    label_lut = CITYSCAPES_ID_TO_TRAINID
    num_label_values = NUM_CITYSCAPES_LABEL_IDS

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        instances: bool = True,
        disparity: bool = True,
    ) -> None:
        self.load_instances = instances
        self.load_disparity = disparity
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        image_dir = _require_dir(self.root / "leftImg8bit" / self.split, "Cityscapes images")
        suffix = "_leftImg8bit.png"
        files = []
        for image in sorted(image_dir.glob(f"*/*{suffix}")):
            base = image.name[: -len(suffix)]
            city = image.parent.name
            gt = self.root / "gtFine" / self.split / city
            instance = gt / f"{base}_gtFine_instanceIds.png"
            disparity = self.root / "disparity" / self.split / city / f"{base}_disparity.png"
            disparity_found = self.load_disparity and disparity.is_file()
            camera = cityscapes_camera_path(self.root, self.split, base)
            files.append(
                SampleFiles(
                    name=base,
                    image=image,
                    label=gt / f"{base}_gtFine_labelIds.png",
                    instance=instance if self.load_instances and instance.is_file() else None,
                    disparity=disparity if disparity_found else None,
                    camera=camera if disparity_found and camera.is_file() else None,
                )
            )
        return _require_labels(files)

    def _convert_instance(self, raw: np.ndarray) -> np.ndarray:
        instance = raw.astype(np.int32)
        return np.where(instance >= _CITYSCAPES_INSTANCE_BASE, instance, 0).astype(np.int32)


class KITTI(_FileDataset):
    """KITTI semantic segmentation (Abu Alhaija et al. 2018) with Cityscapes label ids.

    ``training/image_2/*.png`` images with ``training/semantic/*.png`` label ids of the same
    name, mapped to the 19 Cityscapes train ids. KITTI has no official validation split: without
    ``split_file`` the split ``train`` is all 200 training images and other splits are errors.

    Args:
        root: Folder holding ``training/``.
        split: Split name; ``train`` without ``split_file``.
        transform: Applied to each sample by ``__getitem__``.
        split_file: Text file listing the samples of the split, one name per line (``000000_10``
            or a file name); ``{split}`` in it is replaced by the split name, so
            ``splits/{split}.txt`` serves every split. Relative paths are relative to ``root``.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    label_lut = CITYSCAPES_ID_TO_TRAINID
    num_label_values = NUM_CITYSCAPES_LABEL_IDS

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        split_file: str | Path | None = None,
    ) -> None:
        self.split_file = split_file
        super().__init__(root, split, transform)

    def _list_files(self) -> list[SampleFiles]:
        image_dir = _require_dir(self.root / "training" / "image_2", "KITTI images")
        label_dir = self.root / "training" / "semantic"
        images = {p.stem: p for p in _list_images(image_dir)}
        if self.split_file is not None:
            list_path = self.root / str(self.split_file).format(split=self.split)
            names = _read_split_file(list_path)
            unknown = [name for name in names if name not in images]
            if unknown:
                raise DatasetError(
                    f"{list_path}: {len(unknown)} name(s) have no image in {image_dir}, "
                    f"e.g. {unknown[0]!r}"
                )
        elif self.split == "train":
            names = sorted(images)
        else:
            raise DatasetError(
                f"KITTI has only the split 'train' (all of {image_dir}) unless a split list is "
                f"given with the option split_file; got split {self.split!r}"
            )
        return _require_labels([SampleFiles(n, images[n], label_dir / f"{n}.png") for n in names])


class ADE20K(_FileDataset):
    """ADE20K SceneParsing (Zhou et al. 2017), 150 classes.

    ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with annotations of the same
    stem in ``annotations/{training,validation}/*.png``. File value 0 ("other") becomes 255 and
    value ``k`` becomes train id ``k - 1``.

    With ``holdout=n`` the official training set is split in two, as the S&F ablations do
    ("we randomly split the original 20K training set into 16K/4K", S&F sec. 4): the split
    ``holdout`` is ``n`` training images and ``train`` is the rest; ``val`` stays the official
    2K validation set, which neither overlaps. The paper does not publish its split, so this one
    is ours and deterministic: training images are ranked by the SHA-256 of
    ``"{holdout_seed}/{stem}"`` and the first ``n`` are held out. It depends only on the file
    names (not on the order the file system lists them, nor on a library's random generator),
    and adding or removing an image moves no other. ``holdout=4000`` gives the 16,210 / 4,000
    images the S&F ablation configs use.

    Args:
        root: ``ADEChallengeData2016`` or the folder that holds it.
        split: ``train`` / ``val`` (or the folder names ``training`` / ``validation``);
            ``holdout`` when ``holdout`` is set.
        transform: Applied to each sample by ``__getitem__``.
        holdout: Number of training images held out of ``train`` into the split ``holdout``;
            0 keeps the official training set whole.
        holdout_seed: Selects another held-out set of the same size.
    """

    classes = ADE20K_CLASSES
    palette = ADE20K_PALETTE
    label_lut = ADE20K_LUT
    num_label_values = len(ADE20K_CLASSES) + 1  # 0 = other, 1..150 = classes
    SPLIT_DIRS: ClassVar[dict[str, str]] = {
        "train": "training",
        "val": "validation",
        "training": "training",
        "validation": "validation",
        "holdout": "training",
    }

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        holdout: int = 0,
        holdout_seed: int = 0,
    ) -> None:
        if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
            raise DatasetError(f"ADE20K option holdout must be an integer >= 0, got {holdout!r}")
        self.holdout = holdout
        self.holdout_seed = holdout_seed
        super().__init__(_resolve_root(root, "ADEChallengeData2016"), split, transform)

    def _list_files(self) -> list[SampleFiles]:
        if self.split not in self.SPLIT_DIRS:
            raise DatasetError(
                f"ADE20K has no split {self.split!r}; valid: {', '.join(self.SPLIT_DIRS)}"
            )
        if self.split == "holdout" and not self.holdout:
            raise DatasetError(
                "ADE20K split 'holdout' needs the option holdout (number of training images "
                "to hold out), e.g. data.options: {holdout: 4000}"
            )
        folder = self.SPLIT_DIRS[self.split]
        images = _list_images(_require_dir(self.root / "images" / folder, "ADE20K images"))
        if folder == "training" and self.holdout:
            if self.holdout >= len(images):
                raise DatasetError(
                    f"ADE20K option holdout={self.holdout} leaves no training images "
                    f"({len(images)} in {self.root / 'images' / folder})"
                )
            held_out = set(holdout_names([p.stem for p in images], self.holdout, self.holdout_seed))
            keep = self.split == "holdout"
            images = [p for p in images if (p.stem in held_out) == keep]
        labels = self.root / "annotations" / folder
        return _require_labels([SampleFiles(p.stem, p, labels / f"{p.stem}.png") for p in images])


def holdout_names(names: Sequence[str], count: int, seed: int = 0) -> list[str]:
    """The ``count`` names of ``names`` held out by :class:`ADE20K`'s ``holdout`` option.

    Names are ranked by the SHA-256 digest of ``f"{seed}/{name}"``; the ``count`` smallest are
    returned, sorted.
    """

    def rank(name: str) -> bytes:
        return hashlib.sha256(f"{seed}/{name}".encode()).digest()

    return sorted(sorted(names, key=rank)[:count])


class VOC(_FileDataset):
    """Pascal VOC 2012 segmentation (Everingham et al. 2010), 21 classes.

    ``JPEGImages/<name>.jpg`` with palette PNGs ``SegmentationClass/<name>.png`` (palette indices
    are the class ids; 255 marks object borders and stays ignored) for the names listed in
    ``ImageSets/Segmentation/<split>.txt``.

    With ``aug=True`` the ``train`` split uses the SBD augmentation (Hariharan et al. 2011) in its
    usual layout: names from ``ImageSets/Segmentation/train_aug.txt`` and labels from
    ``SegmentationClassAug/<name>.png``. Other splits are unchanged, so ``val`` stays the official
    1449 images with official labels.

    Args:
        root: ``VOCdevkit/VOC2012``, or ``VOCdevkit``, or the folder holding ``VOCdevkit``.
        split: ``train``, ``val``, ``trainval``, or any list in ``ImageSets/Segmentation``.
        transform: Applied to each sample by ``__getitem__``.
        aug: Train on the SBD-augmented set (10582 images).
    """

    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        aug: bool = False,
    ) -> None:
        self.aug = aug
        super().__init__(_resolve_root(root, "VOCdevkit", "VOC2012"), split, transform)

    def _list_files(self) -> list[SampleFiles]:
        use_aug = self.aug and self.split == "train"
        lists = self.root / "ImageSets" / "Segmentation"
        names = _read_split_file(lists / ("train_aug.txt" if use_aug else f"{self.split}.txt"))
        labels = self.root / ("SegmentationClassAug" if use_aug else "SegmentationClass")
        images = self.root / "JPEGImages"
        return _require_labels(
            [SampleFiles(n, images / f"{n}.jpg", labels / f"{n}.png") for n in names]
        )


def folder_palette(
    classes: Sequence[str], palette: Sequence[Sequence[int]] | None = None
) -> tuple[Colour, ...]:
    """The palette of a :class:`Folder` dataset: ``palette`` checked, or the VOC bit colour map.

    Raises:
        DatasetError: when ``palette`` has fewer colours than classes or a colour is not three
            integers in 0..255.
    """
    if palette is None:
        return bit_palette(len(classes))
    if len(palette) < len(classes):
        raise DatasetError(f"palette has {len(palette)} colours for {len(classes)} classes")
    colours = []
    for colour in palette[: len(classes)]:
        values = tuple(int(c) for c in colour)
        if len(values) != 3 or not all(0 <= c <= 255 for c in values):
            raise DatasetError(f"palette colour {list(colour)} is not three integers in 0..255")
        colours.append((values[0], values[1], values[2]))
    return tuple(colours)


_FOLDER_EXTRAS = ("labels", "instances", "disparity")


class Folder(_FileDataset):
    """A generic dataset of images and label PNGs matched by file stem.

    Layout, per split: ``images/<split>/*.{png,jpg,jpeg}``, ``labels/<split>/<stem>.png`` (label
    values are class ids 0..C-1 and 255 = ignore; grey or palette PNG) and optionally
    ``instances/<split>/<stem>.png`` (16-bit instance ids, 0 = none) and
    ``disparity/<split>/<stem>.png`` (Cityscapes 16-bit encoding). When ``images/`` has no
    sub-folders at all, the files directly in ``images/``, ``labels/`` ... form every split.
    With ``label_colors`` the label PNGs are colour masks instead (RGB, one exact colour per
    class, :mod:`leanseg.data.colour_labels`).

    Args:
        root: Folder holding ``images/`` and ``labels/``.
        split: Name of the sub-folder of ``images/``.
        transform: Applied to each sample by ``__getitem__``.
        classes: Class names, one per label value (required).
        palette: One RGB colour per class; the colours of ``label_colors``, else the VOC bit
            colour map, when not given.
        label_colors: Colour -> class table of colour-mask labels (``data.label_colors``);
            ``None`` for labels of class ids.
        unknown_colors: A label colour not in ``label_colors``: ``error`` names the file and
            colour, ``ignore`` gives such pixels the ignore label.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        label_colors: ColourTable | None = None,
        unknown_colors: UnknownColours = "error",
    ) -> None:
        if not classes:
            raise DatasetError("the folder dataset needs its class names (argument classes)")
        if len(classes) > IGNORE_INDEX:
            raise DatasetError(f"at most {IGNORE_INDEX} classes fit in 8-bit labels")
        self.classes = tuple(classes)
        if label_colors is not None and label_colors.classes != self.classes:
            raise DatasetError("label_colors was built for other class names than classes")
        self.label_colors = label_colors
        self.unknown_colors = unknown_colors
        if palette is None and label_colors is not None:
            palette = label_colors.display_palette()
        self.palette = folder_palette(self.classes, palette)
        super().__init__(root, split, transform)

    def _read_label(self, path: Path) -> np.ndarray:
        if self.label_colors is None:
            return super()._read_label(path)
        return read_colour_label(path, self.label_colors, unknown=self.unknown_colors)

    def _list_files(self) -> list[SampleFiles]:
        image_root = _require_dir(self.root / "images", "images folder")
        subfolders = sorted(p.name for p in image_root.iterdir() if p.is_dir())
        if subfolders and self.split not in subfolders:
            raise DatasetError(
                f"split folder not found: {image_root / self.split}; "
                f"splits found: {', '.join(subfolders)}"
            )
        sub = self.split if subfolders else ""  # no split folders: one flat set for every split
        labels, instances, disparity = (self.root / kind / sub for kind in _FOLDER_EXTRAS)
        files = []
        for image in _list_images(image_root / sub):
            instance = instances / f"{image.stem}.png"
            disp = disparity / f"{image.stem}.png"
            files.append(
                SampleFiles(
                    name=image.stem,
                    image=image,
                    label=labels / f"{image.stem}.png",
                    instance=instance if instance.is_file() else None,
                    disparity=disp if disp.is_file() else None,
                )
            )
        return _require_labels(files)
