"""The union label space (thesis ch. 5, ``leanseg.data.union``): rules the other tests leave open.

Written against the survivors of mutation testing
(``benchmarks/robustness/mutation.py --module union``);
each test states a rule of the module docstring or of thesis 5.3.1, not the current output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanseg.config import ConfigError, UnionConfig
from leanseg.data.union import build_union

CAMVID = ("Sky", "Road", "Car", "Bicyclist", "Pavement")
CITY = ("road", "sidewalk", "sky", "car", "rider", "bicycle")


def _split_space():
    union = UnionConfig(
        classes=["sky", "road", "sidewalk", "car", "rider", "bicycle"],
        map={"camvid": {"Pavement": "sidewalk", "Bicyclist": ["rider", "bicycle"]}},
    )
    return build_union(union, {"camvid": CAMVID, "city": CITY})


def test_dataset_labels_of_uint8_predictions_are_class_ids():
    """Predictions stored as 8-bit maps are looked up as class ids (int64 indices), not as a
    boolean mask, and come back as int64 class ids of the dataset, 255 for foreign classes."""
    camvid = _split_space().datasets["camvid"]
    pred = torch.tensor([[0, 4, 5, 2, 1]], dtype=torch.uint8)
    labels = camvid.to_dataset_labels(pred)
    assert labels.dtype == torch.int64
    # sky road sidewalk car rider bicycle -> Sky Road Pavement Car Bicyclist Bicyclist
    assert labels.tolist() == [[0, 3, 3, 4, 1]]


def test_dataset_labels_stay_on_the_predictions_device():
    """The lookup table goes to the predictions' device (no round trip through the host); the
    meta device stands in for a GPU."""
    camvid = _split_space().datasets["camvid"]
    pred = torch.zeros(1, 3, 4, dtype=torch.int64, device="meta")
    assert camvid.to_dataset_labels(pred).device.type == "meta"


def test_each_label_set_has_its_own_row_of_the_mask():
    """Label value ``K + j`` allows exactly the classes of label set ``j`` (two sets here)."""
    union = UnionConfig(
        classes=["road", "rider", "bicycle", "car", "truck"],
        map={"a": {"Bicyclist": ["rider", "bicycle"], "Vehicle": ["car", "truck"]}},
        partial_labels=True,
    )
    space = build_union(union, {"a": ("road", "Bicyclist", "Vehicle")})
    assert space.label_sets == ((1, 2), (3, 4))
    mask = space.label_set_mask()
    assert mask.shape == (7, 5)
    assert torch.equal(mask[:5], torch.eye(5, dtype=torch.bool))
    assert mask[5].nonzero().flatten().tolist() == [1, 2]
    assert mask[6].nonzero().flatten().tolist() == [3, 4]
    # The training label map writes the sets as K + j, evaluation keeps them ignored.
    a = space.datasets["a"]
    assert a.remap(np.array([0, 1, 2], dtype=np.uint8), partial=True).tolist() == [0, 5, 6]
    assert a.remap(np.array([0, 1, 2], dtype=np.uint8)).tolist() == [0, 255, 255]


def test_a_class_mapped_to_ignore_makes_no_union_class():
    """``ignore`` is a map target, not a class: a derived union has no class of that name,
    whatever the case it is written in."""
    for spelling in ("ignore", "IGNORE", "Ignore"):
        union = UnionConfig(map={"a": {"Sky": spelling}})
        space = build_union(union, {"a": ("Sky", "Road")})
        assert space.classes == ("Road",)
        assert space.datasets["a"].to_union[:2].tolist() == [255, 0]


def test_errors_name_data_union_by_default():
    with pytest.raises(ConfigError, match=r"^data\.union\.map\.a\.Road: class 'Road'"):
        build_union(UnionConfig(classes=["Sky"]), {"a": ("Sky", "Road")})


@pytest.mark.parametrize("num_classes", [254, 255])
def test_up_to_255_union_classes_fit_beside_ignore(num_classes):
    """Union classes are 8-bit label values below the ignore value 255: 255 of them fit."""
    names = tuple(f"c{i}" for i in range(num_classes))
    space = build_union(None, {"a": names})
    assert len(space.classes) == num_classes
    assert space.datasets["a"].to_union[num_classes - 1] == num_classes - 1


def test_256_union_classes_are_refused_naming_the_key():
    names = tuple(f"c{i}" for i in range(256))
    with pytest.raises(ConfigError, match=r"^x\.classes: 256 union classes; at most 255"):
        build_union(None, {"a": names}, key="x")


def test_tables_are_the_documented_256_entry_uint8_lookups():
    """Every table of :class:`DatasetLabels` is ``uint8 (256,)``: one entry per 8-bit label
    value, so any label map or union prediction indexes it."""
    space = _split_space()
    for labels in space.datasets.values():
        for table in (labels.to_union, labels.to_dataset, labels.to_union_partial):
            assert table.dtype == np.uint8 and table.shape == (256,)


def test_a_target_that_is_no_union_class_names_the_map_entry():
    union = UnionConfig(classes=["Sky", "rider"], map={"a": {"Bicyclist": ["rider", "bike"]}})
    with pytest.raises(ConfigError, match=r"^data\.union\.map\.a\.Bicyclist: 'bike' is not a"):
        build_union(union, {"a": ("Sky", "Bicyclist")})


def test_dataset_entries_know_their_name_and_classes():
    space = _split_space()
    assert [labels.name for labels in space.datasets.values()] == ["camvid", "city"]
    assert space.datasets["camvid"].classes == CAMVID and space.datasets["city"].classes == CITY


def _with_one_label_set(num_classes: int):
    names = tuple(f"c{i}" for i in range(num_classes))
    union = UnionConfig(map={"b": {"X": ["c0", "c1"]}}, partial_labels=True)
    return build_union(union, {"a": names, "b": ("X",)})


def test_union_classes_and_label_sets_share_the_255_label_values():
    """With ``partial_labels`` label set ``j`` is the value ``K + j``: ``K + S`` values must stay
    below the ignore value 255, so 254 classes and one set fit, 255 classes and one set do not."""
    space = _with_one_label_set(254)
    assert space.label_sets == ((0, 1),)
    assert space.datasets["b"].remap(np.array([0], dtype=np.uint8), partial=True).tolist() == [254]
    message = r"partial_labels: 255 union classes and 1 label sets need 256 label values"
    with pytest.raises(ConfigError, match=message):
        _with_one_label_set(255)
