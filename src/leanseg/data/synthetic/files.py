"""The synthetic scenes on disk: PNG files in the folder layout, and a manifest of parameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from leanseg.data.synthetic.maps import encode_disparity
from leanseg.data.synthetic.scene import GENERATOR_VERSION, generate_scene
from leanseg.data.synthetic.splits import check_counts, check_split, scene_seed
from leanseg.files.atomic import atomic_write, atomic_write_text

MANIFEST = "synthetic_manifest.json"
_FOLDERS = ("images", "labels", "instances", "disparity")


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    picture = Image.fromarray(array)
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def sample_paths(root: Path, split: str, name: str) -> dict[str, Path]:
    """The PNG file of each map of sample ``name``, by folder (``images``, ``labels``, ...)."""
    return {folder: root / folder / split / f"{name}.png" for folder in _FOLDERS}


def manifest_entry(num_samples: int, size: tuple[int, int], seed: int) -> dict:
    """What the manifest records for a split written with these parameters."""
    return {
        "num_samples": num_samples,
        "size": [int(size[0]), int(size[1])],
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
    }


def read_manifest(root: Path) -> dict:
    """The manifest in ``root``, or ``{}`` when it is missing or unreadable."""
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
    :func:`~leanseg.data.synthetic.encode_disparity`), readable by the ``folder`` dataset and
    external tools. Each file is written atomically; ``synthetic_*.png`` files of the split left
    over from an earlier, larger set are removed; the parameters are recorded in
    ``synthetic_manifest.json``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir)
    check_split(split)
    check_counts(num_samples, seed)
    names = set()
    for index in range(num_samples):
        sample = generate_scene(scene_seed(split, index, seed), size)
        names.add(sample["name"])
        paths = sample_paths(root, split, sample["name"])
        _save_png(sample["image"], paths["images"])
        _save_png(sample["label"], paths["labels"])
        _save_png(sample["instance"].astype(np.uint16), paths["instances"])
        _save_png(encode_disparity(sample["disparity"]), paths["disparity"])
    for folder in _FOLDERS:
        for stale in (root / folder / split).glob("synthetic_*.png"):
            if stale.stem not in names:
                stale.unlink()
    manifest = read_manifest(root)
    manifest.setdefault("splits", {})[split] = manifest_entry(num_samples, size, seed)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return root
