"""Fold inference-mode BatchNorm into the convolution that feeds it (SSN §6, "Evaluation metrics").

SSN measures speed "removing all Batch-Normalizations at test time merging them with close
convolutions" (following ENet). For a BN whose input is exactly the output of a convolution,

    BN(W * x + b) = (gamma / sigma) W * x + (gamma / sigma) (b - mu) + beta,

so the convolution takes the scaled weight and the new bias and the BN becomes ``nn.Identity``.

The pairs are found by running the model once on an example input (forward hooks), not by
matching module names, so :func:`fold_batchnorm` works on any leanseg model whatever its
control flow: a BN is folded when its input tensor *is* the output tensor of a ``Conv2d`` or
``ConvTranspose2d`` (``groups=1`` for transposed), each called exactly once. A BN after a
concatenation (the early downsampling block) or an activation is left as it is. Because a
convolution output could also be used elsewhere (e.g. a residual sum that bypasses the BN), the
folded model is checked against the original on the example input and an error is raised if the
outputs differ.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

_FOLDABLE = (nn.Conv2d, nn.ConvTranspose2d)


class FoldError(RuntimeError):
    """Folding changed the model's outputs (a convolution output is used beyond its BN)."""


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def find_conv_bn_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """Qualified names ``(conv, bn)`` of foldable pairs, found by one eval-mode forward.

    Args:
        model: any module; called as ``model(example)``.
        example: an input batch.
    """
    return trace_conv_bn_pairs(model, example)[0]


def trace_conv_bn_pairs(model: nn.Module, example: Tensor) -> tuple[list[tuple[str, str]], Any]:
    """The foldable pairs of :func:`find_conv_bn_pairs` and the output of the forward that
    found them (eval mode, no gradients), so a caller that also needs ``model(example)`` (the
    reference of a check) runs the model once. The hooks only watch: the output is the model's.

    Args:
        model: any module; called as ``model(example)``.
        example: an input batch.

    Returns:
        ``(pairs, output)``: qualified names ``(conv, bn)``, and what ``model(example)`` returned.
    """
    names = {module: name for name, module in model.named_modules()}
    produced: dict[int, nn.Module] = {}
    keep_alive: list[Tensor] = []  # so that ids of hooked outputs are not reused
    calls: dict[nn.Module, int] = {}
    candidates: list[tuple[nn.Module, nn.Module]] = []

    def conv_hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        calls[module] = calls.get(module, 0) + 1
        produced[id(output)] = module
        keep_alive.append(output)

    def bn_hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        calls[module] = calls.get(module, 0) + 1
        source = produced.get(id(args[0])) if args else None
        if source is not None:
            candidates.append((source, module))

    handles = []
    for module in model.modules():
        if isinstance(module, _FOLDABLE):
            if isinstance(module, nn.ConvTranspose2d) and module.groups != 1:
                continue
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_hook(bn_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    pairs = [
        (names[conv], names[bn])
        for conv, bn in candidates
        if calls[conv] == 1 and calls[bn] == 1 and bn.track_running_stats
    ]
    return pairs, output


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics and affine parameters) into ``conv`` in place."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std  # (C_out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    if isinstance(conv, nn.ConvTranspose2d):
        conv.weight.mul_(scale.view(1, -1, 1, 1))  # weight (C_in, C_out, kh, kw)
    else:
        conv.weight.mul_(scale.view(-1, 1, 1, 1))  # weight (C_out, C_in / groups, kh, kw)
    new_bias = (bias - bn.running_mean) * scale + beta
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.clone())
    else:
        conv.bias.copy_(new_bias)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fold_pairs(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each named BN into its named convolution, in place; the BNs become ``nn.Identity``.

    Unchecked: ``pairs`` must come from :func:`find_conv_bn_pairs` on ``model`` (or on a module
    with the same names, e.g. the original of a copy), and the caller checks the outputs.
    """
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_submodule(model, bn_name, nn.Identity())


def fold_batchnorm(
    model: nn.Module, example: Tensor, *, atol: float = 1e-4, rtol: float = 1e-4
) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BN folded into its convolution.

    Args:
        model: any leanseg model (or module); it is not modified.
        example: an input batch used to find the pairs and to check the result.
        atol: absolute tolerance of the output check.
        rtol: relative tolerance of the output check.

    Returns:
        The folded copy, in eval mode; folded BNs are ``nn.Identity``.

    Raises:
        FoldError: if the folded copy's output differs from the original's on ``example``.
    """
    folded = copy.deepcopy(model).eval()
    pairs = find_conv_bn_pairs(folded, example)
    fold_pairs(folded, pairs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = _first_tensor(model(example))
            got = _first_tensor(folded(example))
    finally:
        model.train(was_training)
    if (
        expected is not None
        and got is not None
        and not torch.allclose(expected, got, atol=atol, rtol=rtol)
    ):
        diff = (expected - got).abs().max().item()
        raise FoldError(f"folding {len(pairs)} BN layers changed the output (max diff {diff:.3g})")
    return folded
