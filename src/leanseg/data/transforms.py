"""Joint transforms of samples: every array of a sample moves together.

Transforms take and return a :data:`~leanseg.data.base.Sample`. All but :class:`ToTensor` work
on the numpy contract (``image uint8 (H, W, 3)``, ``label uint8``, optional ``instance int32``
and ``disparity float32``) and leave keys they do not know untouched.

All randomness is drawn from torch's global generator (``torch.rand`` / ``torch.randint``), so
``torch.manual_seed`` makes a run reproducible and the DataLoader's per-worker seeding gives
each worker its own stream without extra code. Inside :func:`sample_generator` the draws of this
thread come from the given generator instead, which is how a background thread prepares
batches (``data.prefetch``) without touching the global generator that the training step uses;
a generator seeded with ``s`` gives the same draws as the global one after
``torch.manual_seed(s)``.

The training pipeline follows thesis 4.6.1: random flip, random rescaling by a factor in
0.5-2 and random crops, where crop pixels outside the rescaled image are filled with the mean
pixel (and the ignore label).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from leanseg.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from leanseg.data.base import IGNORE_INDEX, Sample, Transform

# ITU-R BT.601 luma weights, as PIL's ``convert("L")`` uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Sample keys that hold per-pixel maps other than the image.
_MAP_KEYS = ("label", "instance", "disparity")
# A crop window as a transform draws it (each transform has its own form).
Window = TypeVar("Window")


# Per thread: the generator of the sample being transformed, set by :func:`sample_generator`.
_RNG = threading.local()


@contextmanager
def _set_in_thread(store: threading.local, value: object) -> Iterator[None]:
    """``store.value = value`` for this thread while the block runs, then the previous value."""
    previous = getattr(store, "value", None)
    store.value = value
    try:
        yield
    finally:
        store.value = previous


def sample_generator(generator: torch.Generator | None) -> AbstractContextManager[None]:
    """Draw this thread's augmentation randomness from ``generator`` (``None``: the global one)."""
    return _set_in_thread(_RNG, generator)


def _rand() -> float:
    return float(torch.rand((), generator=getattr(_RNG, "value", None)))


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * _rand()


def _randint(high: int) -> int:
    """A random integer in ``0..high`` (inclusive)."""
    return int(torch.randint(high + 1, (), generator=getattr(_RNG, "value", None)))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes by index lookup (keeps dtype and values).

    Output pixel ``(r, c)`` takes input pixel ``(floor((r + 0.5) * H / height), ...)``, the
    centre-aligned rule of PIL's NEAREST and torch's ``nearest-exact``.
    """
    in_h, in_w = array.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * (in_h / height)).astype(np.int64), in_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (in_w / width)).astype(np.int64), in_w - 1)
    return array[rows[:, None], cols[None, :]]


def resize_sample(sample: Sample, height: int, width: int) -> Sample:
    """Resize every map of a sample to ``(height, width)``.

    The image is resized bilinearly (PIL, which low-pass filters when shrinking), label and
    instance maps by nearest neighbour, and disparity by nearest neighbour with its values
    multiplied by the horizontal scale factor, since disparity is measured in pixels of width.
    """
    out = dict(sample)
    in_h, in_w = sample["image"].shape[:2]
    if (in_h, in_w) == (height, width):
        return out
    image = Image.fromarray(sample["image"]).resize((width, height), Image.BILINEAR)
    out["image"] = np.array(image, dtype=np.uint8)
    for key in ("label", "instance"):
        if key in sample:
            out[key] = resize_nearest(sample[key], height, width)
    if "disparity" in sample:
        disparity = resize_nearest(sample["disparity"], height, width)
        out["disparity"] = (disparity * np.float32(width / in_w)).astype(np.float32)
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}([{inner}])"


class RandomScale:
    """Rescale the whole sample by a factor drawn uniformly from ``[min_scale, max_scale]``.

    Args:
        min_scale: Smallest factor (thesis 4.6.1: 0.5).
        max_scale: Largest factor (thesis 4.6.1: 2).
    """

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale = min_scale
        self.max_scale = max_scale

    def __call__(self, sample: Sample) -> Sample:
        scale = _uniform(self.min_scale, self.max_scale) * _scale_factor()
        in_h, in_w = sample["image"].shape[:2]
        height = max(1, round(in_h * scale))
        width = max(1, round(in_w * scale))
        return resize_sample(sample, height, width)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.min_scale}, {self.max_scale})"


# Progressive resizing (``data.crop_schedule``): the crop size that :class:`RandomCrop` uses in
# place of its own while set, and the factor that multiplies every random rescale, per thread
# (each data-loader worker is its own process).
_CROP_OVERRIDE = threading.local()
_SCALE_FACTOR = threading.local()


def crop_size_override(size: tuple[int, int] | None) -> AbstractContextManager[None]:
    """Make every :class:`RandomCrop` in this thread cut ``size`` windows (``None``: their own)."""
    return _set_in_thread(_CROP_OVERRIDE, size)


def scale_factor_override(factor: float | None) -> AbstractContextManager[None]:
    """Multiply the factor every :class:`RandomScale` in this thread draws by ``factor``
    (``None``: 1). The draw itself is unchanged, so the random stream stays the same."""
    return _set_in_thread(_SCALE_FACTOR, factor)


def _scale_factor() -> float:
    factor = getattr(_SCALE_FACTOR, "value", None)
    return 1.0 if factor is None else factor


class RandomCrop:
    """Crop a random ``size`` window, padding where the sample is smaller than the crop.

    Along an axis where the sample is larger, the window position is random; where it is
    smaller, the sample is placed at a random position inside the crop and the rest is filled
    with ``mean_colour`` in the image (thesis 4.6.1), ``ignore_index`` in the label, 0 (no
    instance) in the instance map and 0 (unknown) in the disparity map.

    Args:
        size: Crop ``(height, width)``, or one int for a square crop.
        mean_colour: RGB fill of the image padding, ``uint8`` values.
        ignore_index: Fill of the label padding.
        cat_max_ratio: Redraw the window while one class covers more than this share of its
            labelled pixels (:func:`draw_window`); ``None`` keeps the first draw.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean_colour: Sequence[int],
        ignore_index: int = IGNORE_INDEX,
        cat_max_ratio: float | None = None,
    ) -> None:
        self.size = _pair(size)
        self.mean_colour = tuple(int(c) for c in mean_colour)
        self.ignore_index = ignore_index
        self.cat_max_ratio = cat_max_ratio

    def _fill(self, key: str) -> int | tuple[int, ...]:
        return {"image": self.mean_colour, "label": self.ignore_index}.get(key, 0)

    def __call__(self, sample: Sample) -> Sample:
        crop_h, crop_w = getattr(_CROP_OVERRIDE, "value", None) or self.size
        in_h, in_w = sample["image"].shape[:2]

        def draw() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
            # Per axis: (start in the sample, start in the crop, length copied).
            return _window(in_h, crop_h), _window(in_w, crop_w)

        def label_of(window: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
            (top, _, height), (left, _, width) = window
            return sample["label"][top : top + height, left : left + width]

        rows, cols = draw_window(
            draw, label_of if "label" in sample else None, self.cat_max_ratio, self.ignore_index
        )
        out = dict(sample)
        for key in ("image", *_MAP_KEYS):
            if key not in sample:
                continue
            array = sample[key]
            result = np.empty((crop_h, crop_w, *array.shape[2:]), dtype=array.dtype)
            result[...] = np.asarray(self._fill(key), dtype=array.dtype)
            result[rows[1] : rows[1] + rows[2], cols[1] : cols[1] + cols[2]] = array[
                rows[0] : rows[0] + rows[2], cols[0] : cols[0] + cols[2]
            ]
            out[key] = result
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}, mean_colour={self.mean_colour})"


# Draws of a crop window before :func:`draw_window` keeps the last one (MMSegmentation's count).
CROP_DRAWS = 10


def largest_class_share(label: np.ndarray, ignore_index: int) -> float:
    """The share of ``label``'s labelled pixels (not ``ignore_index``) that its most frequent
    class covers; 0 for a label with no labelled pixel."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    total = counts.sum()
    return float(counts.max() / total) if total else 0.0


def draw_window(
    draw: Callable[[], Window],
    label_of: Callable[[Window], np.ndarray] | None,
    cat_max_ratio: float | None,
    ignore_index: int,
) -> Window:
    """A crop window from ``draw()``, redrawn while one class covers more than
    ``cat_max_ratio`` of the labelled pixels of ``label_of(window)`` (at most
    :data:`CROP_DRAWS` draws; the last is kept). Without a ratio or a label the first draw is
    kept, so the random stream is that of a single draw."""
    window = draw()
    if cat_max_ratio is None or label_of is None:
        return window
    for _ in range(CROP_DRAWS - 1):
        if largest_class_share(label_of(window), ignore_index) <= cat_max_ratio:
            break
        window = draw()
    return window


class RandomScaleCrop:
    """:class:`RandomScale` followed by :class:`RandomCrop`, computing only the crop's pixels.

    Rescaling a 480x360 image by up to 2x and then cutting a 256x192 window out of it spends
    most of its time on pixels that are thrown away. Where the rescaled sample covers the crop,
    this transform resamples just the window from the original (PIL's ``resize`` with a source
    ``box`` for the image, the same index lookup as :func:`resize_nearest` for the maps), with
    the same random draws in the same order, so the result is that of the two transforms in a
    row (``tests/test_fast_training.py``). Where the crop needs padding it runs them as they are.
    With ``cat_max_ratio`` only the window's position is redrawn, at the drawn scale.
    """

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        size: int | Sequence[int],
        mean_colour: Sequence[int],
        ignore_index: int = IGNORE_INDEX,
        cat_max_ratio: float | None = None,
    ) -> None:
        self.scale = RandomScale(min_scale, max_scale)
        self.crop = RandomCrop(size, mean_colour, ignore_index, cat_max_ratio)

    def __call__(self, sample: Sample) -> Sample:
        factor = _uniform(self.scale.min_scale, self.scale.max_scale) * _scale_factor()
        in_h, in_w = sample["image"].shape[:2]
        height, width = max(1, round(in_h * factor)), max(1, round(in_w * factor))
        crop_h, crop_w = getattr(_CROP_OVERRIDE, "value", None) or self.crop.size
        if height < crop_h or width < crop_w:
            return self.crop(resize_sample(sample, height, width))

        def draw() -> tuple[int, int]:
            return _randint(height - crop_h), _randint(width - crop_w)

        def label_of(corner: tuple[int, int]) -> np.ndarray:
            rows, cols = _source_rows_cols(in_h, in_w, (height, width), (*corner, crop_h, crop_w))
            return sample["label"][rows[:, None], cols[None, :]]

        top, left = draw_window(
            draw,
            label_of if "label" in sample else None,
            self.crop.cat_max_ratio,
            self.crop.ignore_index,
        )
        return resize_window(sample, (height, width), (top, left, crop_h, crop_w))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scale!r}, {self.crop!r})"


def resize_window(
    sample: Sample, size: tuple[int, int], window: tuple[int, int, int, int]
) -> Sample:
    """The ``(top, left, height, width)`` window of ``sample`` resized to ``size`` (H, W).

    Equals ``resize_sample(sample, *size)`` cropped to the window, computed on the window only.
    """
    height, width = size
    top, left, crop_h, crop_w = window
    in_h, in_w = sample["image"].shape[:2]
    out = dict(sample)
    if (in_h, in_w) == (height, width):
        for key in ("image", *_MAP_KEYS):
            if key in sample:
                out[key] = np.ascontiguousarray(
                    sample[key][top : top + crop_h, left : left + crop_w]
                )
        return out
    sy, sx = in_h / height, in_w / width
    box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
    image = Image.fromarray(sample["image"]).resize((crop_w, crop_h), Image.BILINEAR, box=box)
    out["image"] = np.array(image, dtype=np.uint8)
    rows, cols = _source_rows_cols(in_h, in_w, size, window)
    for key in ("label", "instance"):
        if key in sample:
            out[key] = sample[key][rows[:, None], cols[None, :]]
    if "disparity" in sample:
        disparity = sample["disparity"][rows[:, None], cols[None, :]]
        out["disparity"] = (disparity * np.float32(width / in_w)).astype(np.float32)
    return out


def _source_rows_cols(
    in_h: int, in_w: int, size: tuple[int, int], window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns of an ``in_h x in_w`` map that the nearest-neighbour resize to
    ``size`` (as :func:`resize_nearest`) puts in the ``(top, left, height, width)`` window."""
    top, left, crop_h, crop_w = window
    sy, sx = in_h / size[0], in_w / size[1]
    rows = np.minimum(((np.arange(top, top + crop_h) + 0.5) * sy).astype(np.int64), in_h - 1)
    cols = np.minimum(((np.arange(left, left + crop_w) + 0.5) * sx).astype(np.int64), in_w - 1)
    return rows, cols


def _window(length: int, crop: int) -> tuple[int, int, int]:
    if length >= crop:
        return _randint(length - crop), 0, crop
    return 0, _randint(crop - length), length


class RandomHorizontalFlip:
    """Mirror every map of the sample left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if _rand() >= self.p:
            return sample
        out = dict(sample)
        for key in ("image", *_MAP_KEYS):
            if key in sample:
                out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation changes of the image only.

    Each factor is drawn uniformly from ``[1 - strength, 1 + strength]`` and applied in that
    order: brightness scales the pixel values, contrast blends with the mean grey level, and
    saturation blends with the per-pixel grey image (as torchvision's ``ColorJitter`` defines
    them, in a fixed order).

    Args:
        strength: Half-width of the factor range; 0 leaves images unchanged.
    """

    def __init__(self, strength: float) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"strength must be in [0, 1), got {strength}")
        self.strength = strength

    def __call__(self, sample: Sample) -> Sample:
        if self.strength == 0:
            return sample
        low, high = 1 - self.strength, 1 + self.strength
        brightness, contrast, saturation = (_uniform(low, high) for _ in range(3))
        image = sample["image"].astype(np.float32) * brightness
        image = np.clip(image, 0, 255)
        grey_mean = float((image @ _LUMA).mean())
        image = np.clip((image - grey_mean) * contrast + grey_mean, 0, 255)
        grey = (image @ _LUMA)[..., None]  # (H, W, 1)
        image = np.clip((image - grey) * saturation + grey, 0, 255)
        out = dict(sample)
        out["image"] = np.rint(image).astype(np.uint8)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.strength})"


class ToTensor:
    """Convert a numpy sample to tensors; normalise the image with ``mean`` and ``std``.

    ``image`` becomes ``float32 (C, H, W)`` with ``(x / 255 - mean) / std``, ``C`` the length of
    ``mean`` (a 2-D grey image counts as one channel); ``label`` and
    ``instance`` become ``int64``; ``disparity`` ``float32``; ``stereo_baseline`` a ``float32``
    scalar tensor (a batch of them is ``(B,)``); other keys (``name``) are kept.

    Args:
        mean: Per-channel mean of images scaled to 0..1 (RGB, or one per channel).
        std: Per-channel standard deviation of images scaled to 0..1.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        # np.array copies: arrays decoded by PIL are read-only, which torch warns about.
        array = np.array(sample["image"], dtype=np.uint8)
        if array.ndim == 2:  # grey-scale (H, W)
            array = array[..., None]
        image = torch.from_numpy(array).permute(2, 0, 1)
        out["image"] = (image.float() / 255.0 - self.mean) / self.std  # (C, H, W)
        for key in ("label", "instance"):
            if key in sample:
                out[key] = torch.from_numpy(np.array(sample[key], dtype=np.int64))
        if "disparity" in sample:
            out["disparity"] = torch.from_numpy(np.array(sample["disparity"], dtype=np.float32))
        if "stereo_baseline" in sample:
            out["stereo_baseline"] = torch.tensor(float(sample["stereo_baseline"]))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()})"


def input_statistics(data_cfg: DataConfig) -> tuple[Sequence[float], Sequence[float]]:
    """``(mean, std)`` of the config; ImageNet's where a hand-made config left them ``None``.

    Configs read by :func:`leanseg.models.load_run_config` always carry the backbone's values.
    """
    mean = IMAGENET_MEAN if data_cfg.mean is None else data_cfg.mean
    std = IMAGENET_STD if data_cfg.std is None else data_cfg.std
    return mean, std


def mean_colour(data_cfg: DataConfig) -> tuple[int, ...]:
    """The dataset mean as a ``uint8`` colour (one value per channel), the fill of padded crops."""
    return tuple(int(round(255 * m)) for m in input_statistics(data_cfg)[0])


def build_train_transform(data_cfg: DataConfig) -> Compose:
    """Training augmentation: jitter, random scale, random crop, flip, then ``ToTensor``.

    The colour jitter comes first so that the padding of crops stays exactly the mean colour;
    the flip comes after the crop, where it touches fewer pixels (the order of the two does
    not change the distribution of samples).
    """
    transforms: list[Transform] = []
    if data_cfg.color_jitter > 0:
        transforms.append(ColorJitter(data_cfg.color_jitter))
    fill = mean_colour(data_cfg)
    crop_options = {
        "ignore_index": data_cfg.ignore_index,
        "cat_max_ratio": data_cfg.cat_max_ratio,
    }
    if tuple(data_cfg.scale_range) != (1.0, 1.0):
        transforms.append(
            RandomScaleCrop(*data_cfg.scale_range, data_cfg.crop_size, fill, **crop_options)
        )
    else:
        transforms.append(RandomCrop(data_cfg.crop_size, fill, **crop_options))
    if data_cfg.hflip:
        transforms.append(RandomHorizontalFlip())
    transforms.append(ToTensor(*input_statistics(data_cfg)))
    return Compose(transforms)


def build_eval_transform(data_cfg: DataConfig) -> Compose:
    """Evaluation: the full image, only converted to normalised tensors."""
    return Compose([ToTensor(*input_statistics(data_cfg))])
