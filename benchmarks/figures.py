"""Figures quoted in the README and docs, written from the result files (issue 30).

A quoted figure sits between two markers that name it, ``<!-- fig:NAME -->72.1<!-- /fig -->``;
:data:`FIGURES` says, for each name, which file of ``benchmarks/results/`` it comes from and how
it is written. :func:`fill` rewrites every marked figure of a text from the files, so
``python benchmarks/tables.py`` keeps the README and docs in step with the results and
``tests/test_readme_tables.py`` fails when a page differs from what the files say. A figure
whose file was re-measured changes in the page at the next run of the script; a figure without a
file cannot be marked, so it cannot be quoted as measured.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The pages whose figures are written from the results.
PAGES = (
    REPO / "README.md",
    REPO / "docs" / "fast-training.md",
    REPO / "docs" / "reproducing-papers.md",
    REPO / "docs" / "peers_cpu.md",
)
MARKER = re.compile(r"<!-- fig:(?P<name>[\w.+-]+) -->(?P<text>.*?)<!-- /fig -->", re.DOTALL)


@dataclass(frozen=True)
class Figure:
    """One quoted figure: the result file it is read from and how it is written.

    Attributes:
        source: the file, relative to ``benchmarks/results/``.
        write: the text of the figure, from the file's content.
    """

    source: str
    write: Callable[[dict[str, Any]], str]


def _class_iou(record: dict[str, Any], name: str) -> str:
    return f"{record['per_class_iou'][name]:.1f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}"


def _verdict(claim: str) -> Callable[[dict[str, Any]], str]:
    """A claim's verdict in ``heads_camvid.json``, linked to that file."""

    def write(record: dict[str, Any]) -> str:
        for row in record["verdicts"]:
            if row["claim"] == claim:
                return f"{claim}: [{row['verdict']}](benchmarks/results/heads_camvid.json)"
        raise KeyError(f"heads_camvid.json has no claim {claim!r}")

    return write


def _latency(record: dict[str, Any], row: str) -> float:
    return record["latency"][row]["median_ms"]


def _compile_ratio(record: dict[str, Any]) -> float:
    """``--compile``'s latency over the same options without it."""
    compiled = _latency(record, "compile + fold_bn + channels_last")
    return compiled / _latency(record, "fold_bn + channels_last")


def _fast_run_minutes(record: dict[str, Any]) -> str:
    return " / ".join(f"{run['train_seconds'] / 60:.1f}" for run in record["runs"])


def _fast_run_mious(record: dict[str, Any]) -> str:
    return " / ".join(f"{run['val_miou']:.1f}" for run in record["runs"])


def _scale_selection_verdict(record: dict[str, Any]) -> str:
    holds = record["ordering_holds_on_mean_miou"]
    verdict = "reproduced" if holds else "not reproduced"
    return (
        f"Table 3.1 ordering ({record['thesis_ordering']}) on synthetic scenes: "
        f"[{verdict}](benchmarks/results/scale_selection.json)"
    )


# The leanseg revisions predict_memory.json compares (benchmarks/speed/predict_memory.py).
_PREDICT_BEFORE_TILES = "git 0fba213"  # before tiled prediction
_PREDICT_BEFORE_STREAMING = "git c6a4068"  # tiles, before streamed outputs and decoding


def _predict_row(
    record: dict[str, Any],
    megapixels: float,
    leanseg: str = "this checkout",
    decoder: str = "pyvips",
) -> dict:
    """The run of ``predict_memory.json`` at about ``megapixels`` of one leanseg (this checkout
    or a compared revision) and decoder (``pyvips``, or ``pillow`` with pyvips unimportable)."""
    for row in record["runs"]:
        if (
            row["leanseg"] == leanseg
            and row["decoder"] == decoder
            and abs(row["megapixels"] - megapixels) < 0.5
        ):
            return row
    raise KeyError(f"predict_memory.json has no run of {leanseg}, {decoder} at {megapixels} MP")


def _bytes_per_pixel(
    record: dict[str, Any], small: float, large: float, leanseg: str, decoder: str
) -> float:
    """Peak memory added per pixel between two image sizes."""
    a = _predict_row(record, small, leanseg, decoder)
    b = _predict_row(record, large, leanseg, decoder)
    added = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20
    return added / ((b["megapixels"] - a["megapixels"]) * 1e6)


def _rss(
    megapixels: float, leanseg: str = "this checkout", decoder: str = "pyvips"
) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{_predict_row(r, megapixels, leanseg, decoder)['peak_rss_mib']:.0f}"


def _predict_ratio_150_to_4(record: dict[str, Any]) -> str:
    """Peak memory at 150 megapixels (tiles) over that at 4 (one pass at the budget), pyvips."""
    large, budget = _predict_row(record, 150), _predict_row(record, 4)
    return f"{large['peak_rss_mib'] / budget['peak_rss_mib']:.2f}"


def _before_extrapolated_gib(record: dict[str, Any]) -> str:
    """Leanseg before tiles at the largest size measured now, extrapolated linearly."""
    largest = max(row["megapixels"] for row in record["runs"])
    base = _predict_row(record, 2, _PREDICT_BEFORE_TILES, "pillow")
    per_pixel = _bytes_per_pixel(record, 2, 20, _PREDICT_BEFORE_TILES, "pillow")
    total = base["peak_rss_mib"] * 2**20 + per_pixel * (largest - base["megapixels"]) * 1e6
    return f"{total / 2**30:.0f}"


def _crf_row(record: dict[str, Any], setting: str) -> dict[str, Any]:
    """A row of ``dense_crf.json``: ``none`` (no CRF) or ``w1/theta_alpha/theta_beta[/w2]``."""
    return record["rows"][setting]


def _crf_class(setting: str, name: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{_crf_row(r, setting)['per_class_iou'][name]:.0f}"


def _crf_gain(name: str) -> Callable[[dict[str, Any]], str]:
    """The thesis parameters' change of one class's IoU, in points."""

    def write(record: dict[str, Any]) -> str:
        before = _crf_row(record, "none")["per_class_iou"][name]
        return f"{_crf_row(record, '5/70/6')['per_class_iou'][name] - before:+.0f}"

    return write


def _table31(row: str) -> Callable[[dict[str, Any]], str]:
    """A Table 3.1 row's val mIoU without / with the CRF, mean over seeds."""

    def write(record: dict[str, Any]) -> str:
        scores = record["rows"][row]
        return f"{100 * scores['mean_miou']:.1f} / {100 * scores['mean_miou_crf']:.1f}"

    return write


def _percent(*keys: str) -> Callable[[dict[str, Any]], str]:
    """The value at ``keys`` (a fraction) in percent."""

    def write(record: dict[str, Any]) -> str:
        value: Any = record
        for key in keys:
            value = value[key]
        return f"{100 * value:.1f}"

    return write


def _steps_table(record: dict[str, Any]) -> str:
    """The step-time table of ``fast_training.json`` (``steps``), one row per lever."""
    steps = record["steps"]
    lines = ["", "| variant (cumulative) | s / iteration | vs the recipe |", "| --- | --- | --- |"]
    for row in steps["rows"]:
        name = row["variant"]
        if name == "+ train.compile":
            name += f" ({steps['compile_seconds_first_step']:.0f} s to compile the first step)"
        lines.append(
            f"| {name} | {row['seconds_per_iteration']:.3f} | {row['relative_to_recipe']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _trial_score(row: dict[str, Any]) -> str:
    """``70.1 (seed 0)``; for a run that evaluated a weight average, also the weights as
    trained: ``70.4 (seed 0; weights as trained 70.1)``."""
    as_trained = row.get("val_miou_training_weights")
    extra = "" if as_trained is None else f"; weights as trained {as_trained:.1f}"
    return f"{row['val_miou']:.1f} (seed {row['seed']}{extra})"


def _trials_table(record: dict[str, Any]) -> str:
    """The trials of ``fast_recipe_trials.json``: one row per trial, val mIoU of each seed."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in record["rows"]:
        by_trial.setdefault(row["trial"], []).append(row)
    lines = ["", "| trial | change to the fast recipe | val mIoU by seed |", "| --- | --- | --- |"]
    for trial, rows in by_trial.items():
        seeds = ", ".join(_trial_score(r) for r in rows)
        changes = ", ".join(f"`{item}`" for item in rows[0]["overrides"]) or "none"
        lines.append(f"| {trial} | {changes} | {seeds} |")
    return "\n".join(lines) + "\n"


_LAYOUT_NAMES = {"contiguous": "NCHW", "channels_last": "NHWC"}


def _peers_table(record: dict[str, Any]) -> str:
    """The rows of ``peers_cpu.json``: GMAC, median latency, ratio to SMP FPN-R18, throughput."""
    lines = [
        "",
        "| model | dtype | layout | GMAC | ms | vs SMP FPN-R18 | GFLOP/s | % of 3x3-conv peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["rows"]:
        layout = _LAYOUT_NAMES[row["settings"]["layout"]]
        lines.append(
            f"| {row['model']} | {row['dtype']} | {layout} | {row['gmac']:.1f} | "
            f"{row['median_ms']:.0f} | {row['vs_smp_fpn_r18']:.2f} | {row['gflops_per_s']:.1f} | "
            f"{row['pct_of_peak']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _peers_row(record: dict[str, Any], model: str, dtype: str = "fp32") -> dict[str, Any]:
    for row in record["rows"]:
        if row["model"] == model and row["dtype"] == dtype:
            return row
    raise KeyError(f"peers_cpu.json has no {dtype} row {model!r}")


def _peers_measured(record: dict[str, Any]) -> str:
    """Where and how ``peers_cpu.json`` was measured, from the file."""
    machine = record["machine"]
    source = machine["leanseg"]
    state = "with uncommitted changes" if source.get("dirty") else "clean"
    date = record.get("date", "at a date the file does not record")
    return (
        f"{date}, `{record['command']}`, on a {machine['cpu_count']}-core "
        f"{machine['device_name']}, {record['threads']} threads, torch "
        f"{machine['torch_version']}, leanseg at commit {source['commit'][:7]} ({state})"
    )


def _peers_peak(record: dict[str, Any]) -> str:
    peak = record["peak"]
    height, width = peak["size"]
    parts = [
        f"{peak[dtype]['gflops_per_s']:.1f} GFLOP/s {dtype} "
        f"({_LAYOUT_NAMES[peak[dtype]['layout']]})"
        for dtype in ("fp32", "bf16")
    ]
    return f"3x3 conv 256->256 at {height}x{width}, " + ", ".join(parts)


def _peers_fewer_gmac(record: dict[str, Any]) -> str:
    ladder = _peers_row(record, "leanseg ladder R18")["gmac"]
    fpn = _peers_row(record, "SMP FPN-R18")["gmac"]
    return f"{100 * (1 - ladder / fpn):.0f}"


def _leave_one_out(run: str) -> Callable[[dict[str, Any]], str]:
    def write(record: dict[str, Any]) -> str:
        for row in record["train"]["rows"]:
            if row["run"] == run:
                return f"{row['val_miou']:.1f}"
        raise KeyError(f"fast_training.json has no training run {run!r}")

    return write


def _step_ratio(variant: str, base: str) -> Callable[[dict[str, Any]], str]:
    """Seconds per iteration of ``variant`` over those of ``base`` in ``fast_training.json``'s
    step table (both measured in the same round-robin run)."""

    def write(record: dict[str, Any]) -> str:
        seconds = {row["variant"]: row["seconds_per_iteration"] for row in record["steps"]["rows"]}
        return f"{seconds[variant] / seconds[base]:.2f}"

    return write


def _trial_miou(trial: str, seed: int = 0) -> Callable[[dict[str, Any]], str]:
    """The val mIoU of one trial's run in ``fast_recipe_trials.json``."""

    def write(record: dict[str, Any]) -> str:
        for row in record["rows"]:
            if row["trial"] == trial and row["seed"] == seed:
                return f"{row['val_miou']:.1f}"
        raise KeyError(f"fast_recipe_trials.json has no run of {trial!r} with seed {seed}")

    return write


FIGURES: dict[str, Figure] = {
    # The demo (benchmarks/training/demo_run.py runs leanseg demo).
    "demo.miou": Figure("demo.json", lambda r: f"{r['model_miou_percent']:.1f}"),
    "demo.baseline": Figure("demo.json", lambda r: f"{r['colour_baseline_miou_percent']:.1f}"),
    # The full CPU recipe (configs/lite0/ladder_camvid.yaml).
    "recipe.miou": Figure("camvid_recipe.json", lambda r: f"{r['val_miou']:.1f}"),
    "recipe.minutes": Figure("camvid_recipe.json", lambda r: _minutes(r["train_seconds"])),
    "recipe.pole": Figure("camvid_recipe.json", lambda r: _class_iou(r, "Pole")),
    "recipe.sign": Figure("camvid_recipe.json", lambda r: _class_iou(r, "SignSymbol")),
    "recipe.pedestrian": Figure("camvid_recipe.json", lambda r: _class_iou(r, "Pedestrian")),
    "recipe.bicyclist": Figure("camvid_recipe.json", lambda r: _class_iou(r, "Bicyclist")),
    "recipe_1thread.miou": Figure("camvid_recipe_1thread.json", lambda r: f"{r['val_miou']:.1f}"),
    "recipe_1thread.iterations": Figure(
        "camvid_recipe_1thread.json", lambda r: str(r["iterations"])
    ),
    "recipe_unweighted.miou": Figure(
        "camvid_recipe_unweighted.json", lambda r: f"{r['val_miou']:.1f}"
    ),
    "recipe_scratch.miou": Figure("camvid_recipe_scratch.json", lambda r: f"{r['val_miou']:.1f}"),
    "recipe_scratch.pole": Figure("camvid_recipe_scratch.json", lambda r: _class_iou(r, "Pole")),
    "recipe_scratch.sign": Figure(
        "camvid_recipe_scratch.json", lambda r: _class_iou(r, "SignSymbol")
    ),
    "recipe_scratch.pedestrian": Figure(
        "camvid_recipe_scratch.json", lambda r: _class_iou(r, "Pedestrian")
    ),
    # The fast recipe (configs/lite0/ladder_camvid_fast.yaml).
    "fast.miou": Figure("camvid_recipe_fast.json", lambda r: f"{r['val_miou_mean']:.1f}"),
    "fast.std": Figure("camvid_recipe_fast.json", lambda r: f"{r['val_miou_std']:.1f}"),
    "fast.run_mious": Figure("camvid_recipe_fast.json", _fast_run_mious),
    "fast.run_minutes": Figure("camvid_recipe_fast.json", _fast_run_minutes),
    # The candidate for the next fast recipe (issue 26 notes; one seed so far).
    "fast.candidate_miou": Figure(
        "camvid_recipe_fast_candidate.json", lambda r: f"{r['val_miou_mean']:.1f}"
    ),
    "fast.candidate_minutes": Figure(
        "camvid_recipe_fast_candidate.json", lambda r: f"{r['train_seconds_max'] / 60:.1f}"
    ),
    "fast.candidate_seed1_miou": Figure(
        "camvid_recipe_fast_candidate_seed1.json", lambda r: f"{r['val_miou_mean']:.1f}"
    ),
    "fast.candidate_seed1_minutes": Figure(
        "camvid_recipe_fast_candidate_seed1.json",
        lambda r: f"{r['train_seconds_max'] / 60:.1f}",
    ),
    "fast.steps_table": Figure("fast_training.json", _steps_table),
    "fast.nothing_frozen_miou": Figure(
        "fast_training.json", _leave_one_out("no_frozen_bn_or_stages")
    ),
    "fast.trials_table": Figure("fast_recipe_trials.json", _trials_table),
    "fast.full_budget_frozen_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("full_budget_frozen")
    ),
    "fast.frozen_until_16_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("full_budget_frozen_until_16")
    ),
    "fast.frozen_until_32_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("full_budget_frozen_until_32")
    ),
    "fast.loss_points_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("full_budget_loss_points")
    ),
    "fast.frozen_16_points_2200_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("frozen_until_16_loss_points_2200")
    ),
    "fast.loss_points_step_ratio": Figure(
        "fast_training.json",
        _step_ratio("model.loss_points: 16384 (288x384)", "+ train.freeze_backbone_until: 8"),
    ),
    "fast.until_32_loss_points_step_ratio": Figure(
        "fast_training.json",
        _step_ratio(
            "train.freeze_backbone_until: 32, model.loss_points: 16384 (288x384)",
            "train.freeze_backbone_until: 32 (288x384)",
        ),
    ),
    "fast.two_thirds_scale_miou": Figure(
        "fast_recipe_trials.json", _trial_miou("two_thirds_scale_2600")
    ),
    # leanseg beside SMP on the CPU (benchmarks/speed/peers_cpu.py, docs/peers_cpu.md).
    "peers.table": Figure("peers_cpu.json", _peers_table),
    "peers.measured": Figure("peers_cpu.json", _peers_measured),
    "peers.peak": Figure("peers_cpu.json", _peers_peak),
    "peers.ladder_over_fpn": Figure(
        "peers_cpu.json", lambda r: f"{r['ladder_r18_over_smp_fpn_r18']:.3f}"
    ),
    "peers.same_settings": Figure(
        "peers_cpu.json", lambda r: f"{r['ladder_r18_over_smp_fpn_r18_same_settings']:.3f}"
    ),
    "peers.fewer_gmac_pct": Figure("peers_cpu.json", _peers_fewer_gmac),
    "peers.same_settings_faster_pct": Figure(
        "peers_cpu.json",
        lambda r: f"{100 * (1 - r['ladder_r18_over_smp_fpn_r18_same_settings']):.0f}",
    ),
    # Threads beside a busy process (benchmarks/speed/thread_contention.py).
    "threads.auto_beside_ms": Figure(
        "thread_contention.json",
        lambda r: f"{r['rows']['auto (leanseg default)']['beside']['median_ms']:.0f}",
    ),
    "threads.two_beside_ms": Figure(
        "thread_contention.json", lambda r: f"{r['rows']['2 threads']['beside']['median_ms']:.0f}"
    ),
    # Inference options (benchmarks/speed/inference_options.py), latency at 1024x2048.
    "options.plain_ms": Figure(
        "inference_options.json", lambda r: f"{_latency(r, 'fp32 plain'):.0f}"
    ),
    "options.fold_cl_ratio": Figure(
        "inference_options.json",
        lambda r: f"{r['latency']['fold_bn + channels_last']['vs_plain']:.2f}",
    ),
    "options.fold_cl_miou": Figure(
        "inference_options.json",
        lambda r: f"{100 * r['rows']['fold_bn + channels_last']['miou']:.2f}",
    ),
    "options.fold_cl_changed_pixels": Figure(
        "inference_options.json",
        lambda r: str(r["rows"]["fold_bn + channels_last"]["labels_changed_pixels"]),
    ),
    "options.bf16_ratio": Figure(
        "inference_options.json",
        lambda r: f"{r['latency']['bf16 + fold_bn + channels_last']['vs_plain']:.2f}",
    ),
    "options.bf16_miou_change": Figure(
        "inference_options.json",
        lambda r: f"{r['rows']['bf16 + fold_bn + channels_last']['miou_change_points']:+.2f}",
    ),
    "options.compile_ratio": Figure(
        "inference_options.json",
        lambda r: f"{_compile_ratio(r):.2f}",
    ),
    "options.fold_ratio": Figure(
        "inference_options.json", lambda r: f"{r['latency']['fold_bn']['vs_plain']:.2f}"
    ),
    "options.cl_ratio": Figure(
        "inference_options.json", lambda r: f"{r['latency']['channels_last']['vs_plain']:.2f}"
    ),
    # Memory of leanseg predict by image size (benchmarks/speed/predict_memory.py).
    "predict.rss_2": Figure("predict_memory.json", _rss(2)),
    "predict.rss_4": Figure("predict_memory.json", _rss(4)),
    "predict.rss_20": Figure("predict_memory.json", _rss(20)),
    "predict.rss_150": Figure("predict_memory.json", _rss(150)),
    "predict.ratio_150_to_4": Figure("predict_memory.json", _predict_ratio_150_to_4),
    "predict.pillow_rss_20": Figure("predict_memory.json", _rss(20, decoder="pillow")),
    "predict.pillow_rss_150": Figure("predict_memory.json", _rss(150, decoder="pillow")),
    "predict.pillow_bytes_per_pixel": Figure(
        "predict_memory.json",
        lambda r: f"{_bytes_per_pixel(r, 4, 150, 'this checkout', 'pillow'):.1f}",
    ),
    "predict.unstreamed_rss_150": Figure(
        "predict_memory.json", _rss(150, _PREDICT_BEFORE_STREAMING, "pillow")
    ),
    "predict.before_rss_20": Figure(
        "predict_memory.json", _rss(20, _PREDICT_BEFORE_TILES, "pillow")
    ),
    "predict.before_bytes_per_pixel": Figure(
        "predict_memory.json",
        lambda r: f"{_bytes_per_pixel(r, 2, 20, _PREDICT_BEFORE_TILES, 'pillow'):.0f}",
    ),
    "predict.before_150_gib": Figure("predict_memory.json", _before_extrapolated_gib),
    # Multi-domain training (benchmarks/papers/multi_domain.py).
    "multi.joint_camvid": Figure(
        "multi_domain.json",
        lambda r: f"{100 * r['a_joint_vs_camvid_only']['camvid_val_miou']['joint']:.1f}",
    ),
    "multi.camvid_only": Figure(
        "multi_domain.json",
        lambda r: f"{100 * r['a_joint_vs_camvid_only']['camvid_val_miou']['camvid_only']:.1f}",
    ),
    "multi.em": Figure(
        "multi_domain.json",
        lambda r: f"{100 * r['a_joint_vs_camvid_only']['em_val_miou_joint']:.1f}",
    ),
    "multi.auroc": Figure(
        "multi_domain.json",
        lambda r: f"{r['c_em_as_ood']['image_auroc']['joint_foreign_flag']:.3f}",
    ),
    # The dense CRF against pydensecrf (benchmarks/papers/dense_crf_reference.py).
    "crf.agreement": Figure(
        "dense_crf_reference.json", lambda r: f"{100 * r['label_agreement']:.2f}"
    ),
    "crf.leanseg_cpu_s_per_mp": Figure(
        "dense_crf_reference.json", lambda r: f"{r['cpu_seconds_per_megapixel']['leanseg']:.1f}"
    ),
    "crf.reference_cpu_s_per_mp": Figure(
        "dense_crf_reference.json",
        lambda r: f"{r['cpu_seconds_per_megapixel']['pydensecrf']:.1f}",
    ),
    # The CRF on the CamVid recipe model (benchmarks/papers/dense_crf.py).
    "crf.thesis_s_per_mp": Figure(
        "dense_crf.json", lambda r: f"{_crf_row(r, '5/70/6')['crf_seconds_per_megapixel']:.1f}"
    ),
    "crf.no_crf_miou": Figure("dense_crf.json", lambda r: f"{_crf_row(r, 'none')['miou']:.2f}"),
    "crf.thesis_miou": Figure("dense_crf.json", lambda r: f"{_crf_row(r, '5/70/6')['miou']:.2f}"),
    "crf.weak_miou": Figure("dense_crf.json", lambda r: f"{_crf_row(r, '1/70/6/1')['miou']:.2f}"),
    "crf.no_crf_pole": Figure("dense_crf.json", _crf_class("none", "Pole")),
    "crf.thesis_pole": Figure("dense_crf.json", _crf_class("5/70/6", "Pole")),
    "crf.no_crf_sign": Figure("dense_crf.json", _crf_class("none", "SignSymbol")),
    "crf.thesis_sign": Figure("dense_crf.json", _crf_class("5/70/6", "SignSymbol")),
    "crf.thesis_pedestrian_gain": Figure("dense_crf.json", _crf_gain("Pedestrian")),
    "crf.thesis_bicyclist_gain": Figure("dense_crf.json", _crf_gain("Bicyclist")),
    # Thesis Table 3.1 on synthetic scenes (benchmarks/papers/scale_selection.py, _cost.py).
    "table31.Single5": Figure("scale_selection.json", _table31("Single5")),
    "table31.Single3+5": Figure("scale_selection.json", _table31("Single3+5")),
    "table31.FixedScales": Figure("scale_selection.json", _table31("FixedScales")),
    "table31.ScaleInvariant": Figure("scale_selection.json", _table31("ScaleInvariant")),
    "table31.cost_gmac_ratio": Figure(
        "scale_selection_cost.json",
        lambda r: f"{r['rows']['ScaleInvariant']['gmac_vs_single5']:.1f}",
    ),
    "table31.cost_latency_ratio": Figure(
        "scale_selection_cost.json",
        lambda r: f"{r['rows']['ScaleInvariant']['latency_ms_vs_single5']:.1f}",
    ),
    "multi.pixel_auroc": Figure(
        "multi_domain.json",
        lambda r: f"{r['c_em_as_ood']['pixel_auroc']['joint_foreign_mass']:.3f}",
    ),
    "multi.camvid_image_auroc": Figure(
        "multi_domain.json",
        lambda r: f"{r['c_em_as_ood']['image_auroc']['camvid_max_softmax']:.3f}",
    ),
    "multi.camvid_pixel_auroc": Figure(
        "multi_domain.json",
        lambda r: f"{r['c_em_as_ood']['pixel_auroc']['camvid_max_softmax']:.3f}",
    ),
    "multi.single_camvid": Figure(
        "multi_domain.json", _percent("d_mixed_vs_single_batches", "single", "camvid")
    ),
    "multi.single_em": Figure(
        "multi_domain.json", _percent("d_mixed_vs_single_batches", "single", "em")
    ),
    # Our verdict on each family's headline claim (the methods table).
    "verdict.ladder": Figure(
        "heads_camvid.json", _verdict("ladder upsampling beats bilinear upsampling")
    ),
    "verdict.pretrained": Figure(
        "heads_camvid.json", _verdict("ImageNet pretraining beats random initialisation")
    ),
    "verdict.nrd": Figure("heads_camvid.json", _verdict("NRD beats the DeepLabV3+ decoder")),
    "verdict.ssn": Figure(
        "heads_camvid.json",
        _verdict("iGUM costs little accuracy against the ERFNet decoder (pretrained encoder)"),
    ),
    "verdict.ldn": Figure("heads_camvid.json", _verdict("SPP helps the ladder (LDN vs no SPP)")),
    "verdict.qgn": Figure(
        "heads_camvid.json",
        _verdict("QGN trained GTC matches or beats trained All, both evaluated PC"),
    ),
    "verdict.sandf": Figure("heads_camvid.json", _verdict("S&F row F vs row A")),
    "verdict.scale_selection": Figure("scale_selection.json", _scale_selection_verdict),
    "verdict.multi_domain": Figure(
        "heads_camvid.json", _verdict("mixed-dataset batches beat single-dataset batches")
    ),
}


def figure_text(name: str, results: Path = RESULTS, cache: dict[str, Any] | None = None) -> str:
    """The text of figure ``name`` as its result file says now."""
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r} in benchmarks/figures.py FIGURES")
    figure = FIGURES[name]
    cache = {} if cache is None else cache
    if figure.source not in cache:
        cache[figure.source] = json.loads((results / figure.source).read_text())
    return figure.write(cache[figure.source])


def fill(text: str, results: Path = RESULTS) -> str:
    """``text`` with every marked figure written from the result files."""
    cache: dict[str, Any] = {}

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        return f"<!-- fig:{name} -->{figure_text(name, results, cache)}<!-- /fig -->"

    return MARKER.sub(replace, text)


def marked_names(text: str) -> list[str]:
    """The figure names a text marks, in order."""
    return [match["name"] for match in MARKER.finditer(text)]
