"""How well a model tells in-domain images from out-of-distribution ones (thesis 5.3.3).

``leanseg eval RUN --ood-images DIR [--ood-domain NAME]`` scores every image of the evaluated
split (in-domain; with ``--ood-domain``, that entry of ``data.datasets``) and every image of
``DIR`` (out-of-distribution) with one number per image, and reports the image-level AUROC
(:func:`leanseg.metrics.ood.auroc`; 1 = every OOD image scores above every in-domain one):

- ``max_softmax``: the baseline of Hendrycks and Gimpel, the image's mean ``1 - max_c p_c``;
- with a domain, ``foreign_flag``: the share of pixels whose predicted class is foreign to it,
  and ``foreign_mass``: the mean probability mass of its foreign classes (thesis 5.3: a model
  trained on several domains flags unfamiliar content by predicting other domains' classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from leanseg.config import Config, ConfigError
from leanseg.data import build_dataset, entry_config, entry_split
from leanseg.data.io import read_rgb
from leanseg.metrics.ood import auroc, foreign_map, image_score, max_softmax_score


@dataclass
class OODSeparation:
    """Image-level AUROC of each out-of-distribution score, with the image counts."""

    in_images: int
    out_images: int
    auroc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"in_images": self.in_images, "out_images": self.out_images, "auroc": self.auroc}


def image_scores(probabilities: Tensor, native: Sequence[int] | None) -> dict[str, float]:
    """The per-image scores of one ``(C, H, W)`` probability map (module docstring)."""
    scores = {"max_softmax": image_score(max_softmax_score(probabilities))}
    if native is not None:
        foreign = foreign_map(probabilities, native)
        scores["foreign_flag"] = image_score(foreign.foreign.float())
        scores["foreign_mass"] = image_score(foreign.mass)
    return scores


class OODEvaluator:
    """Accumulates the per-image scores of in-domain and OOD images; :meth:`compute` their AUROC.

    Not an :class:`~leanseg.evaluation.base.Evaluator` of the loop of
    :func:`~leanseg.evaluation.evaluator.evaluate`: it scores raw images of two sets (the
    split's and a folder's), one probability map at a time, and its result is an
    :class:`OODSeparation`, not fields of the segmentation scores.

    Args:
        native: the classes of the in-domain dataset, for the foreign-class scores.
    """

    def __init__(self, native: Sequence[int] | None = None) -> None:
        self.native = native
        self.scored: dict[str, list[dict[str, float]]] = {"in": [], "out": []}

    def update(self, probabilities: Tensor, *, out_of_distribution: bool) -> None:
        """Add one image's ``(C, H, W)`` class probabilities."""
        key = "out" if out_of_distribution else "in"
        self.scored[key].append(image_scores(probabilities, self.native))

    def compute(self) -> OODSeparation:
        """AUROC of each score (1 = every OOD image scores above every in-domain one)."""
        inside, outside = self.scored["in"], self.scored["out"]
        if not inside or not outside:
            raise ValueError("the OOD AUROC needs at least one in-domain and one OOD image")
        return OODSeparation(
            in_images=len(inside),
            out_images=len(outside),
            auroc={
                key: auroc(np.array([s[key] for s in inside]), np.array([s[key] for s in outside]))
                for key in inside[0]
            },
        )


def ood_separation(
    score_image: Callable[[np.ndarray], Tensor],
    in_images: Iterable[np.ndarray],
    out_images: Iterable[np.ndarray],
    native: Sequence[int] | None = None,
) -> OODSeparation:
    """AUROC of each score between two sets of RGB ``uint8 (H, W, 3)`` images.

    Args:
        score_image: an image's class probabilities ``(C, H, W)`` (e.g.
            :meth:`leanseg.inference.predictor.Predictor.predict_scores`).
        native: the classes of the in-domain dataset, for the foreign-class scores.
    """
    evaluator = OODEvaluator(native)
    for out_of_distribution, images in ((False, in_images), (True, out_images)):
        for image in images:
            evaluator.update(score_image(image), out_of_distribution=out_of_distribution)
    return evaluator.compute()


def in_domain_images(cfg: Config, split: str, domain: str | None) -> Iterable[np.ndarray]:
    """RGB images of the evaluated split (of entry ``domain`` of ``data.datasets`` if given),
    at most ``eval.max_images`` of them."""
    data_cfg = cfg.data
    if domain is not None:
        entries = {entry.key: entry for entry in data_cfg.datasets or []}
        if domain not in entries:
            raise ConfigError(f"--ood-domain: no dataset {domain!r} in data.datasets")
        entry = entries[domain]
        data_cfg, split = entry_config(cfg.data, entry), entry_split(cfg.data, entry, split)
    dataset = build_dataset(data_cfg, split, train=False)
    count = len(dataset)
    if cfg.eval.max_images is not None:
        count = min(count, cfg.eval.max_images)
    return (dataset.load_raw(index)["image"] for index in range(count))


def read_images(paths: Sequence[Path]) -> Iterable[np.ndarray]:
    """The images of ``paths``, read one at a time."""
    return (read_rgb(path) for path in paths)


__all__ = [
    "OODEvaluator",
    "OODSeparation",
    "image_scores",
    "in_domain_images",
    "ood_separation",
    "read_images",
]
