"""Per-class loss weights from a split's pixel counts (``leanseg data weights``).

Median-frequency balancing (Eigen & Fergus 2015, used by SegNet on CamVid): with ``f_c`` the
fraction of labelled pixels of class ``c``, ``w_c = (median(f) / f_c) ** power``. ``power = 1``
is the published form; ``power = 0.5`` halves the spread on a log scale (CamVid train: pole 2.1
and road 0.38 instead of 4.6 and 0.14), which the issue-11 recipe run uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def median_frequency_weights(
    class_pixels: Sequence[int], power: float = 1.0, decimals: int = 2
) -> list[float]:
    """``(median(f) / f_c) ** power`` for each class, rounded to ``decimals``.

    The median is taken over the classes that occur; a class with no pixel gets weight 1.0 (it
    weighs no pixel of that split, and a config needs a positive value for every class).

    Args:
        class_pixels: labelled pixels per class (``leanseg data check`` counts them).
        power: exponent applied to the median-frequency ratio (1 = published form, 0 = no
            weighting).
        decimals: rounding of the returned weights, so that they read well in a config.

    Raises:
        ValueError: if no class has a pixel, a count is negative, or ``power`` is negative.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"class pixel counts must be a list of non-negative numbers: {counts}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled pixel in the split: cannot weight the classes")
    frequency = counts / counts.sum()
    median = np.median(frequency[present])
    ratio = np.where(present, median / np.where(present, frequency, 1.0), 1.0)
    weights = np.round(ratio**power, decimals)
    # Rounding can reach 0 for a very frequent class; keep every weight positive.
    floor = 10.0**-decimals
    return [float(max(w, floor)) for w in weights]
