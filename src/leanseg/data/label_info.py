"""What a model needs to know of its dataset, resolved once from the config.

:class:`DatasetClasses` answers the class names, their colours, the ignore value and, for a union
of datasets trained with partial labels, the label-set mask. ``leanseg.data.resolve_classes``
builds it from a ``data`` section (reading class tables where a dataset keeps them in files);
:func:`leanseg.models.build_model` takes it, so building a model reads no dataset files once it is
resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from leanseg.structures.labels import IGNORE_INDEX


@dataclass(frozen=True)
class DatasetClasses:
    """The classes of a dataset (or of a union of datasets) as a model sees them.

    Attributes:
        classes: class names, index = train id.
        palette: RGB colour per class (empty for a dataset without one, COCO-Stuff).
        ignore_index: the label value of unlabelled pixels.
        label_set_mask: ``(C + S, C)`` bool, the union's label sets
            (:meth:`~leanseg.data.union.UnionLabelSpace.label_set_mask`) when
            ``data.union.partial_labels`` is set and some dataset class covers several union
            classes; ``None`` otherwise.
    """

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    label_set_mask: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)
