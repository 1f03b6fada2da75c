"""Instance segmentation by iterative sampling (SSN §4, Figures 2, 4 and 6, Tables 5-6).

A guidance module predicts a coarse offsets table. A fixed grid holding every coarse pixel's own
coordinates is sampled through that table ``t`` times, the same table each time (SSN Figure 4):
``G_{k+1}(i) = G_k(i + o(i))``, so each pixel ends up holding the coordinates of the place the
flow leads it to after ``t`` steps. The result is upsampled to the image with the semantic iGUM
offsets (SSN Figure 2: the instance module sits *before* the guided upsampling) and regressed onto
each labelled pixel's instance centre (SSN eq. 2). At inference the converged coordinates become
instance ids by their unique values, small areas are dropped, and the class comes from the
semantic branch.

Choices made where the paper is silent or ambiguous (tested in ``tests/test_ssn.py``):

- **Coordinates** of the fixed grid are pixel centres in *input-image* pixels:
  coarse pixel ``i`` holds ``(i + 0.5) * s - 0.5`` with ``s`` = image size / coarse size, so eq. 2
  compares them directly with instance centres "in pixel coordinates". The grid is a constant:
  :func:`iterative_sampling` detaches it, so gradients reach the offsets table only (SSN §4:
  "it flows backward through every sampler step but not to the fixed regular grid").
- **Offsets** are in coarse pixels, x then y, bounded by ``max_offset * tanh`` (``max_offset=1``
  as SSN §4 "Two practical tips"); one step moves a value at most ``max_offset`` coarse pixels, so
  ``t`` bounds the reach of the diffusion (why Table 6 needs tens of iterations).
- **Instance centre** = mean pixel position (centroid) of the instance's pixels in the crop the
  network sees. **Labelled pixels** are those with an instance id ``>= 1000`` (Cityscapes
  convention ``class_id * 1000 + k``; smaller values in Cityscapes ``instanceIds`` are class ids of
  pixels with no instance, 0 in the synthetic scenes).
- **Eq. 2** is the (unsquared) Euclidean distance averaged over labelled pixels ("l2"); "l1"
  sums absolute differences of x and y; "smooth_l1" is Huber with a 1-pixel transition (Table 5).
  The term is multiplied by ``instance_weight`` before the trainer sums it with the
  cross-entropy (the paper gives no weight).
- **Sampling kernels.** Training samples bilinearly (iterations and upsampling). At inference
  ``inference_mode`` chooses: ``"nearest"`` (SSN §4: "Nearest-neighbor is the right choice to
  upsample unique id values") makes every pixel carry an exact grid coordinate, but offsets below
  half a coarse pixel then never move anything; after short training most offsets are that small
  (measured: held-out synthetic AP 0.0 with nearest vs 3.4 with bilinear, see
  ``docs/notes/issue-6.md``), so the default is ``"bilinear"`` with clustering. Values are grouped
  by ``floor(coordinate / cluster_size)`` for x and y (the paper sums x and y into one value, which
  makes pixels on an anti-diagonal collide; the 2D key does not); the default cell is three
  feature strides. Groups smaller than ``min_area`` pixels are dropped.
- **Class and score** of an instance: the semantic argmax restricted to ``thing_classes`` is part
  of the grouping key (an instance never mixes classes); its score is the mean softmax
  probability of its class over its pixels (used to rank it for AP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import HeadCapabilities
from leanseg.nn.heads.igum import (
    GuidanceBranch,
    SampleMode,
    guided_upsample,
    regular_grid,
    sample_at,
)
from leanseg.nn.layers import conv_bn_relu
from leanseg.nn.losses import cross_entropy
from leanseg.structures.labels import IGNORE_INDEX

InstanceLoss = Literal["l2", "l1", "smooth_l1"]

# Instance ids at or above this are instances (Cityscapes: class_id * 1000 + k).
INSTANCE_ID_BASE = 1000

# --------------------------------------------------------------------------- functional parts


def coordinate_grid(
    size: tuple[int, int],
    image_size: tuple[int, int],
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The fixed regular grid: ``(2, h, w)`` image-pixel coordinates (x, y) of coarse pixels."""
    height, width = size
    img_h, img_w = image_size
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (img_h / height) - 0.5
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (img_w / width) - 0.5
    return torch.stack(
        (xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width))
    )


def iterative_sampling(
    grid: Tensor, offsets: Tensor, iterations: int, mode: SampleMode = "bilinear"
) -> Tensor:
    """Sample ``grid`` through ``offsets`` ``iterations`` times (SSN §4, Figure 4).

    Args:
        grid: ``(2, h, w)`` or ``(B, 2, h, w)`` values to spread; detached, so no gradient
            reaches it.
        offsets: ``(B, 2, h, w)`` guidance offsets table in coarse pixels (shared by all steps).
        iterations: number of sampling steps ``t`` (0 returns the grid).
        mode: ``"bilinear"`` (training) or ``"nearest"`` (inference).

    Returns:
        ``(B, 2, h, w)``: the grid values found at the end of each pixel's ``t``-step path.
    """
    batch = offsets.shape[0]
    values = grid.detach()
    if values.dim() == 3:
        values = values.unsqueeze(0)
    values = values.expand(batch, -1, -1, -1)
    size = tuple(offsets.shape[-2:])
    positions = regular_grid(size, size, device=offsets.device, dtype=offsets.dtype) + offsets
    for _ in range(iterations):
        values = sample_at(values, positions, mode)
    return values


def instance_centres(instance: Tensor) -> tuple[Tensor, Tensor]:
    """Centroid of each pixel's instance, and which pixels are labelled instance pixels.

    Args:
        instance: ``(B, H, W)`` int64 ids; ids ``>= 1000`` are instances.

    Returns:
        ``(B, 2, H, W)`` centre x, y (image pixels; 0 where unlabelled) and ``(B, H, W)`` bool mask.
    """
    batch, height, width = instance.shape
    mask = instance >= INSTANCE_ID_BASE
    # One key per (image, instance); unlabelled pixels share key -1 and are masked out.
    image_index = torch.arange(batch, device=instance.device).view(batch, 1, 1)
    key = torch.where(mask, image_index * (instance.max() + 1) + instance, -1).flatten()
    _, inverse = torch.unique(key, return_inverse=True)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=instance.device, dtype=torch.float32),
        torch.arange(width, device=instance.device, dtype=torch.float32),
        indexing="ij",
    )
    positions = torch.stack((xs, ys)).view(2, 1, height * width).expand(2, batch, -1)
    positions = positions.reshape(2, -1)  # (2, B*H*W) in (image, row, col) order like ``key``
    groups = int(inverse.max()) + 1
    sums = torch.zeros(2, groups, device=instance.device).index_add_(1, inverse, positions)
    counts = torch.zeros(groups, device=instance.device).index_add_(
        0, inverse, torch.ones_like(positions[0])
    )
    centres = (sums / counts.clamp(min=1))[:, inverse]  # (2, B*H*W)
    centres = centres.view(2, batch, height, width).permute(1, 0, 2, 3)
    return centres * mask.unsqueeze(1), mask


def instance_loss(
    predicted: Tensor, centres: Tensor, mask: Tensor, kind: InstanceLoss = "l2"
) -> Tensor:
    """SSN eq. 2 (and the L1 / smooth-L1 variants of Table 5) over labelled pixels.

    Args:
        predicted: ``(B, 2, H, W)`` sampled coordinates.
        centres: ``(B, 2, H, W)`` instance centres.
        mask: ``(B, H, W)`` labelled pixels.
        kind: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.

    Returns:
        Mean over labelled pixels; 0 (with a gradient path) when there are none.
    """
    diff = (predicted.float() - centres).permute(0, 2, 3, 1)[mask]  # (N, 2)
    if kind == "l2":
        # sqrt has an infinite gradient at 0; the epsilon keeps a perfect pixel finite.
        per_pixel = torch.sqrt((diff**2).sum(dim=1) + 1e-6)
    elif kind == "l1":
        per_pixel = diff.abs().sum(dim=1)
    elif kind == "smooth_l1":
        per_pixel = F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=1.0)
        per_pixel = per_pixel.sum(dim=1)
    else:
        raise ValueError(f"unknown instance loss {kind!r}; choose l2, l1 or smooth_l1")
    return per_pixel.sum() / max(per_pixel.numel(), 1) + 0.0 * predicted.sum()


@dataclass
class InstancePrediction:
    """Instances of a batch.

    Attributes:
        instance: ``(B, H, W)`` int64 ids ``class_id * 1000 + k`` (k from 1), 0 = none.
        scores: per image, ``{instance id: confidence}``.
    """

    instance: Tensor
    scores: list[dict[int, float]]


def coordinates_to_instances(
    coordinates: Tensor,
    scores: Tensor,
    thing_classes: Sequence[int],
    *,
    cluster_size: float,
    min_area: int,
) -> InstancePrediction:
    """Turn converged coordinates into instance ids (SSN §4, Figure 6 bottom).

    Args:
        coordinates: ``(B, 2, H, W)`` converged x, y in image pixels.
        scores: ``(B, C, H, W)`` semantic class scores.
        thing_classes: classes that have instances.
        cluster_size: side in pixels of the cells that group coordinate values.
        min_area: groups with fewer pixels are dropped (the area threshold).
    """
    batch, num_classes, height, width = scores.shape
    probs = scores.softmax(dim=1)
    confidence, label = probs.max(dim=1)  # (B, H, W)
    things = torch.zeros(num_classes, dtype=torch.bool, device=scores.device)
    if thing_classes:
        things[torch.as_tensor(list(thing_classes), device=scores.device)] = True
    mask = things[label]
    cells_x = int(width // cluster_size) + 2
    cells_y = int(height // cluster_size) + 2
    qx = torch.floor(coordinates[:, 0] / cluster_size).long().clamp(0, cells_x - 1)
    qy = torch.floor(coordinates[:, 1] / cluster_size).long().clamp(0, cells_y - 1)
    image_index = torch.arange(batch, device=scores.device).view(batch, 1, 1)
    group = image_index * num_classes + label  # (image, class) pair
    key = (group * cells_y + qy) * cells_x + qx
    key = torch.where(mask, key, -1).flatten()
    uniques, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    kept = (uniques >= 0) & (counts >= min_area)
    # Number kept groups 1, 2, ... within each (image, class); uniques are sorted, so each
    # (image, class) pair is a contiguous run.
    kept_keys = uniques[kept]
    kept_group = kept_keys // (cells_y * cells_x)
    rank = torch.arange(kept_keys.numel(), device=scores.device)
    first = torch.searchsorted(kept_group, kept_group)
    ids = torch.zeros_like(uniques)
    ids[kept] = (kept_group % num_classes) * INSTANCE_ID_BASE + rank - first + 1
    instance = ids[inverse].view(batch, height, width)
    # Confidence of each kept group: mean class probability over its pixels.
    conf_sum = torch.zeros(uniques.numel(), device=scores.device).index_add_(
        0, inverse, confidence.flatten().float()
    )
    mean_conf = conf_sum / counts.clamp(min=1)
    image_of = (kept_group // num_classes).tolist()
    per_image: list[dict[int, float]] = [{} for _ in range(batch)]
    for b, instance_id, conf in zip(
        image_of, ids[kept].tolist(), mean_conf[kept].tolist(), strict=True
    ):
        per_image[b][instance_id] = conf
    return InstancePrediction(instance=instance, scores=per_image)


# --------------------------------------------------------------------------- head


class SSNInstanceHead(HeadCapabilities, nn.Module):
    """Semantic iGUM plus the instance segmentation module (SSN Figure 2).

    Three branches on the coarsest (or ``in_stride``) features: class scores (1x1), the semantic
    iGUM offsets table (one 3x3 convolution) and the instance guidance module (3x3 conv-BN-ReLU at
    the feature width, then a 3x3 convolution to the offsets; SSN does not describe its layers:
    the extra layer gives the instance offsets some capacity of their own). ``forward`` returns
    class scores at the image size (iGUM); ``losses`` adds the instance term when targets carry
    ``instance``; :meth:`predict_instances` returns instance ids.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the cross-entropy.
        in_stride: which feature map the branches read; ``None`` takes the coarsest.
        thing_classes: classes that have instances (e.g. synthetic 8, 9, 10; Cityscapes 11-18).
        iterations: sampling steps ``t`` (SSN keeps 30, Table 6).
        loss: instance loss, ``"l2"`` (eq. 2), ``"l1"`` or ``"smooth_l1"`` (Table 5).
        instance_weight: multiplier of the instance term.
        max_offset: bound of both offsets tables in coarse pixels (SSN §4 tips: 1).
        guidance_kernel: kernel size of the guidance convolutions.
        cluster_size: pixel size of the cells grouping converged coordinates at inference;
            ``None`` uses three feature strides.
        inference_mode: sampling kernel of the iterations and upsampling at inference.
        min_area: instances with fewer pixels are dropped at inference.
        dropout: dropout probability before the classifier.
    """

    onnx_unexportable = None
    predicts_instances = True

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        in_stride: int | None = None,
        thing_classes: list[int] | None = None,
        iterations: int = 30,
        loss: InstanceLoss = "l2",
        instance_weight: float = 0.05,
        max_offset: float = 1.0,
        guidance_kernel: int = 3,
        cluster_size: float | None = None,
        inference_mode: SampleMode = "bilinear",
        min_area: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        self.in_stride = info.stride
        self.ignore_index = ignore_index
        self.thing_classes = list(thing_classes or [])
        self.iterations = iterations
        self.loss_kind = loss
        self.instance_weight = instance_weight
        self.cluster_size = float(cluster_size if cluster_size is not None else 3 * info.stride)
        self.inference_mode = inference_mode
        self.min_area = min_area
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(info.channels, num_classes, 1)
        self.guidance = GuidanceBranch(
            info.channels, kernel_size=guidance_kernel, max_offset=max_offset
        )
        self.instance_guidance = nn.Sequential(
            *conv_bn_relu(info.channels, info.channels, 3),
            GuidanceBranch(info.channels, kernel_size=guidance_kernel, max_offset=max_offset),
        )

    def coarse(self, features: dict[int, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Scores ``(B, C, h, w)``; semantic and instance offsets ``(B, 2, h, w)``."""
        x = features[self.in_stride]
        return self.classifier(self.dropout(x)), self.guidance(x), self.instance_guidance(x)

    def forward(self, features: dict[int, Tensor], image_size: tuple[int, int]) -> Tensor:
        scores, offsets, _ = self.coarse(features)
        return guided_upsample(scores, offsets, image_size, "bilinear")

    def instance_coordinates(
        self,
        semantic_offsets: Tensor,
        instance_offsets: Tensor,
        image_size: tuple[int, int],
        *,
        iterations: int,
        mode: SampleMode,
    ) -> Tensor:
        """Converged coordinates ``(B, 2, H, W)`` at the image size (image pixels)."""
        grid = coordinate_grid(
            tuple(instance_offsets.shape[-2:]),
            image_size,
            device=instance_offsets.device,
            dtype=instance_offsets.dtype,
        )
        coarse = iterative_sampling(grid, instance_offsets, iterations, mode)
        return guided_upsample(coarse, semantic_offsets, image_size, mode)

    def loss_names(self) -> tuple[str, ...]:
        """``loss_ce`` and ``loss_instance`` (0 for a batch without instance maps)."""
        return ("loss_ce", "loss_instance")

    def losses(
        self,
        features: dict[int, Tensor],
        targets: dict[str, Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        scores, offsets, instance_offsets = self.coarse(features)
        upsampled = guided_upsample(scores, offsets, image_size, "bilinear")
        terms = {"loss_ce": cross_entropy(upsampled, targets["label"], self.ignore_index)}
        if "instance" in targets:
            coords = self.instance_coordinates(
                offsets, instance_offsets, image_size, iterations=self.iterations, mode="bilinear"
            )
            centres, mask = instance_centres(targets["instance"])
            terms["loss_instance"] = self.instance_weight * instance_loss(
                coords, centres, mask, self.loss_kind
            )
        else:
            # No instance labels (e.g. CamVid): a zero term keeps the instance branch in the
            # graph, so every parameter gets a (zero) gradient, as DDP and the smoke tests need.
            terms["loss_instance"] = 0.0 * instance_offsets.sum()
        return terms

    @torch.no_grad()
    def predict_instances(
        self,
        features: dict[int, Tensor],
        image_size: tuple[int, int],
        *,
        iterations: int | None = None,
    ) -> InstancePrediction:
        """Instance ids at the image size, sampled with ``inference_mode`` (module docstring)."""
        scores, offsets, instance_offsets = self.coarse(features)
        upsampled = guided_upsample(scores, offsets, image_size, "bilinear")
        coords = self.instance_coordinates(
            offsets,
            instance_offsets,
            image_size,
            iterations=self.iterations if iterations is None else iterations,
            mode=self.inference_mode,
        )
        return coordinates_to_instances(
            coords,
            upsampled,
            self.thing_classes,
            cluster_size=self.cluster_size,
            min_area=self.min_area,
        )


def predict_instances(
    model: nn.Module, images: Tensor, *, iterations: int | None = None
) -> InstancePrediction:
    """Instances for images ``(B, 3, H, W)`` from a :class:`~leanseg.nn.segmentor.Segmentor`
    whose head is an :class:`SSNInstanceHead` (pads like ``Segmentor.forward``, crops back).

    Args:
        model: the segmentor.
        images: input batch.
        iterations: sampling steps; ``None`` uses the head's.
    """
    head = model.head
    if not isinstance(head, SSNInstanceHead):
        raise TypeError(f"model head is {type(head).__name__}, not SSNInstanceHead")
    height, width = images.shape[-2:]
    padded = model._pad(images)
    prediction = head.predict_instances(
        model.features(padded), tuple(padded.shape[-2:]), iterations=iterations
    )
    instance = prediction.instance[..., :height, :width]
    # Instances that lay entirely in the padding disappear with the crop.
    present = [set(torch.unique(m).tolist()) for m in instance]
    scores = [
        {k: v for k, v in s.items() if k in keep}
        for s, keep in zip(prediction.scores, present, strict=True)
    ]
    return InstancePrediction(instance=instance, scores=scores)
