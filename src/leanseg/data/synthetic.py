"""Procedural street scenes: the library's embedded default dataset.

Every scene is drawn from one seed by a small renderer with a z-buffer (so occlusion follows
depth exactly, as painting far to near would): sky, a ground plane (road with lane markings,
kerbs, pavements, verges), building facades with windows along both sides of the street, a
distant skyline, trees and hedges, fences, poles carrying lamps, signs and traffic lights,
and cars, pedestrians and cyclists standing on the ground at perspective-correct scales.
Colour is deliberately a poor cue: facades, pavements, road and overcast sky share greys, cars
and clothes take any colour, and every scene gets its own colour cast, illumination gradient,
haze, shadows and sensor noise. What stays consistent is shape, context and texture.

The classes and ids are CamVid's 11 (with CamVid's usual colours), so models and tools built
for CamVid run unchanged.

Geometry (pinhole camera looking along the street, ground plane ``Y = 0``):

- focal length ``f = W * U(0.8, 1.0)`` pixels (a horizontal field of view of 53-64 degrees);
- stereo baseline ``B = 0.22`` m (a Cityscapes-like rig);
- camera height ``h = U(1.2, 1.7)`` m; horizon row ``y_h = H * U(0.4, 0.55)``; principal
  point (and vanishing point of the street) at column ``W * U(0.4, 0.6)``.

A ground point at depth ``Z`` projects to row ``y = y_h + f h / Z``, so ground pixels have
disparity ``f B / Z = B (y - y_h) / h``. Cars, pedestrians, cyclists, poles and trees are flat
fronto-parallel cut-outs at one depth ``Z``: constant disparity ``f B / Z``, bottom on the ground
row for ``Z`` and height ``f H_obj / Z`` pixels. Facades, fences and hedges along the street are
vertical planes ``X = const`` whose depth varies per column. Sky is infinitely far: disparity 0
(unknown). Use :func:`scene_rig` to get a scene's camera without rendering it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, Transform
from leanseg.data.classes import CAMVID_CLASSES, CAMVID_PALETTE
from leanseg.data.synthetic_render import (
    BICYCLIST,
    BUILDING,
    CAR,
    FENCE,
    PAVEMENT,
    PEDESTRIAN,
    POLE,
    ROAD,
    SIGN,
    SKY,
    THING_CLASSES,
    TREE,
    _Renderer,
)
from leanseg.utils import atomic_write, atomic_write_text

__all__ = [
    "BASELINE",
    "BICYCLIST",
    "BUILDING",
    "CAR",
    "CLASSES",
    "FENCE",
    "GENERATOR_VERSION",
    "MANIFEST",
    "PALETTE",
    "PAVEMENT",
    "PEDESTRIAN",
    "POLE",
    "ROAD",
    "SIGN",
    "SKY",
    "SPLITS",
    "StereoRig",
    "SyntheticStreetScenes",
    "THING_CLASSES",
    "TREE",
    "decode_disparity",
    "encode_disparity",
    "generate_scene",
    "scene_rig",
    "scene_seed",
    "write_dataset",
]

# The same 11 classes, ids and colours as CamVid (SegNet layout), so models move between them.
CLASSES: tuple[str, ...] = CAMVID_CLASSES
PALETTE: tuple[tuple[int, int, int], ...] = CAMVID_PALETTE
# The class ids SKY .. BICYCLIST and THING_CLASSES are defined in synthetic_render, which
# paints them, and re-exported here.
SPLITS: tuple[str, ...] = ("train", "val", "test")
BASELINE = 0.22  # metres
# Bumped whenever a seed renders a different scene, so cached copies on disk are rewritten.
GENERATOR_VERSION = 1
MANIFEST = "synthetic_manifest.json"


@dataclass(frozen=True)
class StereoRig:
    """The camera of one scene (see the module docstring for how each value is drawn).

    Attributes:
        focal: Focal length in pixels.
        baseline: Stereo baseline in metres.
        height: Camera height above the ground in metres.
        horizon: Image row of the horizon (fractional).
        cx: Image column of the principal point, where the street vanishes.
    """

    focal: float
    baseline: float
    height: float
    horizon: float
    cx: float

    def ground_row(self, depth: float) -> float:
        """Row where the ground at ``depth`` metres is seen."""
        return self.horizon + self.focal * self.height / depth

    def disparity(self, depth: float) -> float:
        """Disparity in pixels of a point at ``depth`` metres."""
        return self.focal * self.baseline / depth

    def ground_disparity(self, row: np.ndarray | float) -> np.ndarray | float:
        """Disparity of the ground plane seen at ``row`` (valid below the horizon)."""
        return self.baseline * (np.asarray(row) - self.horizon) / self.height


def _draw_rig(rng: np.random.Generator, size: tuple[int, int]) -> StereoRig:
    height, width = size
    return StereoRig(
        focal=width * rng.uniform(0.8, 1.0),
        baseline=BASELINE,
        height=rng.uniform(1.2, 1.7),
        horizon=height * rng.uniform(0.4, 0.55),
        cx=width * rng.uniform(0.4, 0.6),
    )


def scene_rig(seed: int, size: tuple[int, int] = (512, 1024)) -> StereoRig:
    """The camera that :func:`generate_scene` uses for ``seed`` and ``size``."""
    return _draw_rig(np.random.default_rng(seed), size)


# ---------------------------------------------------------------------------------------------
# scene layout: the street, and what stands where along it


@dataclass
class _Street:
    """Layout of the street in metres (X: right of the camera)."""

    centre: float  # X of the road's centre line
    road_width: float
    lanes: int
    sidewalk: dict[int, float]  # side (-1 left, +1 right) -> width
    grass_verge: dict[int, bool]
    open_side: dict[int, bool]  # no buildings on that side (park, car park)

    @staticmethod
    def draw(rng: np.random.Generator) -> _Street:
        lanes = int(rng.integers(2, 5))
        return _Street(
            centre=rng.uniform(-2.5, 2.5),
            road_width=lanes * rng.uniform(2.8, 3.6),
            lanes=lanes,
            sidewalk={side: rng.uniform(2, 6) for side in (-1, 1)},
            grass_verge={side: bool(rng.random() < 0.3) for side in (-1, 1)},
            open_side={side: bool(rng.random() < 0.15) for side in (-1, 1)},
        )

    def kerb(self, side: int) -> float:
        """X of the kerb on ``side`` (-1 left, +1 right)."""
        return self.centre + side * self.road_width / 2

    def frontage(self, side: int) -> float:
        """X of the back of the pavement, where buildings start."""
        return self.kerb(side) + side * self.sidewalk[side]


def _place(rng: np.random.Generator, lo: float, hi: float, power: float = 1.3) -> float:
    """A depth in [lo, hi], denser near the camera."""
    return lo + (hi - lo) * rng.random() ** power


def _roadside(r: _Renderer, street: _Street, side: int, sunny: bool) -> None:
    """Buildings, parks, street trees and lamp posts on one side of the street."""
    rng = r.rng
    if not street.open_side[side]:
        r.buildings(street, side, shaded=sunny and rng.random() < 0.5)
    frontage = street.frontage(side)
    if street.open_side[side] or rng.random() < 0.3:
        for _ in range(rng.integers(3, 12)):
            r.tree(frontage + side * rng.uniform(1, 25), rng.uniform(5, 120))
        z0 = rng.uniform(1, 30)
        r.hedge(frontage + side * 0.5, z0, z0 + rng.uniform(10, 60))
    if rng.random() < 0.55:  # street trees
        z, x = rng.uniform(2, 12), street.kerb(side) + side * rng.uniform(0.6, 1.2)
        while z < 90:
            r.tree(x, z)
            z += rng.uniform(7, 20)
    z = rng.uniform(3, 25)
    while z < 110:
        kind = "lamp" if rng.random() < 0.8 else "utility"
        r.pole(street.kerb(side) + side * 0.4, z, kind, side)
        z += rng.uniform(18, 40)


def _street_furniture(r: _Renderer, street: _Street) -> None:
    """Fences along the kerb or the frontage; sign posts (at least one) and traffic lights."""
    rng = r.rng
    for _ in range(rng.integers(1, 4)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) + side * rng.uniform(0.2, 0.6)
        if rng.random() < 0.5:
            x = street.frontage(side) + side * rng.uniform(0.0, 0.3)
        z = _place(rng, 1, 50)
        r.fence(x, z, z + rng.uniform(4, 35))
    for k in range(rng.integers(1, 5)):
        side = int(rng.choice((-1, 1)))
        kind = "sign" if k == 0 or rng.random() < 0.6 else "light"
        r.pole(street.kerb(side) + side * rng.uniform(0.3, 0.8), _place(rng, 4, 60), kind, side)


def _traffic(r: _Renderer, street: _Street) -> None:
    """Cars in the lanes, parked and crossing; pedestrians; cyclists near the kerbs."""
    rng = r.rng
    lane = street.road_width / street.lanes
    for _ in range(rng.integers(1, 8)):
        x = street.kerb(-1) + lane * (rng.integers(street.lanes) + 0.5) + rng.uniform(-0.3, 0.3)
        r.car(x, _place(rng, 7, 90), side_view=False)
    for side in (-1, 1):
        if rng.random() < 0.4:  # parked along the kerb
            z = rng.uniform(5, 20)
            while z < 70:
                if rng.random() < 0.7:
                    r.car(street.kerb(side) - side * 1.1, z, side_view=False)
                z += rng.uniform(5, 8)
    if rng.random() < 0.3:  # crossing traffic
        r.car(street.centre + rng.uniform(-6, 6), rng.uniform(20, 60), side_view=True)
    for _ in range(rng.integers(1, 9)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) + side * rng.uniform(0.5, street.sidewalk[side] - 0.3)
        if rng.random() < 0.1:  # crossing the road
            x = street.centre + rng.uniform(-street.road_width / 2, street.road_width / 2)
        r.pedestrian(x, _place(rng, 3, 50))
    for _ in range(rng.integers(1, 4)):
        side = int(rng.choice((-1, 1)))
        x = street.kerb(side) - side * rng.uniform(0.4, 1.4)
        r.cyclist(x, _place(rng, 4, 45), side_view=bool(rng.random() < 0.35))


def generate_scene(seed: int, size: tuple[int, int] = (512, 1024)) -> Sample:
    """Render one street scene, deterministically from ``seed``.

    Args:
        seed: Seed of ``numpy.random.default_rng``; equal seeds give identical samples.
        size: ``(height, width)`` in pixels, at least 8 x 8.

    Returns:
        A :data:`~leanseg.data.base.Sample` with ``image`` (uint8 H x W x 3), ``label``
        (uint8 H x W, every pixel in 0..10), ``instance`` (int32, ``class_id * 1000 + index``
        for cars, pedestrians and cyclists, 0 elsewhere), ``disparity`` (float32, pixels, 0 for
        sky) and ``name`` ``synthetic_<seed>``.
    """
    height, width = size
    if height < 8 or width < 8:
        raise ValueError(f"scene size must be at least 8 x 8, got {size}")
    rng = np.random.default_rng(seed)
    rig = _draw_rig(rng, size)
    r = _Renderer(rng, rig, (height, width))
    street = _Street.draw(rng)
    sunny = bool(rng.random() < 0.4)
    haze = r.sky()
    r.ground(street, sunny)
    if rng.random() < 0.6:
        r.skyline(haze)
    for side in (-1, 1):
        _roadside(r, street, side, sunny)
    _street_furniture(r, street)
    _traffic(r, street)

    image = r.finish(haze)
    with np.errstate(divide="ignore"):
        disparity = (rig.focal * rig.baseline / r.depth).astype(np.float32)
    return {
        "image": image,
        "label": r.label,
        "instance": _renumber(r.instance),
        "disparity": disparity,
        "name": f"synthetic_{seed:06d}",
    }


def _renumber(instance: np.ndarray) -> np.ndarray:
    """Renumber visible instances ``class * 1000 + 1, 2, ...`` per class, in drawing order."""
    counts = np.bincount(instance.ravel())
    present = np.flatnonzero(counts[1:]) + 1
    if present.size == 0:
        return instance
    classes = present // 1000
    rank = np.arange(present.size) - np.searchsorted(classes, classes)
    table = np.zeros(counts.size, np.int32)
    table[present] = classes * 1000 + rank + 1
    return table[instance]


# ---------------------------------------------------------------------------------------------
# splits, files and the dataset

_MAX_SCENES = 1_000_000


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} of the synthetic scenes; valid: {SPLITS}")
    return SPLITS.index(split)


def _check_counts(num_samples: int, seed: int) -> None:
    if not 0 < num_samples <= _MAX_SCENES:
        raise DatasetError(f"num_samples must be in 1..{_MAX_SCENES}, got {num_samples}")
    if seed < 0:
        raise DatasetError(f"seed must be non-negative, got {seed}")


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """Seed of scene ``index`` of ``split``: ``seed * 10^7 + split * 10^6 + index``.

    ``split`` is 0, 1, 2 for train, val, test, and ``index < 10^6``, so no two (split, seed,
    index) triples share a scene: held-out scenes are never training scenes.
    """
    if not 0 <= index < _MAX_SCENES:
        raise DatasetError(f"scene index must be in 0..{_MAX_SCENES - 1}, got {index}")
    return seed * 10 * _MAX_SCENES + _check_split(split) * _MAX_SCENES + index


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    picture = Image.fromarray(array)
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def encode_disparity(disparity: np.ndarray) -> np.ndarray:
    """Cityscapes 16-bit disparity: ``p = d * 256 + 1`` for ``d > 0``, ``0`` = unknown."""
    coded = np.where(disparity > 0, np.round(disparity * 256.0) + 1, 0)
    return np.clip(coded, 0, 65535).astype(np.uint16)


def decode_disparity(coded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_disparity` (to 1/256 pixel), ``float32``."""
    coded = coded.astype(np.float32)
    return np.where(coded > 0, (coded - 1) / 256.0, 0).astype(np.float32)


_FOLDERS = ("images", "labels", "instances", "disparity")


def _sample_paths(root: Path, split: str, name: str) -> dict[str, Path]:
    return {folder: root / folder / split / f"{name}.png" for folder in _FOLDERS}


def _manifest_entry(num_samples: int, size: tuple[int, int], seed: int) -> dict:
    return {
        "num_samples": num_samples,
        "size": [int(size[0]), int(size[1])],
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def write_dataset(
    out_dir: str | Path,
    split: str,
    num_samples: int,
    size: tuple[int, int] = (512, 1024),
    seed: int = 0,
) -> Path:
    """Write scenes ``0..num_samples-1`` of ``split`` as PNG files in the folder layout.

    Layout: ``images/<split>/<name>.png`` (RGB), ``labels/<split>/<name>.png`` (8-bit class
    ids), ``instances/<split>/<name>.png`` (16-bit instance ids) and
    ``disparity/<split>/<name>.png`` (16-bit, Cityscapes encoding, see
    :func:`encode_disparity`), readable by the ``folder`` dataset and external tools. Each file
    is written atomically; ``synthetic_*.png`` files of the split left over from an earlier,
    larger set are removed; the parameters are recorded in ``synthetic_manifest.json``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir)
    _check_split(split)
    _check_counts(num_samples, seed)
    names = set()
    for index in range(num_samples):
        sample = generate_scene(scene_seed(split, index, seed), size)
        names.add(sample["name"])
        paths = _sample_paths(root, split, sample["name"])
        _save_png(sample["image"], paths["images"])
        _save_png(sample["label"], paths["labels"])
        _save_png(sample["instance"].astype(np.uint16), paths["instances"])
        _save_png(encode_disparity(sample["disparity"]), paths["disparity"])
    for folder in _FOLDERS:
        for stale in (root / folder / split).glob("synthetic_*.png"):
            if stale.stem not in names:
                stale.unlink()
    manifest = _read_manifest(root)
    manifest.setdefault("splits", {})[split] = _manifest_entry(num_samples, size, seed)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return root


class SyntheticStreetScenes(Dataset):
    """The procedural street scenes (:func:`generate_scene`) as a dataset.

    Scene ``index`` of ``split`` is rendered from :func:`scene_seed`, so the train, val and test
    splits never share a scene, and ``seed`` picks another set of scenes altogether.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: Applied to each sample by ``__getitem__`` (never to the cache).
        num_samples: Number of scenes in the split.
        size: ``(height, width)`` of the scenes.
        seed: Base seed of the set.
        cache: Keep rendered samples in memory (about 12 bytes per pixel: 6 MB per 512 x 1024
            scene); :meth:`load_raw` returns copies.
        root: Optional folder. When given, the split is written there once by
            :func:`write_dataset` (again only when ``synthetic_manifest.json`` records other
            parameters) and samples are read from the PNG files; disparity is then quantised to
            1/256 pixel. ``None`` renders scenes on the fly.

    Raises:
        DatasetError: for an unknown split, a bad ``num_samples``, ``seed`` or ``size``.
    """

    classes: tuple[str, ...] = CLASSES
    palette: tuple[tuple[int, int, int], ...] = PALETTE
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        split: str = "train",
        transform: Transform | None = None,
        *,
        num_samples: int = 200,
        size: tuple[int, int] = (512, 1024),
        seed: int = 0,
        cache: bool = True,
        root: str | Path | None = None,
    ) -> None:
        _check_split(split)
        _check_counts(num_samples, seed)
        if len(size) != 2 or min(size) < 8:
            raise DatasetError(f"size must be (height, width), each at least 8, got {size}")
        self.split = split
        self.transform = transform
        self.num_samples = int(num_samples)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.cache = cache
        self.root = None if root is None else Path(root)
        self._cache: dict[int, Sample] = {}
        if self.root is not None:
            wanted = _manifest_entry(self.num_samples, self.size, self.seed)
            if _read_manifest(self.root).get("splits", {}).get(split) != wanted:
                write_dataset(self.root, split, self.num_samples, self.size, self.seed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def scene_seed(self, index: int) -> int:
        """The :func:`generate_scene` seed of sample ``index``."""
        return scene_seed(self.split, index, self.seed)

    def load_raw(self, index: int) -> Sample:
        """Sample ``index`` as numpy arrays, before any transform (a fresh copy)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} scenes")
        index %= self.num_samples
        sample = self._cache.get(index)
        if sample is None:
            sample = self._read(index) if self.root is not None else self._render(index)
            if self.cache:
                self._cache[index] = sample
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in sample.items()}

    def __getitem__(self, index: int) -> Sample:
        sample = self.load_raw(index)
        return self.transform(sample) if self.transform is not None else sample

    def _render(self, index: int) -> Sample:
        return generate_scene(self.scene_seed(index), self.size)

    def _read(self, index: int) -> Sample:
        from leanseg.data.io import read_label, read_rgb

        assert self.root is not None
        name = f"synthetic_{self.scene_seed(index):06d}"
        paths = _sample_paths(self.root, self.split, name)
        return {
            "image": read_rgb(paths["images"]),
            "label": read_label(paths["labels"]).astype(np.uint8),
            "instance": read_label(paths["instances"]).astype(np.int32),
            "disparity": decode_disparity(read_label(paths["disparity"])),
            "name": name,
        }
