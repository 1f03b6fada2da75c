"""Every head on pretrained EfficientNet-Lite0, CamVid, at the fast recipe's full budget (issue 26).

Each run is a head config of ``configs/lite0/heads/`` (plus the variants in :data:`VARIANTS`)
trained by ``leanseg train`` with the ``data`` and ``train`` sections of the fast CPU recipe,
``configs/lite0/ladder_camvid_fast.yaml`` (and its ``base:``), passed as ``--set`` overrides.
They are read from that file every time the script runs, so the heads train on whatever the
recipe says now (its schedule, crop stages, frozen stages); only ``data.root`` (checked to be the
same data) and ``train.num_threads`` (a machine setting, ``--threads``) are not taken. The model
and its loss stay the head config's: the recipe's class weights are an option of its ladder head
(``model.head``) and are not carried, so every head trains with the loss its config states.

Runs go to ``RUNS/<budget>/<name>_s<seed>``, ``<budget>`` a digest of the overrides: a change of
the recipe starts a new set of runs instead of mixing budgets. Runs are taken seed by seed (every
row's seed 0 first), so a one-seed table exists early. As soon as a run ends, what the table needs
of it (final validation, wall time, for QGN the scheme evaluation) is written to a small record
in ``RECORDS/<budget>/<name>_s<seed>.json``, which is committed: run folders hold checkpoints
and stay out of git, so the records are what carries a comparison of many hours across
sessions. A run with a record, or whose last validation is at ``train.max_iters``, is finished
and skipped; one with a checkpoint continues (``--resume``); any other starts. Interrupt the
script at any time and start it again with the same arguments.

Each record and run folder is tied to the row as it was configured (:func:`config_identity`, a
digest of the run's resolved config): a record made before its head config changed is *stale*,
is not counted, and its run trains anew (the old run folder is kept, renamed ``*.stale-<digest>``);
so are cost measurements. The digest covers the config, not leanseg's code: a record also names
the commit it was made at.

Each finished QGN run is evaluated with the All, GTC and PC propagation schemes (QGN Table 1),
at the recipe's evaluation scales (``scheme_scores``), into its record; then costs are
measured once per head (``measure_costs``): GMAC at 1024x2048 (whole model and decoder), CPU
latency at 1024x2048 (round-robin, median), and training activation memory at 768x768 batch 2
with the recipe's frozen backbone parts and real CamVid labels (QGN's GTC propagation depends
on them). The report (``--report-only``) summarises the seeds (mean, sample std) and judges the
papers' claims (``heads_claims.py``), writing ``benchmarks/results/heads_camvid.json`` and
``docs/heads_camvid.md``, and the README table through ``benchmarks/tables.py``.

    python benchmarks/training/heads_camvid.py --jobs 2               # train the rest, report
    python benchmarks/training/heads_camvid.py --train-only --jobs 2  # only train (resumable)
    python benchmarks/training/heads_camvid.py --cost-only            # only GMAC / latency / memory
    python benchmarks/training/heads_camvid.py --report-only          # tabulate finished runs
    python benchmarks/training/heads_camvid.py --plan                 # what would run, and why
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared modules

from common import (
    REPO,
    TrainJob,
    command_line,
    last_validation,
    machine,
    round_robin,
    train,
    write_json,
    write_result,
)
from heads_claims import (
    CLAIMS,
    COST_METRICS,
    MIXED_BATCHES,
    REQUIRED_SEEDS,
    Term,
    judge,
    seed_statistics,
)

CONFIGS = REPO / "configs" / "lite0" / "heads"
RECIPE = REPO / "configs" / "lite0" / "ladder_camvid_fast.yaml"
RUNS = REPO / "runs" / "lite0" / "heads_fast"
RESULTS = REPO / "benchmarks" / "results" / "heads_camvid.json"
RECORDS = REPO / "benchmarks" / "results" / "heads_camvid_runs"
DOCS_TABLE = REPO / "docs" / "heads_camvid.md"
SEEDS = (0, 1, 2)
QGN_SCHEMES = ("all", "gtc", "pc")
# Recipe keys that are not part of the budget: the data's location (checked to be the same
# folder) and the thread count (a property of the machine, set by --threads).
NOT_TAKEN = ("data.root", "train.num_threads")
# Config keys that do not say what a row trains: the seed (a run's, not the row's), the machine's
# threads and loader workers, and where the data and the run folder are.
NOT_IDENTITY = ("train.seed", "train.num_threads", "data.num_workers", "data.root", "work_dir")


@dataclass(frozen=True)
class Run:
    """One row of the comparison: a config, and overrides applied after the recipe's.

    Attributes:
        name: the row's name (``ladder``, ``sandf_b``, ``ladder_scratch``).
        config: the head config.
        overrides: ``--set`` overrides after the recipe's (a variant's changes).
        about: what the row is, for the tables.
    """

    name: str
    config: Path
    overrides: tuple[str, ...] = ()
    about: str = ""


# Rows that are a head config with changes: the pretrained-vs-scratch claim (thesis Table 4.5).
# From scratch nothing can be frozen (random BN statistics, random early layers), and the
# backbone learns at the full rate (the thesis divides it by 4 for pretrained parameters only).
VARIANTS = (
    Run(
        "ladder_scratch",
        CONFIGS / "ladder_camvid.yaml",
        (
            "model.backbone.pretrained=null",
            "train.freeze_backbone_bn=false",
            "train.freeze_backbone_until=null",
            "train.backbone_lr_mult=1.0",
        ),
        "ladder, backbone from random initialisation, nothing frozen",
    ),
)


def head_runs(configs: Path = CONFIGS) -> list[Run]:
    """Every head config of ``configs`` (``*_camvid.yaml`` but the base), then the variants."""
    runs = []
    for path in sorted(configs.glob("*_camvid.yaml")):
        if path.name == "base_camvid.yaml":
            continue
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        runs.append(Run(path.name.removesuffix("_camvid.yaml"), path, (), first))
    return runs + list(VARIANTS)


# --------------------------------------------------------------------------- the budget


def recipe_sections(recipe: Path = RECIPE) -> dict[str, dict[str, Any]]:
    """The ``data`` and ``train`` sections as the recipe and its ``base:`` write them.

    Only what the two files state, not the defaults of every option, so that a new option with
    a default elsewhere in leanseg does not change the budget's digest.
    """
    top = yaml.safe_load(recipe.read_text()) or {}
    merged: dict[str, dict[str, Any]] = {"data": {}, "train": {}}
    files = [top]
    if "base" in top:
        files.insert(0, yaml.safe_load((recipe.parent / top["base"]).read_text()) or {})
    for content in files:
        for section in merged:
            merged[section].update(content.get(section) or {})
    return merged


def recipe_overrides(recipe: Path = RECIPE) -> list[str]:
    """The recipe's ``data`` / ``train`` values as ``--set`` overrides (values in JSON, which
    ``--set`` parses as YAML), without :data:`NOT_TAKEN`."""
    overrides = []
    for section, values in recipe_sections(recipe).items():
        for key, value in values.items():
            if f"{section}.{key}" not in NOT_TAKEN:
                overrides.append(f"{section}.{key}={json.dumps(value)}")
    return overrides


def budget_key(overrides: list[str]) -> str:
    """A short digest of the overrides every run shares: one folder of runs per budget."""
    return hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Budget:
    """What every run shares: the overrides (recipe's, then ``--set``), their digest, the
    folder of the runs, the seeds and the folder of the finished runs' records."""

    overrides: tuple[str, ...]
    key: str
    runs_dir: Path
    seeds: tuple[int, ...]
    records_dir: Path | None = None

    @classmethod
    def from_recipe(
        cls,
        recipe: Path,
        extra: list[str],
        runs: Path,
        seeds: tuple[int, ...],
        records: Path | None = RECORDS,
    ) -> Budget:
        overrides = [*recipe_overrides(recipe), *extra]
        key = budget_key(overrides)
        return cls(
            tuple(overrides), key, runs / key, seeds, None if records is None else records / key
        )

    def folder(self, run: Run, seed: int) -> Path:
        return self.runs_dir / f"{run.name}_s{seed}"

    def record(self, run: Run, seed: int) -> Path | None:
        """The committed record of a finished run (``None``: records are not kept)."""
        if self.records_dir is None:
            return None
        return self.records_dir / f"{run.name}_s{seed}.json"

    def overrides_of(self, run: Run, seed: int, threads: int) -> list[str]:
        return [
            *self.overrides,
            *run.overrides,
            f"train.seed={seed}",
            f"train.num_threads={threads}",
        ]


def run_config(run: Run, budget: Budget, seed: int = 0, threads: int = 1):
    """The config the run trains with (``leanseg.models.load_run_config``: checked in full)."""
    from leanseg.models import load_run_config

    return load_run_config(run.config, budget.overrides_of(run, seed, threads))


def config_identity(cfg: Any) -> str:
    """A short digest of what a resolved config (a ``leanseg.config.Config``) trains: every
    value that is not leanseg's default (:func:`non_default`, down to the fields of a crop stage
    or a dataset entry), but the :data:`NOT_IDENTITY` keys. Values at their default are left
    out, so an option added to leanseg later does not make earlier runs look different."""
    chosen = {
        key: value
        for key, value in flat_config(non_default(cfg)).items()
        if key not in NOT_IDENTITY
    }
    text = json.dumps(chosen, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def non_default(value: Any) -> Any:
    """``value`` as plain data without what equals its default: of a dataclass only the fields
    whose value differs from the field's default (all of them where there is none), recursively
    through dataclasses, lists and dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kept = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                kept[field.name] = non_default(item)
                continue
            if plain(item) != plain(default):
                kept[field.name] = non_default(item)
        return kept
    if isinstance(value, (list, tuple)):
        return [non_default(item) for item in value]
    if isinstance(value, dict):
        return {key: non_default(item) for key, item in value.items()}
    return value


def plain(value: Any) -> Any:
    """JSON's view of a value (a dataclass as its fields, tuples as lists), for comparing."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"model": {"head": {...}}}`` -> ``{"model.head": {...}}``: one level of sections."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in ("model", "data", "train", "eval"):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


@functools.cache
def row_identity(run: Run, budget: Budget) -> str:
    """:func:`config_identity` of the row's runs as configured now (the same for every seed;
    read once per process)."""
    return config_identity(run_config(run, budget))


def folder_identity(folder: Path) -> str | None:
    """:func:`config_identity` of the config a run folder was started with (its ``config.yaml``,
    read as ``leanseg train`` reads a config, so that options it lacks take their defaults);
    ``None`` if there is none, or it cannot be read as a config any more."""
    from leanseg.config import ConfigError
    from leanseg.models import load_run_config

    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        return config_identity(load_run_config(path))
    except (ConfigError, OSError, ValueError):
        return None


def check_same_data(recipe: Path, run: Run) -> None:
    """Stop if the head config's ``data.root`` is not the recipe's (it is not overridden)."""
    from leanseg.config import load_config

    mine, theirs = load_config(run.config).data.root, load_config(recipe).data.root
    if Path(mine).resolve() != Path(theirs).resolve():
        raise SystemExit(f"{run.config}: data.root {mine} is not the recipe's {theirs}")


# --------------------------------------------------------------------------- run states


def read_record(
    path: Path | None, max_iters: int, identity: str | None = None
) -> dict[str, Any] | None:
    """A finished run's record (:func:`write_record`), ``None`` if there is none for
    ``max_iters`` or (``identity`` given) it was made with another config of the row."""
    if path is None or not path.is_file():
        return None
    record = json.loads(path.read_text())
    if identity is not None and record.get("config_identity") != identity:
        return None
    return record if record.get("scores", {}).get("iteration") == max_iters else None


def run_state(
    folder: Path, max_iters: int, record: Path | None = None, identity: str | None = None
) -> str:
    """``finished`` (a record, or a validation at ``max_iters`` logged), ``resume`` (a
    checkpoint to continue from), ``start``, or (``identity`` given: the row's
    :func:`config_identity` now) ``stale``: the folder, or the record where there is no folder,
    was made with another config of the row, and the run must start anew."""
    from leanseg.files.run_dir import RunDirectory

    if read_record(record, max_iters, identity) is not None:
        return "finished"
    if identity is not None:
        started = folder_identity(folder) if folder.is_dir() else None
        if started is not None and started != identity:
            return "stale"
        if started is None and read_record(record, max_iters) is not None:
            return "stale"  # a record of the row as it was, its folder gone
    record = last_validation(folder) if folder.is_dir() else None
    if record is not None and record.get("iteration") == max_iters:
        return "finished"
    if folder.is_dir() and RunDirectory(folder).resume_checkpoint() is not None:
        return "resume"
    return "start"


def plan(
    runs: list[Run], budget: Budget, threads: int, max_iters: dict[str, int]
) -> list[tuple[Run, int, str, TrainJob | None]]:
    """Every (run, seed) with its state and, unless finished, the ``leanseg train`` job; seed
    by seed (every row's first seed, then every row's second)."""
    rows = []
    for seed in budget.seeds:
        for run in runs:
            folder = budget.folder(run, seed)
            record = budget.record(run, seed)
            identity = None
            if record is not None or (folder / "config.yaml").is_file():
                identity = row_identity(run, budget)
            state = run_state(folder, max_iters[run.name], record, identity)
            job = None
            if state != "finished":
                job = TrainJob(
                    name=folder.name,
                    config=run.config,
                    work_dir=folder,
                    overrides=budget.overrides_of(run, seed, threads),
                    log=folder.parent / f"{folder.name}.log",
                    resume=state == "resume",
                )
            rows.append((run, seed, state, job))
    return rows


def seed_scores(
    folder: Path, max_iters: int, record: Path | None = None, identity: str | None = None
) -> dict[str, Any] | None:
    """The final validation of a finished run (percent), from its record or else its folder;
    ``None`` if it has not finished or (``identity`` given) was made with another config."""
    kept = read_record(record, max_iters, identity)
    if kept is not None:
        return kept["scores"]
    if identity is not None and folder_identity(folder) not in (None, identity):
        return None
    record = last_validation(folder) if folder.is_dir() else None
    if record is None or record.get("iteration") != max_iters:
        return None
    boundary = record.get("boundary_miou")
    return {
        "miou": 100 * record["miou"],
        "boundary_miou": None if boundary is None else 100 * boundary,
        "iteration": record["iteration"],
    }


# --------------------------------------------------------------------------- QGN schemes


def scheme_scores(folder: Path, schemes: tuple[str, ...] = QGN_SCHEMES) -> dict[str, Any]:
    """A trained QGN run's val mIoU and pixel accuracy with each propagation scheme (QGN 3.3).

    Every val image is scored at each of the run's ``eval.scales`` (bilinear resize, padded to
    the model's stride), the labels nearest-resized to that scale for GTC (which reads them to
    pick the sites), the leaves' scores resized back and averaged as probabilities, as
    :func:`leanseg.inference.predictor.predict_scores` does; no flip; the first
    ``eval.max_images`` images when that is set. PC here is the run's own
    validation up to the padding: the trainer pads with zeros too.

    ``levels_all`` is a diagnostic (issue 26's bug hunt): under All propagation, the val mIoU of
    each level's own prediction (its class argmax, composite dropped, nearest-upsampled to the
    image; first evaluation scale). A decoder whose finer levels label pure regions worse than
    its coarse ones shows here.
    """
    import torch
    import torch.nn.functional as F

    from leanseg.data import build_dataset, dataset_classes
    from leanseg.files.run_dir import RunDirectory
    from leanseg.inference.loading import load_trained_model
    from leanseg.metrics.semantic import SegmentationMetric

    trained = load_trained_model(folder, RunDirectory(folder).last_checkpoint)
    cfg, model = trained.cfg, trained.model.eval()
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    classes = len(dataset_classes(cfg.data))
    ignore = cfg.data.ignore_index
    metrics = {
        s: SegmentationMetric(classes, ignore, boundary_width=cfg.eval.boundary_width)
        for s in schemes
    }
    levels = range(model.head.top, -1, -1)
    level_metrics = {level: SegmentationMetric(classes, ignore) for level in levels}
    divisor = model.size_divisor
    count = len(dataset)
    if cfg.eval.max_images is not None:
        count = min(count, cfg.eval.max_images)
    with torch.no_grad():
        for index in range(count):
            sample = dataset[index]
            image = torch.as_tensor(sample["image"]).float()[None]  # (1, 3, H, W)
            label = torch.as_tensor(sample["label"]).long()[None]  # (1, H, W)
            height, width = label.shape[-2:]
            total = {s: torch.zeros(1, classes, height, width) for s in schemes}
            for scale in cfg.eval.scales:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
                scaled_label = F.interpolate(label[None].float(), size=size, mode="nearest")
                scaled_label = scaled_label[0].long()
                padding = (0, -size[1] % divisor, 0, -size[0] % divisor)
                padded = F.pad(scaled, padding)
                padded_label = F.pad(scaled_label, padding, value=ignore)
                features = model.features(padded)
                for scheme in schemes:
                    pred = model.head.predict_quadtree(
                        features, tuple(padded.shape[-2:]), scheme=scheme, label=padded_label
                    )
                    scores = pred.scores[..., : size[0], : size[1]]
                    scores = F.interpolate(
                        scores, size=(height, width), mode="bilinear", align_corners=False
                    )
                    total[scheme] += scores.softmax(dim=1)
                    if scheme == "all" and scale == cfg.eval.scales[0]:
                        for level, sites in pred.logits.items():
                            labels = level_labels(
                                sites.to_dense(),
                                classes,
                                tuple(padded.shape[-2:]),
                                size,
                                (height, width),
                            )
                            level_metrics[level].update(labels, label)
            for scheme in schemes:
                metrics[scheme].update(total[scheme].argmax(1), label)
    result: dict[str, Any] = {"iteration": trained.iteration, "images": count}
    if "all" in schemes:
        result["levels_all"] = {
            f"Q{level}": 100 * metric.compute().miou for level, metric in level_metrics.items()
        }
    for scheme, metric in metrics.items():
        scores = metric.compute()
        result[scheme] = {
            "miou": 100 * scores.miou,
            "pixel_accuracy": 100 * scores.pixel_accuracy,
            "boundary_miou": None if scores.boundary_miou is None else 100 * scores.boundary_miou,
        }
    return result


def level_labels(
    logits: Any,
    classes: int,
    padded_size: tuple[int, int],
    size: tuple[int, int],
    image_size: tuple[int, int],
) -> Any:
    """One quadtree level's class map: ``(1, k+1, h, w)`` logits -> ``(1, H, W)`` labels.

    The composite channel (the last) is dropped before the argmax; the map is nearest-upsampled
    to the padded input, cropped to the scaled image ``size`` and nearest-resized to the image.
    """
    import torch.nn.functional as F

    labels = logits[:, :classes].argmax(dim=1, keepdim=True).float()
    labels = F.interpolate(labels, size=padded_size, mode="nearest")[..., : size[0], : size[1]]
    return F.interpolate(labels, size=image_size, mode="nearest")[:, 0].long()


def read_scheme_scores(
    record: Path | None, max_iters: int, identity: str | None = None
) -> dict[str, Any] | None:
    """A QGN run's scheme evaluation, from its record (of the row's config ``identity``)."""
    kept = read_record(record, max_iters, identity)
    return None if kept is None else kept.get("schemes")


def write_record(
    run: Run, seed: int, budget: Budget, max_iters: int, seconds: float | None
) -> None:
    """Keep what the report needs of a finished run in its committed record: the final
    validation, the wall time of this training process, for QGN the scheme evaluation, and how
    it was made (command, commit, machine). Nothing is written for a run that has not finished."""
    path = budget.record(run, seed)
    folder = budget.folder(run, seed)
    scores = seed_scores(folder, max_iters)
    if path is None or scores is None:
        return
    record: dict[str, Any] = {
        "what": f"{run.name} seed {seed}: final CamVid val of a heads_camvid.py run (percent)",
        "row": run.name,
        "seed": seed,
        "budget": budget.key,
        "scores": scores,
        "config_identity": folder_identity(folder) or row_identity(run, budget),
        "train_seconds": seconds,
        "train_command": shlex.join(
            ["leanseg", "train", str(run.config.relative_to(REPO))]
            + [part for item in budget.overrides_of(run, seed, 1) for part in ("--set", item)]
        ),
    }
    if is_qgn(run, budget):
        print(f"QGN schemes of {folder.name}", flush=True)
        record["schemes"] = scheme_scores(folder)
    write_result(path, record)


def is_qgn(run: Run, budget: Budget) -> bool:
    return run_config(run, budget).model.head.get("name") == "qgn"


# --------------------------------------------------------------------------- costs


def camvid_val(cfg: Any, wanted: str) -> Any:
    """The val dataset of a run's config ``cfg``, or ``None`` (said, naming ``wanted``) when it
    cannot be read: the cost measurements then fall back to random inputs."""
    from leanseg.data import build_dataset

    try:
        return build_dataset(cfg.data, cfg.data.val_split, train=False)
    except Exception as err:  # noqa: BLE001 - any failure: fall back to random inputs
        print(f"no CamVid {wanted} ({err}); random ones", flush=True)
        return None


def camvid_labels(run: Run, budget: Budget, size: int = 768) -> Any:
    """Two CamVid val labels padded (ignore) and cropped to ``size x size``, or ``None``."""
    import torch
    import torch.nn.functional as F

    cfg = run_config(run, budget)
    dataset = camvid_val(cfg, "labels for the memory measurement")
    if dataset is None:
        return None
    labels = []
    for index in range(2):
        label = torch.as_tensor(dataset[index]["label"]).long()[:size, :size]
        pad = (0, size - label.shape[1], 0, size - label.shape[0])
        labels.append(F.pad(label, pad, value=cfg.data.ignore_index))
    return torch.stack(labels)


def camvid_image(run: Run, budget: Budget, size: tuple[int, int] = (1024, 2048)) -> Any:
    """The first CamVid val image, normalised as the model sees it, scaled (aspect kept) to
    cover ``size`` and centre-cropped to it: ``(1, 3, H, W)``, or ``None`` without the data.

    A data-dependent decoder (QGN's PC propagation) spends little on noise, so its cost is
    counted on a real scene; the dense heads cost the same on any input.
    """
    import torch.nn.functional as F

    dataset = camvid_val(run_config(run, budget), "image for the cost measurement")
    if dataset is None:
        return None
    image = dataset[0]["image"][None].float()
    scale = max(size[0] / image.shape[-2], size[1] / image.shape[-1])
    height, width = round(image.shape[-2] * scale), round(image.shape[-1] * scale)
    image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return image[..., top : top + size[0], left : left + size[1]].contiguous()


def measure_costs(
    runs: list[Run], budget: Budget, repeats: int, weights_seeds: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """GMAC and round-robin latency at 1024x2048 (:func:`camvid_image`), activation memory at
    768x768 batch 2.

    Each model carries the final weights of the first of ``weights_seeds`` whose run finished
    and is still on disk (random ones where none is): QGN's sparse decoder works only at the
    quadtree sites its trained split decisions keep active, so its cost means little with
    random weights. The memory is measured with the
    run's frozen backbone parts (``train.freeze_backbone_*``), as it trains.
    """
    import torch

    from leanseg.files.checkpoint import load_checkpoint, load_model_state
    from leanseg.models import build_model
    from leanseg.profiling.flops import count_flops
    from leanseg.profiling.memory import activation_memory
    from leanseg.training.freezing import freeze_backbone

    models, weights, configs, identities = {}, {}, {}, {}
    for run in runs:
        cfg = run_config(run, budget)
        configs[run.name] = cfg
        model = build_model(cfg)
        identity = identities[run.name] = config_identity(cfg)
        checkpoint = None
        for seed in weights_seeds:
            folder = budget.folder(run, seed)
            state = run_state(folder, cfg.train.max_iters, None, identity)
            if state == "finished" and folder.is_dir():
                checkpoint = folder / "checkpoints" / "last.pt"
                load_model_state(model, load_checkpoint(checkpoint)["model"], checkpoint)
                break
        weights[run.name] = "random initialisation" if checkpoint is None else str(checkpoint)
        models[run.name] = model.eval().to(memory_format=torch.channels_last)
    images = camvid_image(runs[0], budget) if runs else None
    if images is None:
        images = torch.randn(1, 3, 1024, 2048)
    images = images.contiguous(memory_format=torch.channels_last)
    costs: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for name, model in models.items():
            flops = count_flops(model, images)
            groups = flops.by_top_level()
            costs[name] = {
                "config_identity": identities[name],
                "cost_weights": weights[name],
                "gmac_1024x2048": flops.total / 1e9,
                # Everything after the backbone (context and head), and the head alone.
                "decoder_gmac_1024x2048": (flops.total - groups.get("backbone", 0)) / 1e9,
                "head_gmac_1024x2048": groups.get("head", 0) / 1e9,
            }
            model(images)  # warm-up
        calls = {name: (lambda model=model: model(images)) for name, model in models.items()}
        times = round_robin(calls, warmup=0, repeats=repeats)
    small = torch.randn(2, 3, 768, 768)
    labels = camvid_labels(runs[0], budget) if runs else None
    if labels is None:
        labels = torch.randint(0, 11, (2, 768, 768))
    for name, model in models.items():
        costs[name]["latency_ms_1024x2048"] = statistics.median(times[name])
        costs[name]["latency_ms_all"] = times[name]
        trainable = copy.deepcopy(model).to(memory_format=torch.contiguous_format).train()
        train_cfg = configs[name].train
        freeze_backbone(
            trainable.backbone,
            batchnorm=train_cfg.freeze_backbone_bn,
            until_stride=train_cfg.freeze_backbone_until,
        )
        memory = activation_memory(trainable, small, lambda m, x: m.losses(x, {"label": labels}))
        costs[name]["train_activation_mb_768x768_b2"] = memory / 2**20
    return costs


# --------------------------------------------------------------------------- the report


def summarise_row(run: Run, budget: Budget, max_iters: int) -> dict[str, Any]:
    """One row of the JSON: per-seed scores of the finished runs, mean and std over seeds."""
    seeds = []
    identity = row_identity(run, budget)
    for seed in budget.seeds:
        folder, record = budget.folder(run, seed), budget.record(run, seed)
        scores = seed_scores(folder, max_iters, record, identity)
        if scores is not None:
            seeds.append({"seed": seed, **scores})
    row: dict[str, Any] = {
        "about": run.about,
        "config": str(run.config.relative_to(REPO)),
        "overrides": list(run.overrides),
        "seeds": seeds,
        "status": "done" if len(seeds) >= REQUIRED_SEEDS else pending(len(seeds)),
    }
    for metric in ("miou", "boundary_miou"):
        values = {s["seed"]: s[metric] for s in seeds if s[metric] is not None}
        stats = seed_statistics(values)
        row[f"{metric}_mean"], row[f"{metric}_std"] = stats["mean"], stats["std"]
    return row


def pending(done: int) -> str:
    return f"pending ({done} of {REQUIRED_SEEDS} seeds)"


def summarise_schemes(runs: list[Run], budget: Budget, max_iters: dict[str, int]) -> dict[str, Any]:
    """QGN runs' scheme evaluations: per seed and mean / std over seeds, per eval scheme."""
    grid: dict[str, Any] = {}
    for run in runs:
        if not is_qgn(run, budget):
            continue
        per_seed = {}
        identity = row_identity(run, budget)
        for seed in budget.seeds:
            record = read_scheme_scores(budget.record(run, seed), max_iters[run.name], identity)
            if record is not None:
                per_seed[seed] = record
        entry: dict[str, Any] = {
            "train_scheme": run_config(run, budget).model.head.get("train_scheme"),
            "seeds": sorted(per_seed),
        }
        for scheme in QGN_SCHEMES:
            values = {seed: record[scheme]["miou"] for seed, record in per_seed.items()}
            entry[scheme] = {"miou": values, **seed_statistics(values)}
        grid[run.name] = entry
    return grid


def metric_values(record: dict[str, Any]):
    """``values(term)`` for :func:`heads_claims.judge` over the record being built."""

    def values(term: Term):
        if term.metric in COST_METRICS:
            return record["costs"].get(term.row, {}).get(f"{term.metric}_1024x2048")
        if term.metric.startswith("scheme:"):
            entry = record["qgn_schemes"].get(term.row, {})
            return entry.get(term.metric.split(":")[1], {}).get("miou", {})
        row = record["heads"].get(term.row, {"seeds": []})
        return {s["seed"]: s[term.metric] for s in row["seeds"] if s[term.metric] is not None}

    return values


def mixed_batches_row(path: Path = REPO / "benchmarks/results/multi_domain.json") -> dict:
    """The mixed-vs-single-batches claim, from ``multi_domain.json`` (one seed measured)."""
    row = {
        "claim": MIXED_BATCHES.claim,
        "source": MIXED_BATCHES.source,
        "paper_delta": None,
        "ours": "benchmarks/papers/multi_domain.py: CamVid val mIoU, mixed - "
        "single-dataset batches",
        "kind": MIXED_BATCHES.kind,
        "note": MIXED_BATCHES.note,
        "delta": None,
        "spread": None,
        "n": 0,
        "verdict": pending(0),
    }
    if path.is_file():
        measured = json.loads(path.read_text()).get("d_mixed_vs_single_batches")
        if measured:
            delta = 100 * (measured["mixed"]["camvid"] - measured["single"]["camvid"])
            row.update(delta=delta, n=1, verdict=pending(1))
            row["note"] += f"; one seed in {path.relative_to(REPO)} (d_mixed_vs_single_batches)"
    return row


def build_record(
    runs: list[Run],
    budget: Budget,
    recipe: Path,
    max_iters: dict[str, int],
    costs: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "what": "every head on pretrained EfficientNet-Lite0, CamVid val (101 images), at the "
        "fast recipe's full budget; mIoU and boundary mIoU in percent, mean and sample std over "
        "seeds (issue 26)",
        "budget": {
            "recipe": str(recipe.relative_to(REPO)),
            "key": budget.key,
            "overrides": list(budget.overrides),
            "max_iters": sorted(set(max_iters.values())),
            "seeds": list(budget.seeds),
            "required_seeds": REQUIRED_SEEDS,
            "runs_dir": shown_path(budget.runs_dir),
            "records_dir": None if budget.records_dir is None else shown_path(budget.records_dir),
        },
        "spread": "a row: sample std over seeds; a difference of two rows: sqrt(std_a^2 + "
        "std_b^2); of two evaluations of the same runs (QGN schemes): std of the per-seed "
        "differences. |delta| < spread is a tie (benchmarks/training/heads_claims.py)",
        "heads": {run.name: summarise_row(run, budget, max_iters[run.name]) for run in runs},
        "qgn_schemes": summarise_schemes(runs, budget, max_iters),
        "costs": costs,
    }
    for run in runs:
        record["heads"][run.name]["command"] = reproduce_command(run)
    values = metric_values(record)
    record["verdicts"] = [judge(claim, values) for claim in CLAIMS] + [mixed_batches_row()]
    record["command"] = command
    record["machine"] = machine()
    return record


def shown_path(path: Path) -> str:
    """``path`` relative to the repository where it is inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def reproduce_command(run: Run) -> str:
    """The command that trains (or resumes) this row's seeds and reports them."""
    return f"python benchmarks/training/heads_camvid.py --runs {run.name} --jobs 2"


def current_costs(
    costs: dict[str, dict[str, Any]], runs: list[Run], budget: Budget
) -> dict[str, dict[str, Any]]:
    """The cost measurements of the report so far, without those made for another config of
    their row (or of a row that is gone): ``--cost-only --runs ROW`` measures them again."""
    rows = {run.name: run for run in runs}
    kept = {}
    for name, entry in costs.items():
        run = rows.get(name)
        if run is not None and entry.get("config_identity") == row_identity(run, budget):
            kept[name] = entry
        else:
            print(f"costs of {name} were measured for another config: dropped", flush=True)
    return kept


def set_aside(folder: Path) -> None:
    """Rename a stale run folder (and its log) to ``*.stale-<identity>`` (``-2``, ``-3`` ... if
    that name is taken): kept, out of the way of the run that starts anew. A folder that a
    training process holds (its lock, :mod:`leanseg.files.folder_lock`) is left alone."""
    from leanseg.files.folder_lock import FolderInUseError, FolderLock

    if folder.is_dir():
        try:
            FolderLock(folder, "heads_camvid.py: set a stale run aside").acquire().release()
        except FolderInUseError as err:
            raise SystemExit(
                f"{folder} is stale but in use, so it is not set aside: {err}"
            ) from None
    identity = (folder_identity(folder) if folder.is_dir() else None) or "unknown"
    for path in (folder, folder.parent / f"{folder.name}.log"):
        if not path.exists():
            continue
        target = path.with_name(f"{path.name}.stale-{identity}")
        number = 1
        while target.exists():
            number += 1
            target = path.with_name(f"{path.name}.stale-{identity}-{number}")
        path.rename(target)
        print(f"  set aside: {path} -> {target.name}", flush=True)


def keep_records(todo: list, budget: Budget, max_iters: dict[str, int]) -> None:
    """Give every finished run of ``todo`` a record of the row's config: a run whose record is
    missing or stale gets one from its folder, and a record made before records kept their
    config's digest gets it, once its folder shows the row's config."""
    for run, seed, state, _ in todo:
        if state != "finished":
            continue
        path, identity = budget.record(run, seed), row_identity(run, budget)
        if path is None or read_record(path, max_iters[run.name], identity) is not None:
            continue
        kept = read_record(path, max_iters[run.name])
        folder = budget.folder(run, seed)
        if kept is not None and "config_identity" not in kept:
            if folder_identity(folder) == identity:
                write_json(path, {**kept, "config_identity": identity})
            continue
        write_record(run, seed, budget, max_iters[run.name], None)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", help="rows to run (default: all); see --plan")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=5, help="latency rounds (round-robin)")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--runs-dir", type=Path, default=RUNS)
    parser.add_argument(
        "--records-dir", type=Path, default=RECORDS, help="where finished runs' records are kept"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra override after the recipe's "
        "(changes the budget digest, so such runs never mix with the full-budget ones)",
    )
    parser.add_argument("--plan", action="store_true", help="print each run's state and stop")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--table", type=Path, default=DOCS_TABLE)
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)

    all_runs = head_runs()
    names = [run.name for run in all_runs]
    unknown = sorted(set(args.runs or []) - set(names))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; the rows are {names}")
    selected = [run for run in all_runs if not args.runs or run.name in args.runs]
    budget = Budget.from_recipe(
        args.recipe, args.set, args.runs_dir, tuple(args.seeds), args.records_dir
    )
    for run in all_runs:
        check_same_data(args.recipe, run)
    # Training reads only the selected rows' configs: an extra --set that another row's head
    # does not take (model.head.class_weights on QGN) concerns that row only when reported.
    configured = selected if args.train_only or args.plan else all_runs
    max_iters = {run.name: run_config(run, budget).train.max_iters for run in configured}
    todo = plan(selected, budget, args.threads, max_iters)
    print(f"budget {budget.key} ({args.recipe.name}): {budget.runs_dir}", flush=True)
    for run, seed, state, _ in todo:
        print(f"  {run.name} seed {seed}: {state}", flush=True)
    by_job = {job.name: (run, seed) for run, seed, _, job in todo if job is not None}

    def keep(outcome) -> None:
        run, seed = by_job[outcome.job.name]
        write_record(run, seed, budget, max_iters[run.name], outcome.seconds)

    if args.plan:
        return

    if not (args.cost_only or args.report_only):
        budget.runs_dir.mkdir(parents=True, exist_ok=True)
        write_json(budget.runs_dir / "budget.json", {"overrides": list(budget.overrides)})
        for run, seed, state, _ in todo:
            if state == "stale":
                set_aside(budget.folder(run, seed))
        jobs = [job for _, _, _, job in todo if job is not None]
        train(jobs, parallel=args.jobs, threads=args.threads, check=False, on_done=keep)
        keep_records(todo, budget, max_iters)
        if args.train_only:
            return

    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    costs = current_costs(previous.get("costs", {}), all_runs, budget)
    if not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
        costs.update(measure_costs(selected, budget, args.repeats, budget.seeds))
    record = build_record(all_runs, budget, args.recipe, max_iters, costs, command_line())
    write_result(args.json, record)

    import tables

    tables.write_docs_table(record, args.table)
    tables.update_readme(record, args.readme)
    for name, row in record["heads"].items():
        print(f"{name}: {row['status']}, mIoU {row['miou_mean']}", flush=True)


if __name__ == "__main__":
    main()
