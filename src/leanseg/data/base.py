"""The sample contract shared by every dataset, transform and the trainer.

A dataset's ``__getitem__`` returns a :data:`Sample`, a dict with these keys:

=============  ==========================================  ===================================
key            before transforms (numpy)                   after ``ToTensor`` (torch)
=============  ==========================================  ===================================
``image``      ``uint8 (H, W, 3)`` RGB                     ``float32 (3, H, W)`` normalised
``label``      ``uint8 (H, W)`` class ids, 255 = ignore    ``int64 (H, W)``
``instance``   ``int32 (H, W)``, 0 = no instance (opt.)    ``int64 (H, W)``
``disparity``  ``float32 (H, W)``, 0 = unknown (optional)  ``float32 (H, W)``
``stereo_``    ``float``: stereo baseline in metres, with  ``float32`` scalar
``baseline``   disparity where the camera is known (opt.)
``name``       ``str``: file stem, used for outputs        ``str``
=============  ==========================================  ===================================

Instance ids are unique within an image and follow the Cityscapes convention where the source
has it (``class_id * 1000 + index``); the synthetic scenes use the same convention with their
class ids. Labels are already mapped to train ids (0..C-1, 255 ignore) by the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from leanseg.config.paths import other_paths_tried
from leanseg.structures.labels import IGNORE_INDEX

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class DatasetError(ValueError):
    """A dataset that cannot be read: missing root, unreadable file, bad label values."""


@dataclass(frozen=True)
class SampleFiles:
    """Files behind one sample, for ``leanseg data check`` and error messages."""

    name: str
    image: Path
    label: Path | None
    instance: Path | None = None
    disparity: Path | None = None
    # Stereo camera constants of the image (Cityscapes ``camera/*_camera.json``).
    camera: Path | None = None


class SegmentationDataset(Dataset):
    """Base of the file-backed datasets: a list of :class:`SampleFiles` and a class table.

    Subclasses set ``classes`` / ``palette`` and implement :meth:`_list_files` and, where the
    label files need remapping (Cityscapes label ids -> train ids), :meth:`_convert_label`.
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        if not self.root.is_dir():
            raise DatasetError(f"dataset root not found: {_tried(self.root)}")
        self.files = self._list_files()
        if not self.files:
            raise DatasetError(f"no samples found for split {split!r} under {self.root}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        sample = self.load_raw(index)
        return self.transform(sample) if self.transform is not None else sample

    def load_raw(self, index: int) -> Sample:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _list_files(self) -> list[SampleFiles]:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError


def _tried(root: Path) -> str:
    """``root``, and the other paths a saved run config tried for it (a moved run)."""
    others = other_paths_tried(root)
    return f"{root} (nor {', '.join(others)})" if others else str(root)


def check_label_values(label: np.ndarray, num_classes: int, source: Path | str) -> None:
    """Raise :class:`DatasetError` naming ``source`` if a label is outside 0..C-1 and not 255
    (negative values of signed label images included: cast to ``uint8`` they would wrap into
    class ids)."""
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if label.dtype.kind == "i":
        bad |= label < 0
    if bad.any():
        values = np.unique(label[bad])[:8].tolist()
        raise DatasetError(
            f"{source}: label values {values} are outside 0..{num_classes - 1} and not "
            f"{IGNORE_INDEX} (ignore)"
        )
