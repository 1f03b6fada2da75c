"""The union label space of several datasets trained as one model (thesis ch. 5).

A multi-domain model predicts the classes of all its datasets at once: 19 Cityscapes classes and
20 ScanNet classes make the 39 of the ROB 2018 model (thesis 5.3.1). :func:`build_union` turns
``data.union`` and the datasets' class lists into a :class:`UnionLabelSpace`, which holds, per
dataset, two 256-entry lookup tables:

- ``to_union``: the dataset's label value -> union class, applied to its label maps on load
  (one vectorised ``lut[label]``, exact, 255 kept as ignore);
- ``to_dataset``: union class -> the dataset's class, or 255 for a class *foreign* to the
  dataset; applied to predictions to score them in the dataset's own label set, where a foreign
  prediction is "Void", as the ROB benchmark scripts count it (thesis 5.3.1).

Rules, where the thesis is silent (it maps Cityscapes' and ScanNet's disjoint classes):

- A dataset class becomes the union class of the same name, names compared without case
  (CamVid's ``Sky`` is Cityscapes' ``sky``), unless ``data.union.map`` gives it a target.
- A target list (CamVid ``Bicyclist`` -> ``[rider, bicycle]``) says the class covers several union
  classes. A pixel label cannot say which, so such pixels are ignored in training; in evaluation
  a prediction of any of the listed classes counts as the dataset class.
- With ``data.union.partial_labels`` such pixels are trained instead with the partial-label loss
  (:func:`leanseg.nn.losses.partial_cross_entropy`): each distinct target list becomes a
  *label set*, written in training label maps as the value ``K + j`` (``K`` union classes,
  ``j`` the set's index in :attr:`UnionLabelSpace.label_sets`), so ``K`` plus the number of sets
  must stay below 255. Evaluation label maps keep them ignored (``to_union``); only training
  reads ``to_union_partial``.
- The union must be at least as fine as every dataset: a union class stands for at most one
  class of each dataset, so that ``to_dataset`` is a function. Two dataset classes mapped to one
  union class are an error (add a union class or map one of them to ``ignore``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from leanseg.config import UNION_IGNORE, ConfigError, UnionConfig
from leanseg.data.base import IGNORE_INDEX


@dataclass(frozen=True)
class DatasetLabels:
    """One dataset's place in the union label space.

    Attributes:
        name: the dataset entry's name (``data.datasets[i].name``).
        classes: the dataset's own class names, index = its label value.
        to_union: ``uint8 (256,)``, the dataset's label value -> union class; 255 for ignore, for
            classes mapped to ``ignore`` or to several union classes, and for values that are
            no class (the datasets have rejected those on load already).
        to_dataset: ``uint8 (256,)``, union class -> the dataset's class; 255 (Void) for union
            classes foreign to the dataset.
        to_union_partial: ``uint8 (256,)``, ``to_union`` with the label-set value ``K + j`` for
            classes mapped to several union classes when ``data.union.partial_labels`` is set
            (training labels); equal to ``to_union`` otherwise.
    """

    name: str
    classes: tuple[str, ...]
    to_union: np.ndarray
    to_dataset: np.ndarray
    to_union_partial: np.ndarray

    def remap(self, label: np.ndarray, *, partial: bool = False) -> np.ndarray:
        """The dataset's label map in union classes (ignore stays 255); with ``partial``, label
        sets as their values ``K + j`` (training)."""
        return (self.to_union_partial if partial else self.to_union)[label]

    def to_dataset_labels(self, pred: Tensor) -> Tensor:
        """Union predictions as the dataset's classes, 255 (Void) for foreign classes."""
        lut = torch.as_tensor(self.to_dataset.astype(np.int64), device=pred.device)
        return lut[pred.to(torch.int64)]

    def own_classes(self, num_union: int) -> list[int]:
        """The union classes this dataset's labels can hold (the others are foreign)."""
        return [u for u in range(num_union) if self.to_dataset[u] != IGNORE_INDEX]


@dataclass(frozen=True)
class UnionLabelSpace:
    """The classes a multi-dataset model predicts and each dataset's tables into them."""

    classes: tuple[str, ...]
    datasets: dict[str, DatasetLabels]
    # Union classes of label value ``len(classes) + j`` (``data.union.partial_labels``).
    label_sets: tuple[tuple[int, ...], ...] = ()

    def label_set_mask(self) -> Tensor | None:
        """``(K + S, K)`` bool: row ``v`` marks the union classes label value ``v`` allows
        (the identity for ``v < K``, the label sets below it); ``None`` without label sets."""
        if not self.label_sets:
            return None
        num_classes = len(self.classes)
        mask = torch.zeros(num_classes + len(self.label_sets), num_classes, dtype=torch.bool)
        mask[:num_classes] = torch.eye(num_classes, dtype=torch.bool)
        for j, members in enumerate(self.label_sets):
            mask[num_classes + j, list(members)] = True
        return mask

    def foreign_classes(self, name: str) -> list[int]:
        """Union classes foreign to dataset ``name`` (thesis 5.3.2)."""
        own = set(self.datasets[name].own_classes(len(self.classes)))
        return [u for u in range(len(self.classes)) if u not in own]


def _targets(value: object) -> list[str]:
    return [str(t) for t in value] if isinstance(value, list) else [str(value)]


def _union_classes(union: UnionConfig, dataset_classes: Mapping[str, Sequence[str]]) -> list[str]:
    """``union.classes``, or every dataset class by name (merged without case), then targets."""
    if union.classes is not None:
        return list(union.classes)
    names: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name.lower() not in seen and name.lower() != UNION_IGNORE:
            seen.add(name.lower())
            names.append(name)

    for entry, classes in dataset_classes.items():
        table = union.map.get(entry, {})
        for name in classes:
            if name not in table:
                add(name)
    for table in union.map.values():
        for target in table.values():
            for name in _targets(target):
                add(name)
    return names


def build_union(
    union: UnionConfig | None,
    dataset_classes: Mapping[str, Sequence[str]],
    key: str = "data.union",
) -> UnionLabelSpace:
    """The union label space of the datasets (see the module docstring for the rules).

    Args:
        union: ``data.union``; ``None`` merges the datasets' classes by name.
        dataset_classes: entry name -> its class names, in the order of ``data.datasets``.
        key: the dotted key that error messages name.

    Raises:
        ConfigError: naming the key, for a map entry of a class the dataset does not have, a
            target that is not a union class, a dataset class with no union class of its name
            and no map entry, two classes of one dataset in one union class, or more than 255
            union classes (with ``partial_labels``: union classes and label sets).
    """
    union = union or UnionConfig()
    classes = _union_classes(union, dataset_classes)
    if len(classes) > IGNORE_INDEX:
        raise ConfigError(f"{key}.classes: {len(classes)} union classes; at most 255 fit 8 bits")
    index = {name.lower(): i for i, name in enumerate(classes)}
    datasets = {}
    label_sets: list[tuple[int, ...]] = []
    for entry, names in dataset_classes.items():
        datasets[entry] = _dataset_labels(entry, names, union, classes, index, label_sets, key)
    if len(classes) + len(label_sets) > IGNORE_INDEX:
        raise ConfigError(
            f"{key}.partial_labels: {len(classes)} union classes and {len(label_sets)} label "
            f"sets need {len(classes) + len(label_sets)} label values; at most 255 fit 8 bits "
            "beside ignore"
        )
    return UnionLabelSpace(tuple(classes), datasets, tuple(label_sets))


def _dataset_labels(
    entry: str,
    names: Sequence[str],
    union: UnionConfig,
    classes: Sequence[str],
    index: Mapping[str, int],
    label_sets: list[tuple[int, ...]],
    key: str,
) -> DatasetLabels:
    """The lookup tables between dataset ``entry`` (class ``names``) and the union ``classes``
    (``index``: lower-case name -> union index). With ``partial_labels``, a label set that one
    of its classes claims and ``label_sets`` lacks is appended to it.

    Raises:
        ConfigError: as :func:`build_union`, for this dataset.
    """
    table = union.map.get(entry, {})
    unknown = [their for their in table if their not in names]
    if unknown:
        raise ConfigError(
            f"{key}.map.{entry}.{unknown[0]}: dataset {entry!r} has no class "
            f"{unknown[0]!r}; its classes: {', '.join(names)}"
        )
    to_union = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    to_dataset = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    partial_values: dict[int, int] = {}  # dataset value -> its label set's value
    for value, name in enumerate(names):
        where = f"{key}.map.{entry}.{name}"
        claimed = _claimed_classes(entry, name, table, classes, index, where, key)
        if claimed is None:
            continue
        if len(claimed) == 1:
            to_union[value] = claimed[0]
        elif union.partial_labels:
            members = tuple(sorted(set(claimed)))
            if members not in label_sets:
                label_sets.append(members)
            partial_values[value] = len(classes) + label_sets.index(members)
        for u in claimed:
            if to_dataset[u] != IGNORE_INDEX:
                raise ConfigError(
                    f"{where}: union class {classes[u]!r} already stands for class "
                    f"{names[to_dataset[u]]!r} of dataset {entry!r}; a union class may stand "
                    "for one class of each dataset (add a union class, or map one to "
                    f"{UNION_IGNORE})"
                )
            to_dataset[u] = value
    to_union_partial = to_union.copy()
    for value, label_value in partial_values.items():
        to_union_partial[value] = label_value
    return DatasetLabels(entry, tuple(names), to_union, to_dataset, to_union_partial)


def _claimed_classes(
    entry: str,
    name: str,
    table: Mapping[str, Any],
    classes: Sequence[str],
    index: Mapping[str, int],
    where: str,
    key: str,
) -> list[int] | None:
    """The union classes that class ``name`` of dataset ``entry`` stands for: its map entry's
    targets in ``table``, else the union class of its name; None when it is mapped to ignore.

    Raises:
        ConfigError: naming ``where``, for a target that is not a union class, or a class with
            no map entry and no union class of its name.
    """
    if name in table:
        targets = _targets(table[name])
        if [t.lower() for t in targets] == [UNION_IGNORE]:
            return None
        claimed = []
        for target in targets:
            if target.lower() not in index:
                raise ConfigError(
                    f"{where}: {target!r} is not a union class; union classes: {', '.join(classes)}"
                )
            claimed.append(index[target.lower()])
        return claimed
    if name.lower() not in index:
        raise ConfigError(
            f"{where}: class {name!r} of dataset {entry!r} has no union class of that "
            f"name; add it to {key}.classes or map it (to a union class, a list of "
            f"them, or {UNION_IGNORE})"
        )
    return [index[name.lower()]]
