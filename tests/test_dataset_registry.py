"""Every dataset of the builder table declares its class table, so a model is built without files.

Adding a dataset to ``leanseg.data.DATASETS`` is checked here automatically: its classes are
names, its palette (if any) has one RGB colour per class, its ignore value is leanseg's, and
:func:`leanseg.data.resolve_classes` answers for it with a root that does not exist. The
exceptions are named: a folder dataset's classes come from the config, Mapillary Vistas' from
the dataset's own ``config_v1.2.json``.
"""

from __future__ import annotations

import pytest

from leanseg.config import DataConfig
from leanseg.data import DATASETS, resolve_classes
from leanseg.structures.labels import IGNORE_INDEX

# Datasets whose class table comes from the config (data.classes), not from the class, and
# Mapillary Vistas, whose table is the dataset's own config_v1.2.json (its versions differ).
FROM_CONFIG = {"folder"}
FROM_DATASET_FILE = {"vistas"}
DECLARED = sorted(set(DATASETS) - FROM_CONFIG - FROM_DATASET_FILE)


@pytest.mark.parametrize("name", DECLARED)
def test_a_dataset_declares_classes_palette_and_ignore_index(name):
    dataset = DATASETS[name]
    assert dataset.classes and all(isinstance(c, str) and c for c in dataset.classes)
    assert len(set(dataset.classes)) == len(dataset.classes), "class names repeat"
    if dataset.palette:
        assert len(dataset.palette) == len(dataset.classes)
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in dataset.palette)
    assert dataset.ignore_index == IGNORE_INDEX


@pytest.mark.parametrize("name", DECLARED)
def test_classes_resolve_without_reading_the_dataset(name, tmp_path):
    resolved = resolve_classes(DataConfig(dataset=name, root=str(tmp_path / "absent")))
    assert tuple(resolved.classes) == tuple(DATASETS[name].classes)
    assert resolved.ignore_index == IGNORE_INDEX
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("name", sorted(FROM_DATASET_FILE))
def test_a_table_read_from_the_dataset_names_the_missing_file(name, tmp_path):
    with pytest.raises(ValueError, match="config_v1.2.json"):
        resolve_classes(DataConfig(dataset=name, root=str(tmp_path / "absent")))
