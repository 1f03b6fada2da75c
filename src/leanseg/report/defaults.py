"""Defaults of ``leanseg report``, shared by the command line and :func:`write_report`.

Kept apart so that building the command-line parser imports neither torch nor matplotlib.
"""

from __future__ import annotations

# Val images each checkpoint is evaluated on: enough for a readable confusion matrix, fast on a
# CPU (the logged validation of the run covers its whole val split).
DEFAULT_MAX_IMAGES = 20
DEFAULT_PANELS = 3
# Input (H, W) at which cost is measured: small enough for a CPU, the same for every run.
DEFAULT_BENCH_SIZE = (256, 512)
