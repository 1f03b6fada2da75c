"""The label value that marks unlabelled pixels, shared by every layer.

Label maps hold class ids ``0..C-1`` and :data:`IGNORE_INDEX` where a pixel has no label (void,
out of the region of interest, a class the dataset does not score). Labels are 8-bit files, so at
most 255 classes fit below it. Losses, metrics and heads take ``ignore_index`` as an argument that
defaults to this constant, so a dataset with another ignore value passes its own.
"""

from __future__ import annotations

from typing import Final

IGNORE_INDEX: Final = 255
