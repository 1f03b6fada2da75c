"""Prediction panels as PNG bytes (Pillow, no matplotlib): four pictures in a row."""

from __future__ import annotations

import io

from PIL import Image

from leanseg.report.measure import Panel
from leanseg.visualize import side_by_side

GAP = 4


def panel_png(panel: Panel) -> bytes:
    """image | ground truth | prediction | error, with white gaps, as a PNG."""
    row = side_by_side([panel.image, panel.truth, panel.prediction, panel.error], gap=GAP)
    buffer = io.BytesIO()
    Image.fromarray(row).save(buffer, format="PNG")
    return buffer.getvalue()
