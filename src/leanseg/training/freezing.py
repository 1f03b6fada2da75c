"""Freezing parts of a pretrained backbone for cheaper fine-tuning.

Two levers, each a training option (``train.freeze_backbone_bn``, ``train.freeze_backbone_until``):

- **Frozen BatchNorm**: every BN layer of the backbone normalises with its running statistics in
  training as in evaluation, and its statistics and affine parameters stay as loaded. The step
  then skips the batch statistics and their backward pass, and the result no longer depends on
  the batch size (the detectron2 habit for fine-tuning with small batches).
- **Frozen early stages**: the parameters of the backbone up to and including the module that
  returns the feature at a given stride (the backbone's ``feature_info`` names it) get no
  gradient. Autograd then neither stores their activations nor runs their backward pass, and
  the optimizer keeps no state for them. Their BN layers are frozen too, whatever the first
  option says, so that a frozen stage computes a fixed function.

Parameters are taken in registration order (``named_parameters``), which for every leanseg
backbone is the order of computation: the stem first, then stage after stage.

A frozen BN that directly follows a convolution is then computed inside it
(:class:`FoldedConv2d`: the weight scaled per channel, a bias added), so the activations skip
the BN's pass in both directions (frozen and folded, the Lite0 ladder recipe's iteration went
from 0.958 to 0.822 s: ``benchmarks/results/fast_training.json``).

The state dict is unchanged by either lever, so checkpoints load into a model built without them
and evaluate identically (BN in eval mode computes the same function).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leanseg.nn.fold_bn import find_conv_bn_pairs


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that always normalises with its running statistics.

    ``train()`` leaves it in eval mode, so ``model.train()`` cannot switch it back to batch
    statistics; its weight and bias get no gradient. Same parameters and buffers as
    :class:`torch.nn.BatchNorm2d`. Once a :class:`FoldedConv2d` computes it inside the
    convolution before it (``folded``), it passes its input through.
    """

    folded = False

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.folded else super().forward(x)


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`freeze_backbone` froze."""

    frozen_bn_layers: int
    frozen_parameters: int
    trainable_parameters: int
    folded_bn_layers: int = 0

    def describe(self) -> str:
        frozen = self.frozen_parameters
        total = frozen + self.trainable_parameters
        return (
            f"backbone: {self.frozen_bn_layers} BatchNorm layers frozen "
            f"({self.folded_bn_layers} computed inside their convolution), "
            f"{frozen:,} of {total:,} parameters frozen"
        )


def freeze_backbone(
    backbone: nn.Module,
    *,
    batchnorm: bool = False,
    until_stride: int | None = None,
    example: Tensor | None = None,
) -> FreezeReport:
    """Freeze the BatchNorm layers and/or the early stages of ``backbone`` in place.

    Args:
        backbone: a leanseg backbone (declares ``feature_info``).
        batchnorm: freeze every BatchNorm2d of the backbone.
        until_stride: freeze every parameter up to and including the module that returns the
            feature at this stride; ``None`` freezes none.
        example: an input batch for the backbone; given, every frozen BN that follows a
            convolution is computed inside it (:func:`fold_frozen_batchnorm`).

    Returns:
        Counts of what was frozen (of the backbone's parameters).

    Raises:
        ValueError: ``until_stride`` is not one of the backbone's feature strides (the message
            lists them), or the backbone declares no features.
    """
    frozen_prefix = _prefix_names(backbone, until_stride) if until_stride is not None else set()
    bn_layers = 0
    for name, module in list(backbone.named_modules()):
        if not isinstance(module, nn.BatchNorm2d) or isinstance(module, FrozenBatchNorm2d):
            continue
        in_prefix = any(f"{name}.{p}" in frozen_prefix for p in ("weight", "bias"))
        if batchnorm or in_prefix:
            backbone.set_submodule(name, _frozen_copy(module))
            bn_layers += 1
    for name, parameter in backbone.named_parameters():
        if name in frozen_prefix:
            parameter.requires_grad_(False)
    for module in backbone.modules():
        if isinstance(module, FrozenBatchNorm2d):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
    folded = fold_frozen_batchnorm(backbone, example) if example is not None and bn_layers else 0
    parameters = list(backbone.parameters())
    frozen = sum(p.numel() for p in parameters if not p.requires_grad)
    return FreezeReport(
        frozen_bn_layers=bn_layers,
        frozen_parameters=frozen,
        trainable_parameters=sum(p.numel() for p in parameters) - frozen,
        folded_bn_layers=folded,
    )


def _prefix_names(backbone: nn.Module, stride: int) -> set[str]:
    """Names of the parameters registered up to the last one of the module at ``stride``."""
    infos = getattr(backbone, "feature_info", None)
    if not infos:
        raise ValueError(
            f"train.freeze_backbone_until: {type(backbone).__name__} declares no features"
        )
    by_stride = {info.stride: info for info in infos}
    if stride not in by_stride:
        raise ValueError(
            f"train.freeze_backbone_until: {stride} is not a feature stride of "
            f"{type(backbone).__name__} (strides {sorted(by_stride)})"
        )
    module_name = by_stride[stride].name
    names = [name for name, _ in backbone.named_parameters()]
    owned = [i for i, name in enumerate(names) if name.startswith(f"{module_name}.")]
    if not owned:
        raise ValueError(
            f"train.freeze_backbone_until: the feature at stride {stride} "
            f"({module_name}) has no parameters to freeze up to"
        )
    return set(names[: max(owned) + 1])


def _frozen_copy(module: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
    )
    frozen.load_state_dict(module.state_dict())
    parameter = next(module.parameters(), None)
    if parameter is not None:
        frozen.to(device=parameter.device, dtype=parameter.dtype)
    return frozen.eval()


class FoldedConv2d(nn.Conv2d):
    """A convolution followed by a frozen BatchNorm, computed as one convolution.

    With the BN's statistics and affine parameters fixed, ``BN(conv(x))`` equals a convolution
    whose weight is scaled per output channel by ``gamma / sigma`` and whose bias is
    ``beta - mu * gamma / sigma`` (SSN §6's folding, here at every training step so the conv's
    own weight keeps training). The activations skip the BN's pass and its backward pass. The
    convolution keeps its parameters and the BN its buffers, under the same names, so the state
    dict is that of the unfolded pair.
    """

    def __init__(self, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        self.weight = conv.weight
        self.bias = conv.bias
        # A tuple, so that the BN stays where it is in the module tree (and the state dict).
        self._bn = (bn,)
        bn.folded = True

    def forward(self, x: Tensor) -> Tensor:
        (bn,) = self._bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), shift)


def fold_frozen_batchnorm(backbone: nn.Module, example: Tensor) -> int:
    """Compute every convolution followed by a :class:`FrozenBatchNorm2d` as one
    :class:`FoldedConv2d`; returns how many pairs were folded.

    The pairs are found by one forward pass on ``example`` (:func:`find_conv_bn_pairs`: the BN's
    input is exactly the convolution's output, each called once).
    """
    folded = 0
    for conv_name, bn_name in find_conv_bn_pairs(backbone, example):
        conv, bn = backbone.get_submodule(conv_name), backbone.get_submodule(bn_name)
        if type(conv) is not nn.Conv2d or not isinstance(bn, FrozenBatchNorm2d):
            continue
        backbone.set_submodule(conv_name, FoldedConv2d(conv, bn))
        folded += 1
    return folded
