"""Reference points that need no training: how far does colour alone go?

:class:`ColourMeanClassifier` labels every pixel with the class whose mean RGB colour is
nearest. ``leanseg demo`` reports its mIoU on the held-out synthetic scenes beside the trained
network's, to show that the scenes are not solvable pixel by pixel from colour: a model has to
use shape, texture and context.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from leanseg.data.base import IGNORE_INDEX, Sample


class ColourMeanClassifier:
    """Per-pixel nearest class-mean colour classifier (the "colour alone" baseline).

    Args:
        num_classes: Number of classes ``C``; labels are ``0..C-1``.
        ignore_index: Label value skipped by :meth:`fit`.

    Attributes:
        means: ``float64 (C, 3)`` mean RGB of each class after :meth:`fit`; NaN for classes
            never seen, which are then never predicted (infinite distance).
        counts: ``int64 (C,)`` number of pixels of each class seen by :meth:`fit`.
    """

    def __init__(self, num_classes: int = 11, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.means = np.full((num_classes, 3), np.nan)
        self.counts = np.zeros(num_classes, np.int64)

    def fit(self, samples: Iterable[Sample]) -> ColourMeanClassifier:
        """Accumulate per-class colour sums over untransformed (numpy) samples.

        Args:
            samples: Samples with ``image`` ``uint8 (H, W, 3)`` and ``label`` ``uint8 (H, W)``;
                pixels labelled ``ignore_index`` are skipped.

        Returns:
            ``self``, with :attr:`means` and :attr:`counts` set.

        Raises:
            ValueError: for a label outside ``0..C-1`` that is not ``ignore_index``, or an image
                and label of different sizes.
        """
        c = self.num_classes
        sums = np.zeros((c, 3))
        counts = np.zeros(c, np.int64)
        for sample in samples:
            image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
            if image.shape != (*label.shape, 3):
                raise ValueError(
                    f"image {image.shape} and label {label.shape} do not match (H, W, 3) / (H, W)"
                )
            label = label.ravel().astype(np.int64)
            keep = label != self.ignore_index
            label = label[keep]
            if label.size and (label.min() < 0 or label.max() >= c):
                raise ValueError(f"label values must be in 0..{c - 1} or {self.ignore_index}")
            pixels = image.reshape(-1, 3)[keep].astype(np.float64)
            counts += np.bincount(label, minlength=c)
            for channel in range(3):
                sums[:, channel] += np.bincount(label, weights=pixels[:, channel], minlength=c)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.means = sums / counts[:, None]
        self.counts = counts
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Label of the nearest class mean for every pixel of a ``uint8 (H, W, 3)`` image.

        Returns:
            ``uint8 (H, W)`` class ids.

        Raises:
            RuntimeError: before :meth:`fit` has seen any labelled pixel.
            ValueError: for an image that is not ``(H, W, 3)``.
        """
        seen = self.counts > 0
        if not seen.any():
            raise RuntimeError("ColourMeanClassifier.predict called before fit saw any pixel")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        pixels = image.reshape(-1, 3).astype(np.float32)
        means = np.where(seen[:, None], self.means, 0.0).astype(np.float32)
        # Squared distances (N, C) = |x|^2 - 2 x.m + |m|^2; the |x|^2 term does not change argmin.
        distance = (means**2).sum(axis=1)[None, :] - 2.0 * pixels @ means.T
        distance[:, ~seen] = np.inf
        return distance.argmin(axis=1).astype(np.uint8).reshape(image.shape[:2])
