"""``leanseg data`` (check, weights, convert) and ``leanseg quadtree stats``: dataset tools.

:func:`add_parser` adds both groups to the ``leanseg`` command.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from leanseg.commands import common
from leanseg.config import ConfigError

if TYPE_CHECKING:
    from leanseg.data.check import CheckReport


def add_parser(commands: Any) -> None:
    """Add ``data`` and ``quadtree`` to ``commands`` (what ``add_subparsers`` returned)."""
    data = commands.add_parser("data", help="dataset tools")
    data.set_defaults(command_parser=data)
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    check = data_commands.add_parser("check", help="report unreadable files and bad labels")
    check.add_argument("config", help="YAML config file")
    common.add_overrides(check)
    check.add_argument("--split", nargs="+", help="splits to walk (default: train and val)")
    check.set_defaults(handler=_cmd_data_check)
    weights = data_commands.add_parser(
        "weights",
        help="class weights that make rare classes count more in the loss, for "
        "model.head.class_weights",
    )
    weights.add_argument("config", help="YAML config file")
    common.add_overrides(weights)
    weights.add_argument("--split", help="split to count (default: the training split)")
    weights.add_argument(
        "--power",
        type=float,
        default=1.0,
        help="how strongly to favour rare classes: each weight is (median class frequency / this "
        "class's frequency) to this power; 1 = full median-frequency balancing, 0.5 = "
        "milder (the CamVid recipe's), 0 = all weights 1 (default 1)",
    )
    weights.set_defaults(handler=_cmd_data_weights)
    convert = data_commands.add_parser(
        "convert", help="write colour-mask labels (data.label_colors) once as index PNGs"
    )
    convert.add_argument("config", help="YAML config with data.classes and data.label_colors")
    common.add_overrides(convert)
    convert.add_argument("src", help="folder of RGB label images (searched recursively)")
    convert.add_argument("out", help="folder for the index PNGs, outside src")
    convert.set_defaults(handler=_cmd_data_convert)

    quadtree = commands.add_parser(
        "quadtree", help="label statistics for quadtree models (configs/qgn)"
    )
    quadtree.set_defaults(command_parser=quadtree)
    quadtree_commands = quadtree.add_subparsers(title="quadtree commands", metavar="COMMAND")
    qstats = quadtree_commands.add_parser(
        "stats",
        help="how compressible the labels are as a quadtree (squares merged where all their "
        "pixels share a class): pixels per square size and the compression ratio (QGN "
        "paper, Table 5)",
    )
    qstats.add_argument("config", help="YAML config file")
    common.add_overrides(qstats)
    qstats.add_argument("--split", nargs="+", help="splits (default: train and val)")
    qstats.add_argument(
        "--max-images", type=common.POSITIVE_INT, help="at most this many images per split"
    )
    common.add_json_arguments(qstats, "quadtree stats", "the rows")
    qstats.set_defaults(handler=_cmd_quadtree_stats)


# ---------------------------------------------------------------------- data check


def _read_splits(data: Any, splits: list[str], label: str) -> CheckReport:
    """``check_dataset`` over ``splits`` behind a progress bar (data check and data weights)."""
    from rich.progress import Progress

    from leanseg.data.check import check_dataset

    with Progress(console=common.console(), transient=True) as progress:
        task = progress.add_task(label, total=None)
        return check_dataset(
            data,
            splits,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _cmd_data_check(args: argparse.Namespace) -> int:
    cfg = common.load_run_config(args.config, args.overrides)
    splits = args.split or [cfg.data.train_split, cfg.data.val_split]
    report = _read_splits(cfg.data, splits, "check")
    print(report.format())
    return 0 if report.ok else common.EXIT_BAD_INPUT


def _cmd_data_weights(args: argparse.Namespace) -> int:
    from rich.table import Table

    from leanseg.data.class_weights import median_frequency_weights

    if args.power < 0:
        raise ConfigError(f"--power must be >= 0, got {args.power}")
    cfg = common.load_run_config(args.config, args.overrides)
    split = args.split or cfg.data.train_split
    report = _read_splits(cfg.data, [split], f"count {split}")
    if not report.ok:
        print(report.format())
        return common.EXIT_BAD_INPUT
    pixels = report.class_pixels
    try:
        weights = median_frequency_weights(pixels, power=args.power)
    except ValueError as err:
        raise ConfigError(f"{args.config} (split {split!r}): {err}") from err
    total = max(1, sum(pixels))
    table = Table(title=f"median-frequency weights, {split} split, power {args.power:g}")
    for column in ("class", "pixels %", "weight"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, count, weight in zip(report.classes, pixels, weights, strict=True):
        table.add_row(name, f"{100 * count / total:.2f}", f"{weight:g}")
    common.console().print(table)
    values = ", ".join(f"{w:g}" for w in weights)
    print(f"model.head.class_weights: [{values}]")
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from leanseg.data.colour_labels import colour_table, convert_colour_labels

    cfg = common.load_run_config(args.config, args.overrides)
    result = convert_colour_labels(
        args.src, args.out, colour_table(cfg.data), unknown=cfg.data.unknown_colors
    )
    print(f"wrote {len(result.written)} index PNGs to {args.out}")
    if result.ignored_pixels:
        print(f"{result.ignored_pixels} pixels of unknown colours set to ignore (255)")
    return 0


# ---------------------------------------------------------------------- quadtree


def _cmd_quadtree_stats(args: argparse.Namespace) -> int:
    from leanseg.data.quadtree_stats import format_table, split_stats

    common.check_json_target(args.json, "quadtree stats", force=args.force)
    cfg = common.load_run_config(args.config, args.overrides)
    splits = args.split or [cfg.data.train_split, cfg.data.val_split]
    rows = [split_stats(cfg.data, split, max_images=args.max_images) for split in splits]
    print(format_table(rows))
    if args.json:
        record = {"config": str(args.config), "rows": [r.to_dict() for r in rows]}
        common.write_json_result(record, args.json, "quadtree stats", force=args.force)
    return 0
