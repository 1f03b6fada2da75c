"""``leanseg data check``: read every sample of a dataset and report all problems at once.

Training stops at the first bad file; a check instead walks every sample of the requested
splits (without transforms), collects each problem with the file it concerns, and counts
samples and label pixels per class, so a user fixes a dataset in one pass.

With ``data.datasets`` (several datasets, thesis ch. 5) every dataset is checked in its own label
set, and the union label space is built once, so a bad ``data.union`` is reported too.

It also warns, without failing, about what makes evaluation reports misleading: a class that
never occurs in a split (its IoU there is 0/0, reported as NaN) and label images that are all
ignore (they add nothing to training or evaluation; often a wrong label table or colour map).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leanseg.config import ConfigError, DataConfig
from leanseg.data import (
    build_dataset,
    dataset_classes,
    entry_config,
    entry_split,
    union_label_space,
)
from leanseg.data.base import IGNORE_INDEX, DatasetError, Sample, check_label_values


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        dataset: ``data.dataset`` of the checked config.
        root: ``data.root`` of the checked config.
        classes: Class names, empty when they could not be determined.
        split_sizes: Number of samples listed per split that could be opened.
        problems: One line per problem, each naming the file (or split) it concerns.
        class_pixels: Label pixels per class over all readable samples.
        ignored_pixels: Label pixels with the ignore value 255.
        warnings: One line per finding that does not stop training but skews its reports:
            classes that never occur in a split, label images that are all ignore.
        parts: With ``data.datasets``, the report of each dataset, in order.
    """

    dataset: str
    root: str | None
    classes: tuple[str, ...] = ()
    split_sizes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    warnings: list[str] = field(default_factory=list)
    parts: list[CheckReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found (in any of ``parts`` either)."""
        return not self.problems and all(part.ok for part in self.parts)

    @property
    def num_samples(self) -> int:
        """Samples in all checked splits."""
        return sum(self.split_sizes.values())

    def format(self) -> str:
        """A plain-text summary: sizes, class pixel shares and every problem."""
        if self.parts or self.dataset == _MIXED:
            lines = [
                f"{len(self.parts)} datasets; union label space of {len(self.classes)} "
                f"classes: {', '.join(self.classes)}"
            ]
            lines += [f"{len(self.problems)} problem(s):"] if self.problems else []
            lines += [f"  - {problem}" for problem in self.problems]
            return "\n\n".join(["\n".join(lines), *(part.format() for part in self.parts)])
        sizes = ", ".join(f"{split} {n}" for split, n in self.split_sizes.items())
        lines = [f"dataset {self.dataset} ({self.root}): {self.num_samples} samples ({sizes})"]
        labelled = sum(self.class_pixels)
        if labelled:
            lines.append("label pixels per class (share of labelled pixels):")
            width = max(len(name) for name in self.classes)
            counts = zip(self.classes, self.class_pixels, strict=True)
            for index, (name, count) in enumerate(counts):
                share = 100.0 * count / labelled
                lines.append(f"  {index:3d} {name:<{width}} {share:6.2f} %  {count}")
            total = labelled + self.ignored_pixels
            lines.append(
                f"  ignored ({IGNORE_INDEX}): {100.0 * self.ignored_pixels / total:.2f} % "
                "of all pixels"
            )
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  - {warning}" for warning in self.warnings)
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {problem}" for problem in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(
    data_cfg: DataConfig,
    splits: list[str],
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Read every sample of ``splits`` and collect problems instead of stopping at the first.

    Reports, each naming the file: unreadable or truncated files, label (and instance or
    disparity) maps whose size differs from the image, label values that are neither a class id
    nor 255, and samples that break the sample contract. A missing root, split or label file,
    and config errors (unknown dataset or option), are reported per split.

    Args:
        data_cfg: The ``data`` section of a run config.
        splits: Split names to check, e.g. ``[cfg.train_split, cfg.val_split]``.
        progress: Called as ``progress(done, total)`` after each sample.

    Returns:
        The :class:`CheckReport`.
    """
    if data_cfg.datasets is not None:
        return _check_mixed(data_cfg, splits, progress)
    report = CheckReport(dataset=data_cfg.dataset, root=data_cfg.root)
    try:
        report.classes = dataset_classes(data_cfg)
    except ConfigError as err:
        report.problems.append(str(err))
        return report
    # Any: the synthetic scenes are not a SegmentationDataset, but also have ``load_raw``.
    datasets: dict[str, Any] = {}
    for split in splits:
        try:
            datasets[split] = build_dataset(data_cfg, split, train=False)
        except (ConfigError, DatasetError) as err:
            report.problems.append(f"split {split!r}: {err}")
            continue
        report.split_sizes[split] = len(datasets[split])

    pixels = np.zeros(256, dtype=np.int64)
    total = report.num_samples
    done = 0
    for split, dataset in datasets.items():
        split_pixels = np.zeros(256, dtype=np.int64)
        all_ignore: list[str] = []
        for index in range(len(dataset)):
            where = _describe(dataset, split, index)
            try:
                sample = dataset.load_raw(index)
                label = _validate(sample, len(report.classes), where)
            except DatasetError as err:
                report.problems.append(str(err))
            except (OSError, ValueError, KeyError, TypeError) as err:
                report.problems.append(f"{where}: {type(err).__name__}: {err}")
            else:
                counts = np.bincount(label.ravel(), minlength=256)
                split_pixels += counts
                if counts[IGNORE_INDEX] == label.size:
                    all_ignore.append(where)
            done += 1
            if progress is not None:
                progress(done, total)
        pixels += split_pixels
        if split_pixels.sum() and split_pixels.sum() == split_pixels[IGNORE_INDEX]:
            # A warning per file is not enough: training on it gives a loss of 0, scoring NaN.
            report.problems.append(
                f"split {split!r}: every label pixel of its {len(dataset)} sample(s) is ignore "
                f"({IGNORE_INDEX}); there is nothing to train on or score"
            )
            continue
        report.warnings += split_warnings(split, report.classes, split_pixels, all_ignore)
    report.class_pixels = pixels[: len(report.classes)].tolist()
    report.ignored_pixels = int(pixels[IGNORE_INDEX])
    return report


_MIXED = "<datasets>"


def _check_mixed(
    data_cfg: DataConfig, splits: list[str], progress: Callable[[int, int], None] | None
) -> CheckReport:
    """Every entry of ``data.datasets`` checked in its own label set, and the union built."""
    report = CheckReport(dataset=_MIXED, root=None)
    try:
        report.classes = union_label_space(data_cfg).classes
    except ConfigError as err:
        report.problems.append(str(err))
    for entry in data_cfg.datasets or []:
        single = entry_config(data_cfg, entry)
        own_splits = list(dict.fromkeys(entry_split(data_cfg, entry, s) for s in splits))
        part = check_dataset(single, own_splits, progress)
        part.dataset = f"{entry.key} ({entry.dataset})"
        report.parts.append(part)
    return report


def split_warnings(
    split: str, classes: tuple[str, ...], pixels: np.ndarray, all_ignore: list[str]
) -> list[str]:
    """Warnings about one split: classes without a labelled pixel, labels that are all ignore.

    Args:
        split: the split's name.
        classes: class names, index = class id.
        pixels: ``(256,)`` label pixels per value over the split's readable samples.
        all_ignore: the samples (files) whose labels hold only the ignore value.

    Returns:
        One line per kind of finding, empty when there is none.
    """
    warnings = []
    missing = [f"{i} {name}" for i, name in enumerate(classes) if pixels[i] == 0]
    if missing and pixels.sum():  # a split that could not be read is a problem already
        warnings.append(
            f"split {split!r}: {len(missing)} class(es) never occur, so their IoU is undefined "
            f"(NaN) on this split: {', '.join(missing)}"
        )
    if all_ignore:
        shown = ", ".join(all_ignore[:5])
        more = f" and {len(all_ignore) - 5} more" if len(all_ignore) > 5 else ""
        warnings.append(
            f"split {split!r}: {len(all_ignore)} label image(s) are all ignore "
            f"({IGNORE_INDEX}): {shown}{more}"
        )
    return warnings


def _describe(dataset: Any, split: str, index: int) -> str:
    files = getattr(dataset, "files", None)
    if files is not None:
        return str(files[index].image)
    return f"{split}[{index}]"


def _validate(sample: Sample, num_classes: int, where: str) -> np.ndarray:
    """Check the numpy sample contract (:mod:`leanseg.data.base`); return the label map."""
    image, label = sample.get("image"), sample.get("label")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise DatasetError(f"{where}: image is not a uint8 (H, W, 3) array")
    if image.shape[2] != 3:
        raise DatasetError(f"{where}: image has {image.shape[2]} channels, expected 3")
    if not isinstance(label, np.ndarray) or label.dtype != np.uint8:
        raise DatasetError(f"{where}: label is not a uint8 array")
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"{where}: label shape {label.shape} differs from image shape {image.shape[:2]}"
        )
    check_label_values(label, num_classes, where)
    return label
