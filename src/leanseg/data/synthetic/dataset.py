"""The synthetic street scenes as a PyTorch dataset, rendered on the fly or read from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from leanseg.config import limits
from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, Transform
from leanseg.data.synthetic.camera import scene_rig
from leanseg.data.synthetic.files import manifest_entry, read_manifest, sample_paths, write_dataset
from leanseg.data.synthetic.labels import CLASSES, PALETTE
from leanseg.data.synthetic.maps import decode_disparity
from leanseg.data.synthetic.scene import generate_scene
from leanseg.data.synthetic.splits import check_counts, check_split, scene_seed


class SyntheticStreetScenes(Dataset):
    """The procedural street scenes as a dataset.

    Scene ``index`` of ``split`` is rendered by :func:`~leanseg.data.synthetic.generate_scene`
    from :func:`~leanseg.data.synthetic.scene_seed`, so the train, val and test splits never
    share a scene, and ``seed`` picks another set of scenes altogether. Each sample also carries
    ``stereo_baseline``, the baseline in metres of the scene's stereo rig (the camera constant
    depth-guided scale selection needs beside the disparity, thesis eq. 3.1).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: Applied to each sample by ``__getitem__`` (never to the cache).
        num_samples: Number of scenes in the split.
        size: ``(height, width)`` of the scenes.
        seed: Base seed of the set.
        cache: Keep rendered samples in memory (about 12 bytes per pixel: 6 MB per 512 x 1024
            scene); :meth:`load_raw` returns copies.
        root: Optional folder. When given, the split is written there once by
            :func:`~leanseg.data.synthetic.write_dataset` (again only when
            ``synthetic_manifest.json`` records other parameters) and samples are read from the
            PNG files; disparity is then quantised to 1/256 pixel. ``None`` renders scenes on
            the fly.

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
        check_split(split)
        check_counts(num_samples, seed)
        if len(size) != 2 or min(size) < 8:
            raise DatasetError(f"size must be (height, width), each at least 8, got {size}")
        problem = limits.size_problem(int(size[0]), int(size[1]), limits.MAX_SYNTHETIC_PIXELS)
        if problem:  # refused before a scene is drawn (about 12 bytes per pixel)
            raise DatasetError(f"size {list(size)}: too large for synthetic scenes, {problem}")
        self.split = split
        self.transform = transform
        self.num_samples = int(num_samples)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.cache = cache
        self.root = None if root is None else Path(root)
        self._cache: dict[int, Sample] = {}
        if self.root is not None:
            wanted = manifest_entry(self.num_samples, self.size, self.seed)
            if read_manifest(self.root).get("splits", {}).get(split) != wanted:
                write_dataset(self.root, split, self.num_samples, self.size, self.seed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def scene_seed(self, index: int) -> int:
        """The :func:`~leanseg.data.synthetic.generate_scene` seed of sample ``index``."""
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
        sample = generate_scene(self.scene_seed(index), self.size)
        sample["stereo_baseline"] = self._baseline(index)
        return sample

    def _baseline(self, index: int) -> float:
        """The stereo baseline of scene ``index``'s rig, without rendering the scene."""
        return float(scene_rig(self.scene_seed(index), self.size).baseline)

    def _read(self, index: int) -> Sample:
        from leanseg.data.io import read_label, read_rgb

        assert self.root is not None
        name = f"synthetic_{self.scene_seed(index):06d}"
        paths = sample_paths(self.root, self.split, name)
        return {
            "image": read_rgb(paths["images"]),
            "label": read_label(paths["labels"]).astype(np.uint8),
            "instance": read_label(paths["instances"]).astype(np.int32),
            "disparity": decode_disparity(read_label(paths["disparity"])),
            "stereo_baseline": self._baseline(index),
            "name": name,
        }
