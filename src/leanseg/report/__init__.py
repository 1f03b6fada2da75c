"""``leanseg report``: one self-contained HTML file about one or more training runs.

Modules, one job each:

- :mod:`~leanseg.report.gather`: read a run directory (config, metrics log, checkpoints) and
  bench JSON files;
- :mod:`~leanseg.report.measure`: load the checkpoint, evaluate it on the val split (confusion
  matrix, per-class IoU, instance AP), cut prediction panels, measure cost with
  ``leanseg.profiling``;
- :mod:`~leanseg.report.figures`: the plots (matplotlib, the optional ``report`` extra, imported
  nowhere else in leanseg) and :mod:`~leanseg.report.pictures`: the panels (Pillow);
- :mod:`~leanseg.report.html`: escaped HTML pieces and the page; :mod:`~leanseg.report.output`:
  where the file may be written;
- :mod:`~leanseg.report.build`: :func:`write_report`, tying them together.

The subcommand's arguments are :mod:`leanseg.commands.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_demo_report", "write_report"]

# The demo's scenes are 256x512; cost is measured at that size.
DEMO_BENCH_SIZE = (256, 512)


def write_demo_report(
    run_dir: str | Path,
    out_path: str | Path,
    *,
    bench_size: tuple[int, int] = DEMO_BENCH_SIZE,
) -> Path:
    """The report ``leanseg demo`` ends with: its run, 20 val images, three panels.

    ``out_path`` is replaced only when a previous report wrote it (see
    :mod:`leanseg.report.output`). Without matplotlib it raises
    :class:`~leanseg.report.figures.MissingPlotLibrary` (a ``ConfigError`` naming
    ``pip install "leanseg[report]"``) before doing any work.

    Args:
        run_dir: the demo's run directory.
        out_path: the HTML file.
        bench_size: input ``(H, W)`` for the cost (the demo's scene size).
    """
    from leanseg.report.build import write_report

    return write_report(
        [run_dir],
        out_path,
        force=True,  # replaces only a previous report (leanseg.report.output)
        max_images=20,
        num_panels=3,
        bench_size=bench_size,
        title="leanseg demo: a ladder head on EfficientNet-Lite0, synthetic street scenes",
    )


def __getattr__(name: str) -> Any:
    # Imported lazily, so that the command line's parser stays cheap (no torch for --help).
    if name == "write_report":
        from leanseg.report.build import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
