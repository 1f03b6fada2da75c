"""``leanseg report``: gather each run, measure it, draw the figures, write one HTML file.

For each run: a summary, training curves (loss terms, learning rate, validation mIoU), per-class
IoU bars, the confusion matrix, prediction panels, instance AP for instance heads, and cost. For
several runs also a side-by-side table and an accuracy-vs-latency plot (latencies are measured
one run after another on this machine at the same size, so they compare). When the runs cover
several datasets (a run on several, ``data.datasets``, or runs on different ones), a table with
one row per dataset gives each run's mIoU on it.

Everything that can be checked is checked before the first model is loaded: matplotlib, the
output file (:mod:`leanseg.report.output`), each run directory and each bench file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from leanseg.config import ConfigError
from leanseg.metrics.semantic import SegmentationScores
from leanseg.report import figures
from leanseg.report.defaults import DEFAULT_BENCH_SIZE, DEFAULT_MAX_IMAGES, DEFAULT_PANELS
from leanseg.report.figures import Point, Series
from leanseg.report.gather import RunLog, read_bench_json, read_run
from leanseg.report.html import Section, document, image, table, text
from leanseg.report.measure import Cost, Evaluation, evaluate_run, load_model, measure_cost
from leanseg.report.output import check_output, write_output
from leanseg.report.pictures import panel_png
from leanseg.version import __version__


@dataclass
class RunReport:
    """One run with what the report measured of it (None where it could not)."""

    log: RunLog
    evaluation: Evaluation | None
    cost: Cost | None
    notes: list[str]

    @property
    def accuracy(self) -> tuple[float | None, str]:
        """The mIoU the report compares runs by, and where it comes from."""
        if self.evaluation is not None:
            return self.evaluation.scores.miou, "report"
        best = self.log.best_val
        return (best["miou"], "logged") if best else (None, "none")


def write_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    force: bool = False,
    max_images: int = DEFAULT_MAX_IMAGES,
    num_panels: int = DEFAULT_PANELS,
    bench_size: tuple[int, int] | None = DEFAULT_BENCH_SIZE,
    bench_json: Sequence[str | Path] = (),
    evaluate: bool = True,
    device: str = "cpu",
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``runs`` to ``out`` and return its path.

    Args:
        runs: run directories of ``leanseg train``.
        out: the HTML file; an existing one is refused unless ``force``.
        force: replace a previous report at ``out`` (never another file, see
            :mod:`leanseg.report.output`).
        max_images: val images the checkpoint is evaluated on (confusion matrix, IoU).
        num_panels: prediction panels per run.
        bench_size: ``(H, W)`` at which cost is measured; None measures nothing.
        bench_json: ``leanseg bench --json`` files, one per run in order, read instead of
            measuring.
        evaluate: evaluate checkpoints (else only what the run logged is shown).
        device: where models are evaluated and measured.
        title: the page title (default: the run names).

    Raises:
        ConfigError: naming the file or option: no matplotlib (with the install command), an
            output that may not be written, a folder that is not a run, a bench file that is
            not one, a count of bench files that is not the count of runs.
    """
    figures.require_matplotlib()
    if not runs:
        raise ConfigError("leanseg report needs at least one run directory")
    if bench_json and len(bench_json) != len(runs):
        raise ConfigError(
            f"--bench-json: give one file per run ({len(runs)}), not {len(bench_json)}"
        )
    if max_images < 1 or num_panels < 0:
        raise ConfigError("--max-images must be at least 1 and --panels at least 0")
    out = Path(out)
    paths = [Path(run) for run in runs]
    check_output(out, paths, force=force)
    logs = [read_run(path) for path in paths]
    benches = [read_bench_json(path) for path in bench_json]
    torch_device = torch.device(device)

    reports = []
    for index, log in enumerate(logs):
        bench = Cost.from_bench(benches[index], str(bench_json[index])) if benches else None
        reports.append(
            _measure(log, bench, max_images, num_panels, bench_size, evaluate, torch_device)
        )
    name = title or "leanseg report: " + ", ".join(log.name for log in logs)
    intro = [
        f"Written {time.strftime('%Y-%m-%d %H:%M')} by leanseg {__version__} "
        f"(torch {torch.__version__}, device {device}).",
    ]
    sections = []
    if len(reports) > 1:
        sections += _comparison(reports)
    sections += _datasets(reports)
    sections += [_run_section(report) for report in reports]
    return write_output(out, document(name, intro, sections), force=force)


def _measure(
    log: RunLog,
    bench: Cost | None,
    max_images: int,
    num_panels: int,
    bench_size: tuple[int, int] | None,
    evaluate: bool,
    device: torch.device,
) -> RunReport:
    notes = []
    evaluation = None
    cost = bench
    needs_model = (evaluate and log.checkpoint is not None) or (
        bench is None and bench_size is not None
    )
    if not needs_model:
        if log.checkpoint is None:
            notes.append(f"{log.path} has no checkpoint yet: nothing was evaluated.")
        return RunReport(log, None, cost, notes)
    model, cfg, iteration = load_model(log)
    if log.checkpoint is None:
        notes.append(f"{log.path} has no checkpoint yet: nothing was evaluated.")
    elif evaluate:
        evaluation = evaluate_run(
            model,
            cfg,
            log,
            iteration,
            max_images=max_images,
            num_panels=num_panels,
            device=device,
        )
    if cost is None and bench_size is not None:
        cost = measure_cost(model, bench_size, device)
    return RunReport(log, evaluation, cost, notes)


# ---------------------------------------------------------------------- sections


# Columns of the side-by-side comparison, one row per run (:func:`_comparison_row`).
_COMPARISON_HEADER = (
    "run",
    "model",
    "dataset",
    "iterations",
    "best val mIoU (logged)",
    "mIoU (report)",
    "boundary mIoU",
    "pixel acc.",
    "AP",
    "params (M)",
    "GFLOPs",
    "latency (ms)",
    "peak memory (MiB)",
)


def _comparison(reports: list[RunReport]) -> list[Section]:
    """The side-by-side table of all runs and their accuracy-against-latency plot."""
    return [_comparison_table(reports), _accuracy_vs_latency(reports)]


def _comparison_table(reports: list[RunReport]) -> Section:
    """One row per run (:data:`_COMPARISON_HEADER`), with a note on what was measured."""
    rows = [_comparison_row(report) for report in reports]
    sizes = {tuple(r.cost.input_shape) for r in reports if r.cost}
    return Section(
        "Side-by-side comparison",
        [
            table(list(_COMPARISON_HEADER), rows),
            text(
                "mIoU (report) is measured by this report on the same val images of each run; "
                "cost at input " + ", ".join("x".join(map(str, s)) for s in sorted(sizes)) + "."
                if sizes
                else "mIoU (report) is measured by this report; no cost was measured.",
                note=True,
            ),
        ],
    )


def _comparison_row(report: RunReport) -> list[str]:
    """The cells of one run in the comparison table; '-' for what was not measured."""
    log, evaluation, cost = report.log, report.evaluation, report.cost
    best = log.best_val
    scores = evaluation.scores if evaluation else None
    ap = scores.instance_ap if scores else None
    return [
        log.name,
        log.model_name,
        log.dataset,
        _count(log.iterations),
        _pct(best["miou"] if best else None),
        _pct(scores.miou if scores else None),
        _pct(scores.boundary_miou if scores else None),
        _pct(scores.pixel_accuracy if scores else None),
        _pct(ap["AP"] if ap else None),
        f"{cost.parameters / 1e6:.2f}" if cost else "-",
        f"{cost.gflops:.2f}" if cost else "-",
        f"{cost.latency_ms:.1f}" if cost else "-",
        _number(cost.peak_memory_mib if cost else None),
    ]


def _accuracy_vs_latency(reports: list[RunReport]) -> Section:
    """mIoU against median latency of the runs that have both; a note when fewer than two do."""
    points = []
    sources = set()
    for report in reports:
        accuracy, source = report.accuracy
        if report.cost is not None and accuracy is not None and math.isfinite(accuracy):
            points.append(Point(report.log.name, report.cost.latency_ms, accuracy))
            sources.add(source)
    plot = Section("Accuracy vs latency")
    if len(points) >= 2:
        where = "measured by this report" if sources == {"report"} else "report or logged"
        plot.parts.append(
            image(
                figures.accuracy_vs_latency(points),
                "accuracy against latency",
                f"mIoU ({where}) against the median latency of one inference.",
            )
        )
    else:
        plot.parts.append(text("Fewer than two runs have both an mIoU and a latency.", note=True))
    return plot


def _datasets(reports: list[RunReport]) -> list[Section]:
    """One row per dataset, one mIoU column per run, when the runs cover several datasets
    (one run on several, or runs on different ones); nothing otherwise."""
    names: list[str] = []
    for report in reports:
        names += [name for name in report.log.datasets if name not in names]
    if len(names) < 2:
        return []
    header = ["dataset"]
    columns = []
    for report in reports:
        scores = _scores_by_dataset(report)
        header.append(f"mIoU: {report.log.name}")
        columns.append([_pct(scores[name].miou if name in scores else None) for name in names])
        if report.evaluation is not None and report.evaluation.per_dataset:
            header.append(f"foreign pixels: {report.log.name}")
            columns.append(
                [_pct(scores[name].foreign_fraction if name in scores else None) for name in names]
            )
    rows = [[name, *(column[row] for column in columns)] for row, name in enumerate(names)]
    evaluated = {r.evaluation.num_images for r in reports if r.evaluation is not None}
    images = " or ".join(str(count) for count in sorted(evaluated)) or "no"
    note = (
        f"mIoU in % in each dataset's own classes, measured by this report on the first {images} "
        "val images of each dataset; '-': the run was not trained on that dataset, or not "
        "evaluated. Foreign pixels: % of the dataset's pixels that a run on several datasets "
        "predicts as classes of another dataset (they count as errors)."
    )
    return [Section("Scores per dataset", [table(header, rows), text(note, note=True)])]


def _scores_by_dataset(report: RunReport) -> dict[str, SegmentationScores]:
    """The report's scores of a run by dataset name: each dataset of a run on several, or the
    one dataset of a run on one; empty when nothing was evaluated."""
    evaluation = report.evaluation
    if evaluation is None:
        return {}
    if evaluation.per_dataset:
        return evaluation.per_dataset
    datasets = report.log.datasets
    return {datasets[0]: evaluation.scores} if len(datasets) == 1 else {}


def _run_section(report: RunReport) -> Section:
    log, evaluation = report.log, report.evaluation
    best = log.best_val
    summary = [
        ["run directory", str(log.path)],
        ["model", log.model_name],
        ["dataset", log.dataset],
        ["iterations logged", _count(log.iterations)],
        ["best val mIoU (logged)", _pct(best["miou"] if best else None)],
        ["checkpoint", str(log.checkpoint) if log.checkpoint else "none"],
    ]
    section = Section(f"Run: {log.name}", [table(None, summary)])
    section.parts += [text(note, note=True) for note in report.notes]
    section.children = [
        _curves(log),
        _class_iou(report),
        _confusion(evaluation),
        _panels(evaluation),
        *([_instance_ap(evaluation)] if evaluation and evaluation.scores.instance_ap else []),
        _cost(report.cost),
    ]
    return section


def _curves(log: RunLog) -> Section:
    losses = [Series(name, *log.curve("train", name)) for name in log.loss_terms()]
    lrs = [Series("lr", *log.curve("train", "lr"))]
    accuracy = [
        Series("mIoU", *log.curve("val", "miou")),
        Series("boundary mIoU", *log.curve("val", "boundary_miou")),
    ]
    png = figures.training_curves(losses, lrs, accuracy)
    return Section(
        "Training curves",
        [image(png, "training curves", f"From {log.path / 'metrics.jsonl'}.")],
    )


def _class_iou(report: RunReport) -> Section:
    evaluation = report.evaluation
    if evaluation is not None:
        names, iou = evaluation.class_names, evaluation.scores.iou
        source = f"this report's evaluation of {evaluation.num_images} {evaluation.split} images"
    elif report.log.best_val and isinstance(report.log.best_val.get("iou"), list):
        iou = report.log.best_val["iou"]
        names = _class_names(report.log, len(iou))
        source = f"the best logged validation (iteration {report.log.best_val.get('iteration')})"
    else:
        return Section("Per-class IoU", [text("No per-class IoU: nothing evaluated.", note=True)])
    png = figures.class_iou_bars(names, iou)
    return Section("Per-class IoU", [image(png, "per-class IoU", f"IoU per class, from {source}.")])


def _confusion(evaluation: Evaluation | None) -> Section:
    if evaluation is None:
        return Section("Confusion matrix", [text("No checkpoint was evaluated.", note=True)])
    png = figures.confusion_heatmap(evaluation.scores.confusion, evaluation.class_names)
    caption = (
        f"Rows: ground truth, columns: prediction, each row in % of its pixels; "
        f"{evaluation.num_images} {evaluation.split} images, checkpoint {evaluation.checkpoint}"
        + (f" (iteration {evaluation.iteration})." if evaluation.iteration is not None else ".")
    )
    return Section("Confusion matrix", [image(png, "confusion matrix", caption)])


def _panels(evaluation: Evaluation | None) -> Section:
    section = Section("Prediction panels")
    if evaluation is None or not evaluation.panels:
        section.parts.append(text("No prediction panels: nothing evaluated.", note=True))
        return section
    section.parts.append(
        text(
            "image | ground truth | prediction | error (red: wrong, grey: right, white: ignored)",
            note=True,
        )
    )
    for panel in evaluation.panels:
        section.parts.append(image(panel_png(panel), f"panel {panel.name}", panel.name))
    return section


def _instance_ap(evaluation: Evaluation) -> Section:
    ap = evaluation.scores.instance_ap or {}
    rows = []
    for key, value in (ap.get("per_class") or {}).items():
        name = _class_name(evaluation.class_names, key)
        rows.append([name, _pct(value), _pct((ap.get("per_class_AP50") or {}).get(key))])
    rows.append(["mean", _pct(ap.get("AP")), _pct(ap.get("AP50"))])
    return Section("Instance AP", [table(["class", "AP", "AP50"], rows)])


def _cost(cost: Cost | None) -> Section:
    if cost is None:
        return Section("Cost", [text("Cost was not measured.", note=True)])
    rows = [
        ["parameters", f"{cost.parameters / 1e6:.3f} M"],
        ["GFLOPs (FMA)", f"{cost.gflops:.3f}"],
        ["latency (median)", f"{cost.latency_ms:.2f} ms"],
        ["peak memory", _number(cost.peak_memory_mib, " MiB")],
        ["activation memory (training)", _number(cost.activation_memory_mib, " MiB")],
        ["input", "x".join(map(str, cost.input_shape))],
        ["device", cost.device_name],
        ["source", cost.source],
    ]
    return Section("Cost", [table(["quantity", "value"], rows)])


# ---------------------------------------------------------------------- formatting


def _class_names(log: RunLog, count: int) -> list[str]:
    classes = (log.config.get("data") or {}).get("classes")
    if isinstance(classes, list) and len(classes) == count:
        return [str(c) for c in classes]
    return [str(i) for i in range(count)]


def _class_name(names: list[str], key: str) -> str:
    return names[int(key)] if key.isdigit() and int(key) < len(names) else key


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}"


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
