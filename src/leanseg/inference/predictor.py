"""Inference on images of any size: sliding windows, multi-scale and flip testing, a Predictor.

Large images do not fit in memory in one forward pass, so :func:`sliding_window_scores` runs the
model on overlapping tiles and stitches the class scores. The stitching is *center-crop*
stitching: every output pixel takes its scores from the one tile in which it lies farthest from
an inner tile border. Each tile contributes only its inner region; a margin of about half the
overlap is discarded on every side that is not an image border. Unlike averaging the overlapping
scores, this reproduces whole-image inference exactly for a model whose receptive field is small
enough (see :func:`sliding_window_scores`), so tiling changes memory use but not the prediction.

:func:`predict_scores` adds multi-scale and horizontal-flip testing (averaging softmax
probabilities), :func:`choose_tile` turns a pixel budget into a tile size, and :class:`Predictor`
bundles a model, its config and these settings behind ``predict(image) -> label map``.

Memory of :meth:`Predictor.predict` is bounded on any image size: an image larger than the
budget is segmented block by block (:meth:`Predictor.predict_blocks`), each block read from the
decoded image as ``uint8`` (:class:`~leanseg.data.io.ImageRegions`), normalised, scored and
reduced to class ids before the next; no float map of the whole image is ever made. What grows
with the image is the ``uint8`` label map (1 byte per pixel) and the decoded image itself (as
Pillow decodes the file: 4 bytes per pixel for colour), unless ``pyvips`` is installed
(``leanseg[large-images]``): a file over the budget is then decoded a strip of rows at a time
and only the rows of one tile row are held. ``leanseg predict`` writes its outputs as the tile
rows finish, so it holds no full-size label map either.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from leanseg.config import IMAGENET_MEAN, IMAGENET_STD, Config, CRFConfig
from leanseg.data.classes import bit_palette
from leanseg.data.io import ImageRegions, image_to_rgb, read_rgb
from leanseg.inference.dense_crf import DenseCRF
from leanseg.inference.model_inputs import crop_inputs, follow_image
from leanseg.inference.site_cost import SiteCounter
from leanseg.inference.speed import InferenceOptions, InferenceRunner, PreparedModel, prepare_model
from leanseg.structures.labels import IGNORE_INDEX

# Tile sides are multiples of this: the output stride of every backbone leanseg builds.
TILE_MULTIPLE = 32

ImageInput = str | Path | np.ndarray | Image.Image | ImageRegions


class _Span(NamedTuple):
    """One tile along one axis: the input it reads and the output it writes."""

    start: int  # first input row/column of the tile
    stop: int  # one past the last input row/column of the tile
    keep_start: int  # first output row/column taken from this tile
    keep_stop: int  # one past the last output row/column taken from this tile


def megapixels_to_pixels(megapixels: float | None) -> int | None:
    """Convert a budget in megapixels (as a user writes it) to pixels; ``None`` stays ``None``."""
    if megapixels is None:
        return None
    if megapixels <= 0:
        raise ValueError(f"memory budget must be positive, got {megapixels} megapixels")
    return round(megapixels * 1_000_000)


def choose_tile(height: int, width: int, max_pixels: int | None) -> tuple[int, int] | None:
    """Tile size for an image, or ``None`` when the whole image fits the pixel budget.

    Tiles are multiples of 32 (the output stride of leanseg's backbones) with at most
    ``max_pixels`` pixels, as square as the budget allows. When one side of the image is shorter
    than the square tile, the tile spans that whole side (rounded up to a multiple of 32) and is
    longer along the other, so a long strip is cut into few, full tiles.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        max_pixels: the most pixels one forward pass may see; ``None`` never tiles.

    Returns:
        ``(tile_height, tile_width)``, or ``None`` if ``height * width <= max_pixels``.

    Raises:
        ValueError: if the budget is smaller than one 32x32 tile.
    """
    if max_pixels is None or height * width <= max_pixels:
        return None
    if max_pixels < TILE_MULTIPLE * TILE_MULTIPLE:
        raise ValueError(
            f"max_pixels={max_pixels} is smaller than one {TILE_MULTIPLE}x{TILE_MULTIPLE} tile"
        )
    side = math.isqrt(max_pixels) // TILE_MULTIPLE * TILE_MULTIPLE
    short, long = sorted((height, width))
    short_tile = min(side, _round_up(short, TILE_MULTIPLE))
    long_tile = min(
        _round_up(long, TILE_MULTIPLE),
        max_pixels // short_tile // TILE_MULTIPLE * TILE_MULTIPLE,
    )
    return (short_tile, long_tile) if height <= width else (long_tile, short_tile)


@torch.no_grad()
def sliding_window_scores(
    model: nn.Module,
    images: Tensor,
    tile: tuple[int, int],
    overlap: int | float,
    num_classes: int | None = None,
    inputs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Class scores of ``images`` computed tile by tile and stitched by center cropping.

    Tiles overlap by at least ``overlap`` pixels. Tile origins are multiples of the model's
    ``size_divisor`` (32 if the model has none), so every tile sees the same sampling grid of
    strided layers as the whole image does, and the last tile along each axis ends at the image
    border (it may be up to ``size_divisor - 1`` pixels shorter than ``tile``). Between two
    neighbouring tiles the output is cut midway through their overlap: each pixel takes the
    scores of the tile in which it lies farther from an inner border, so every kept pixel has at
    least ``overlap // 2`` pixels of real image context on each side that is not an image border.

    Exactness: for a model in eval mode that is equivariant to shifts by ``size_divisor`` (a
    convolutional network whose total stride divides ``size_divisor``, padding inputs on the
    bottom/right as :class:`~leanseg.nn.segmentor.Segmentor` does) and whose receptive field
    reaches at most ``overlap // 2`` pixels from the output pixel, the result equals
    ``model(images)`` up to floating-point rounding. Averaging overlapping tiles would not: it
    mixes in scores computed next to a tile border. Models with global context (global average
    pooling, SPP/PPM pyramid pooling, attention over the whole image) or very large receptive
    fields only approximately match whole-image inference, because each tile pools over itself.

    Each tile runs once on the whole batch; the loop is over tiles only.

    Args:
        model: maps ``(B, 3, h, w)`` to class scores ``(B, C, h, w)`` for any ``h, w``.
        images: normalised images ``(B, 3, H, W)``.
        tile: ``(tile_height, tile_width)``; rounded down to multiples of ``size_divisor``.
            Along an axis shorter than the tile, one tile covers the whole axis.
        overlap: overlap of neighbouring tiles, in pixels (``int``) or as a fraction of the tile
            side (``float`` in ``[0, 1)``). The overlap actually used can be larger, since the
            tile step is rounded down to a multiple of ``size_divisor``.
        num_classes: if given, the number of classes the model must return (checked).
        inputs: the model's extra inputs at the images' size; each tile gets them cropped with
            it (:func:`~leanseg.inference.model_inputs.crop_inputs`).

    Returns:
        Class scores ``(B, C, H, W)`` in the model's output dtype, on ``images.device``.

    Raises:
        ValueError: on a bad tile size, or an overlap larger than ``tile - size_divisor`` along
            an axis that needs more than one tile.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    divisor = int(getattr(model, "size_divisor", TILE_MULTIPLE) or 1)
    rows = _tile_spans(height, tile[0], _overlap_pixels(overlap, tile[0]), divisor)
    cols = _tile_spans(width, tile[1], _overlap_pixels(overlap, tile[1]), divisor)
    scores: Tensor | None = None
    for row in rows:
        for col in cols:
            in_rows, in_cols = slice(row.start, row.stop), slice(col.start, col.stop)
            tile_inputs = crop_inputs(inputs, in_rows, in_cols) if inputs else {}
            tile_scores = model(images[:, :, in_rows, in_cols], **tile_inputs)
            if scores is None:
                classes = tile_scores.shape[1]
                if num_classes is not None and classes != num_classes:
                    raise ValueError(f"model returned {classes} classes, expected {num_classes}")
                scores = tile_scores.new_empty((batch, classes, height, width))
            expected = (batch, scores.shape[1], row.stop - row.start, col.stop - col.start)
            if tuple(tile_scores.shape) != expected:
                raise ValueError(
                    f"model returned scores of shape {tuple(tile_scores.shape)} for a tile, "
                    f"expected {expected} (class scores at the input size)"
                )
            scores[:, :, row.keep_start : row.keep_stop, col.keep_start : col.keep_stop] = (
                tile_scores[
                    :,
                    :,
                    row.keep_start - row.start : row.keep_stop - row.start,
                    col.keep_start - col.start : col.keep_stop - col.start,
                ]
            )
    assert scores is not None  # at least one tile along each axis
    return scores


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    images: Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    tile: tuple[int, int] | None = None,
    overlap: int | float = 128,
    max_pixels: int | None = None,
    inputs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Class probabilities with multi-scale and horizontal-flip testing.

    For every scale the images are resized (bilinear, ``align_corners=False``, no antialiasing),
    scored whole or tile by tile (:func:`sliding_window_scores`), optionally scored again
    mirrored (and the scores mirrored back), and the scores are resized back to the input size
    (bilinear) and turned into probabilities with a softmax over classes. The result is the mean
    of these softmax probabilities over all scales and flips (averaging probabilities, not
    logits, as is common for multi-scale testing). With ``scales=(1.0,)`` and ``flip=False`` it is
    exactly ``softmax(model(images))``.

    Args:
        model: maps ``(B, 3, h, w)`` to class scores ``(B, C, h, w)`` for any ``h, w``.
        images: normalised images ``(B, 3, H, W)``.
        scales: resize factors; each must be positive.
        flip: also score the horizontally mirrored images.
        tile: fixed tile size used at every scale; ``None`` scores whole images unless
            ``max_pixels`` is given.
        overlap: tile overlap (see :func:`sliding_window_scores`).
        max_pixels: pixel budget of one forward pass; the tile is chosen per scale with
            :func:`choose_tile`, so only scales whose image exceeds the budget are tiled.
            Mutually exclusive with ``tile``.
        inputs: the extra inputs of a model that needs them besides the image (depth-guided
            scale selection, thesis ch. 3: ``disparity``, ``stereo_baseline``), at the images'
            size; each pass calls ``model(images, **inputs)`` with the inputs resized and mirrored
            with the images (:func:`~leanseg.inference.model_inputs.follow_image`) and cropped with
            each tile.

    Returns:
        Probabilities ``(B, C, H, W)`` (float32, summing to one over classes).
    """
    if tile is not None and max_pixels is not None:
        raise ValueError("give either tile or max_pixels, not both")
    if not scales:
        raise ValueError("scales must not be empty")
    if images.dim() != 4:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    total: Tensor | None = None
    count = 0
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {scale}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images
        if size != (height, width):
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        scale_tile = tile if max_pixels is None else choose_tile(*size, max_pixels)
        for mirrored in (False, True) if flip else (False,):
            batch = scaled.flip(-1) if mirrored else scaled
            batch_inputs = follow_image(inputs, size, mirrored=mirrored) if inputs else {}
            if scale_tile is None:
                scores = model(batch, **batch_inputs)
            else:
                scores = sliding_window_scores(
                    model, batch, scale_tile, overlap, inputs=batch_inputs
                )
            if mirrored:
                scores = scores.flip(-1)
            if scores.shape[-2:] != (height, width):
                scores = F.interpolate(
                    scores, size=(height, width), mode="bilinear", align_corners=False
                )
            probabilities = scores.float().softmax(dim=1)  # (B, C, H, W)
            total = probabilities if total is None else total.add_(probabilities)
            count += 1
    assert total is not None
    return total if count == 1 else total.div_(count)


class Predictor:
    """A trained model, its config and test-time settings: image in, label map out.

    Images larger than ``max_pixels`` are segmented block by block (:meth:`predict_blocks`),
    so memory stays bounded for images of any size; the predicted labels do not depend on the
    budget for models whose receptive field fits in half the overlap (at one scale, without
    flip, they are those of :func:`sliding_window_scores`), and approximately so otherwise.

    Args:
        model: maps normalised images ``(B, 3, H, W)`` to class scores ``(B, C, H, W)``.
        cfg: the run config; ``cfg.data`` gives normalisation, class names and palette. ``None``
            for a model built in code (``leanseg.create_model``): the normalisation is then the
            one its backbone declares, the classes are named by ``class_names`` (else
            ``class 0 ...``) and coloured with the VOC bit palette.
        device: where the model runs.
        max_pixels: pixel budget of one forward pass; ``None`` never tiles.
        overlap: tile overlap in pixels.
        scales: test-time resize factors (probabilities averaged).
        flip: also average over horizontally mirrored inputs.
        options: inference-speed options (:class:`~leanseg.inference.speed.InferenceOptions`; the
            default is the fastest exact setting). They are applied to a copy of the model; an
            option the model does not suit is dropped with a note (:attr:`notes`), and
            :attr:`options` says which are in effect.
        crf: refine the probabilities with the fully connected CRF
            (:class:`~leanseg.inference.dense_crf.DenseCRF`, thesis §3.4) with these parameters;
            ``None`` for none.
        class_names: the name of each class, by label id (:attr:`class_names`), for a model
            built in code; ``None`` takes them from ``cfg``, or names them ``class 0 ...``.
        max_image_pixels: image files with more pixels (read from their header) are refused
            before decoding (:class:`~leanseg.data.io.ImageTooLargeError`); ``None`` for
            :data:`leanseg.config.limits.MAX_IMAGE_MEGAPIXELS`.

    Raises:
        InferenceOptionError: for a dtype the device cannot run (fp16 on the CPU).
        ValueError: for ``class_names`` whose count is not the model's ``num_classes``.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config | None = None,
        *,
        device: str | torch.device = "cpu",
        max_pixels: int | None = 4_000_000,
        overlap: int = 128,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        options: InferenceOptions | None = None,
        crf: CRFConfig | None = None,
        class_names: Sequence[str] | None = None,
        max_image_pixels: int | None = None,
    ) -> None:
        count = getattr(model, "num_classes", None)
        if class_names is not None and count is not None and len(class_names) != count:
            raise ValueError(f"{len(class_names)} class names given for a model of {count} classes")
        self._class_names = None if class_names is None else tuple(map(str, class_names))
        self.device = torch.device(device)
        self.crf = None if crf is None else DenseCRF(crf)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.max_pixels = max_pixels
        self.max_image_pixels = max_image_pixels
        self.overlap = overlap
        self.scales = tuple(scales)
        self.flip = flip
        if cfg is None:
            if not hasattr(model, "num_classes"):
                raise ValueError("a Predictor without a config needs a model with num_classes")
            norm = getattr(getattr(model, "backbone", None), "normalization", None)
            imagenet = (IMAGENET_MEAN, IMAGENET_STD)
            statistics = imagenet if norm is None else (norm.mean, norm.std)
        else:
            statistics = (cfg.data.mean, cfg.data.std)
        self._mean = torch.tensor(statistics[0], device=self.device).view(3, 1, 1)
        self._std = torch.tensor(statistics[1], device=self.device).view(3, 1, 1)
        self._prepared: PreparedModel = prepare_model(
            self.model, options or InferenceOptions(), device=self.device
        )
        # A head that reports its cost (QGN) is counted inside the options' input format and dtype.
        self._sites = SiteCounter.wrap(self._prepared.model)
        self._runner = InferenceRunner(self._sites or self._prepared.model, self._prepared.options)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> Predictor:
        """Rebuild the model a checkpoint was trained as, load its weights, and wrap it.

        Loads with :func:`leanseg.inference.loading.load_trained_model`: the checkpoint's
        ``config`` entry rebuilds the model, without the backbone's ImageNet file (the
        checkpoint holds all weights, and that file may not exist where the model is used).

        Args:
            path: a checkpoint written by the trainer (or :func:`save_checkpoint`), or a run
                directory (its ``checkpoints/best.pt`` and ``config.yaml``).
            device: where the model runs.
            **kwargs: the other keyword arguments of :class:`Predictor`.

        Raises:
            CheckpointError: naming the file, if it is missing or unreadable, has no config (not
                a leanseg checkpoint, e.g. bare torchvision weights), has an invalid config, or
                its weights do not fit the model the config describes.
        """
        from leanseg.inference.loading import load_trained_model  # imports every model family

        trained = load_trained_model(path)
        return cls(trained.model, trained.cfg, device=device, **kwargs)

    @property
    def options(self) -> InferenceOptions:
        """The inference options in effect (an asked-for option the model does not suit is off)."""
        return self._prepared.options

    @property
    def notes(self) -> tuple[str, ...]:
        """Why an asked-for inference option is not in effect, one line per option."""
        return self._prepared.notes

    @property
    def last_active_sites(self) -> dict[str, int] | None:
        """Active sites per level of the last predicted image, summed over its tiles, scales and
        flips, for heads that report their cost (QGN); ``None`` for other heads."""
        return None if self._sites is None else self._sites.totals

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, indexed by label id: those given, else the config's."""
        from leanseg.data import dataset_classes

        if self._class_names is not None:
            return self._class_names
        if self.cfg is None:
            return tuple(f"class {i}" for i in range(self.model.num_classes))
        return tuple(dataset_classes(self.cfg.data))

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB colour of each class, indexed by label id."""
        from leanseg.data import dataset_palette

        if self.cfg is None:
            return bit_palette(self.model.num_classes)
        return tuple(tuple(color) for color in dataset_palette(self.cfg.data))

    def predict(self, image: ImageInput, inputs: dict[str, Tensor] | None = None) -> np.ndarray:
        """Label map ``uint8 (H, W)`` of class ids for one RGB image, in bounded memory.

        Args:
            image: a path to an image file, an RGB ``uint8 (H, W, 3)`` array (or grey
                ``(H, W)``), a PIL image, or :class:`~leanseg.data.io.ImageRegions`.
            inputs: what the model reads besides the image, batched as one image
                (:meth:`predict_scores`).
        """
        regions = self.regions(image)
        label = np.empty(regions.shape, np.uint8)
        for rows, cols, probabilities in self.predict_blocks(regions, inputs):
            label[rows, cols] = class_ids(probabilities)
            del probabilities  # let the tile's scores go before the next tile is scored
        return label

    def regions(self, image: ImageInput) -> ImageRegions:
        """``image`` as :class:`~leanseg.data.io.ImageRegions`; a file larger than
        :attr:`max_image_pixels` is refused before decoding, and one larger than the budget
        :attr:`max_pixels` is decoded a strip at a time where ``pyvips`` imports
        (:meth:`~leanseg.data.io.ImageRegions.open`)."""
        if isinstance(image, ImageRegions):
            return image
        if isinstance(image, str | Path):
            return ImageRegions.open(image, self.max_image_pixels, stream_over=self.max_pixels)
        if isinstance(image, Image.Image):
            image.load()
            return ImageRegions(image)
        return ImageRegions(load_rgb(image))

    def predict_blocks(
        self, image: ImageInput, inputs: dict[str, Tensor] | None = None
    ) -> Iterator[tuple[slice, slice, Tensor]]:
        """Class probabilities of one image, block by block, in bounded memory.

        An image of at most ``max_pixels`` is one block (:meth:`predict_scores`). A larger one
        is cut into the tiles :func:`sliding_window_scores` would cut for a budget of
        ``max_pixels / max(1, largest scale)^2`` pixels (so that every rescaled tile fits the
        budget too); each tile is read from the image as ``uint8``, scored with the predictor's
        scales, flips and CRF, and yields the part of it that is farthest from the other tiles
        (center-crop stitching). At one scale without flip and CRF the stitched probabilities
        are those of :func:`sliding_window_scores` over the whole image. Multi-scale and flip
        testing rescale each tile rather than the whole image, and the CRF sees one tile at a
        time (its kernels reach across a tile border only as far as the overlap): both are
        close to, not equal to, their whole-image results.

        Args:
            image: as :meth:`predict`.
            inputs: as :meth:`predict_scores`; maps are cropped with each tile.

        Yields:
            ``(rows, cols, probabilities)``: the block's place in the image and its
            ``float32 (C, h, w)`` probabilities on the predictor's device (a view of the
            tile's: a caller that lets go of it before asking for the next block keeps one
            tile's scores alive, not two); the blocks cover the image once.
        """
        regions = self.regions(image)
        height, width = regions.shape
        if self._sites is not None:
            self._sites.reset()
        if self.max_pixels is None or height * width <= self.max_pixels:
            whole = slice(0, height), slice(0, width)
            yield *whole, self._scores(regions.read(*whole), inputs)
            return
        largest = max(1.0, *self.scales)
        budget = max(TILE_MULTIPLE * TILE_MULTIPLE, int(self.max_pixels / largest**2))
        tile = choose_tile(height, width, budget)
        assert tile is not None  # the image is over the budget
        divisor = int(getattr(self._runner, "size_divisor", TILE_MULTIPLE) or 1)
        rows = _tile_spans(height, tile[0], _overlap_pixels(self.overlap, tile[0]), divisor)
        cols = _tile_spans(width, tile[1], _overlap_pixels(self.overlap, tile[1]), divisor)
        for row in rows:
            for col in cols:
                in_rows, in_cols = slice(row.start, row.stop), slice(col.start, col.stop)
                tile_inputs = None if inputs is None else crop_inputs(inputs, in_rows, in_cols)
                scores = self._scores(regions.read(in_rows, in_cols), tile_inputs)
                kept = scores[
                    :,
                    row.keep_start - row.start : row.keep_stop - row.start,
                    col.keep_start - col.start : col.keep_stop - col.start,
                ]
                yield (
                    slice(row.keep_start, row.keep_stop),
                    slice(col.keep_start, col.keep_stop),
                    kept,
                )
                # Not held while the next tile is scored: a tile's probabilities are the
                # largest thing here (C x 4 bytes per pixel of the tile).
                del scores, kept

    def predict_scores(self, image: ImageInput, inputs: dict[str, Tensor] | None = None) -> Tensor:
        """Class probabilities ``float32 (C, H, W)`` of one whole image, on the predictor's device.

        Averaged over the predictor's scales and flips (:func:`predict_scores`). This holds
        ``4 C`` bytes per pixel of the image (a 150-megapixel image of 19 classes: 11 GB); for
        large images use :meth:`predict` or :meth:`predict_blocks`.

        Args:
            image: as :meth:`predict`.
            inputs: what the model reads besides the image, as a batch of one at the image's
                size, e.g. ``{"disparity": (1, H, W), "stereo_baseline": (1,)}`` for depth-guided
                scale selection; moved with every scale, flip and tile.
        """
        regions = self.regions(image)
        if self._sites is not None:
            self._sites.reset()
        whole = slice(0, regions.height), slice(0, regions.width)
        return self._scores(regions.read(*whole), inputs)

    def _scores(self, array: np.ndarray, inputs: dict[str, Tensor] | None) -> Tensor:
        """Probabilities ``(C, h, w)`` of ``uint8 (h, w, 3)`` pixels: scales, flips and CRF."""
        pixels = torch.from_numpy(array).to(self.device).permute(2, 0, 1).float().div_(255)
        normalised = ((pixels - self._mean) / self._std).unsqueeze(0)  # (1, 3, H, W)
        probabilities = predict_scores(
            self._runner,
            normalised,
            scales=self.scales,
            flip=self.flip,
            overlap=self.overlap,
            max_pixels=self.max_pixels,
            inputs=None if inputs is None else {k: v.to(self.device) for k, v in inputs.items()},
        )
        if self.crf is not None:
            return self.crf(probabilities[0], pixels.mul(255))  # colours in 0-255
        return probabilities[0]


def class_ids(probabilities: Tensor) -> np.ndarray:
    """``uint8 (h, w)`` class ids of probabilities ``(C, h, w)`` (the most likely class).

    Raises:
        ValueError: for more than 255 classes (255 is the ignore label).
    """
    if probabilities.shape[0] > IGNORE_INDEX:
        raise ValueError(
            f"{probabilities.shape[0]} classes do not fit a uint8 label map (255 = ignore)"
        )
    return probabilities.argmax(dim=0).to(torch.uint8).cpu().numpy()


def load_rgb(image: ImageInput) -> np.ndarray:
    """An image as a contiguous RGB ``uint8 (H, W, 3)`` array.

    Raises:
        DatasetError: naming the file, if a path is missing or not a readable image.
        ValueError: on an array that is not ``uint8`` ``(H, W)`` or ``(H, W, 3)``.
    """
    if isinstance(image, str | Path):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return image_to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        if not image.flags.writeable:  # torch.from_numpy wants writable memory
            return np.array(image)
        return np.ascontiguousarray(image)
    raise TypeError(f"expected a path, numpy array or PIL image, got {type(image).__name__}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _overlap_pixels(overlap: int | float, tile_side: int) -> int:
    """Overlap in pixels from pixels (``int``) or a fraction of the tile side (``float``)."""
    if isinstance(overlap, bool) or not isinstance(overlap, int | float):
        raise TypeError(f"overlap must be an int (pixels) or a float (fraction), got {overlap!r}")
    if isinstance(overlap, float):
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"a fractional overlap must be in [0, 1), got {overlap}")
        return round(overlap * tile_side)
    if overlap < 0:
        raise ValueError(f"overlap must be non-negative, got {overlap}")
    return overlap


def _tile_spans(length: int, size: int, overlap: int, divisor: int) -> list[_Span]:
    """Tiles along one axis of ``length`` pixels, with origins at multiples of ``divisor``.

    Regular tiles start every ``step`` pixels (``size - overlap`` rounded down to a multiple of
    ``divisor``, which must leave at least ``divisor``); the last tile starts at the first
    multiple of ``divisor`` from which a tile of at most ``size`` pixels reaches the end, so the
    overlap of every neighbouring pair is at least ``size - step >= overlap``. Neighbouring tiles
    hand over midway through their overlap.
    """
    if size < 1:
        raise ValueError(f"tile sides must be positive, got {size}")
    size = max(divisor, size // divisor * divisor)
    if length <= size:
        return [_Span(0, length, 0, length)]
    step = (size - overlap) // divisor * divisor
    if step < divisor:
        raise ValueError(
            f"overlap ({overlap} px) leaves no room to move a {size} px tile in steps of the "
            f"size divisor {divisor}: use an overlap of at most {size - divisor} px or larger tiles"
        )
    starts = list(range(0, length - size, step))
    starts.append(_round_up(length - size, divisor))
    stops = [min(start + size, length) for start in starts]
    # Output handed over midway through the overlap of each neighbouring pair.
    cuts = [(starts[i + 1] + stops[i]) // 2 for i in range(len(starts) - 1)]
    keep_starts = [0, *cuts]
    keep_stops = [*cuts, length]
    return [_Span(*span) for span in zip(starts, stops, keep_starts, keep_stops, strict=True)]
