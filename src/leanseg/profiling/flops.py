"""How big a model is and how much arithmetic one forward costs, counted rather than measured.

:func:`count_parameters` gives parameter elements; :func:`count_flops` gives fused multiply-adds
(:class:`FlopCount`) per module of one eval forward, found by forward hooks.

Convention: **FLOPs** are fused multiply-adds (1 FMA = one multiplication and one addition),
counted for convolutions (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``, any stride, dilation and
groups) and ``Linear`` layers, as the papers count them (thesis: "the number of fused multiply-add
operations"). Bias additions, normalisation, activations, pooling, interpolation, ``F.linear`` and
matmul-based attention are *not* counted. A module defining
``flops(self, inputs: tuple, output) -> int`` reports its own cost instead (its children are then
not visited): this is the extension point for sparse convolutions, dynamic per-pixel MLPs and
similar layers whose cost the hooks cannot see. Only modules that actually run are counted, once
per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from leanseg.profiling.state import preserve_state

__all__ = ["FlopCount", "count_flops", "count_parameters"]


# --------------------------------------------------------------------------- parameters


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements; shared parameters are counted once.

    Args:
        model: the model.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- FLOPs

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _conv_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    # Every output element sums (C_in / groups) * prod(kernel) products.
    weight = module.weight  # (C_out, C_in / groups, *kernel)
    return output.numel() * math.prod(weight.shape[1:])


def _conv_transpose_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    # Every input element is multiplied into (C_out / groups) * prod(kernel) output positions,
    # including those later cropped by padding (as fvcore counts them).
    weight = module.weight  # (C_in, C_out / groups, *kernel)
    return inputs[0].numel() * math.prod(weight.shape[1:])


def _linear_fmas(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    return output.numel() * module.in_features


def _fma_rule(module: nn.Module) -> Callable[[nn.Module, tuple[Any, ...], Any], int] | None:
    custom = getattr(module, "flops", None)
    if callable(custom):
        return lambda mod, inputs, output: int(custom(inputs, output))
    if isinstance(module, _CONV_TRANSPOSE):
        return _conv_transpose_fmas
    if isinstance(module, _CONV):
        return _conv_fmas
    if isinstance(module, nn.Linear):
        return _linear_fmas
    return None


@dataclass
class FlopCount:
    """Fused multiply-adds of one forward pass.

    Attributes:
        total: FMAs of the whole forward.
        by_module: FMAs per counted module, keyed by qualified name (``""`` is the model itself,
            when it is a counted layer or defines ``flops``); modules called twice sum their calls.
    """

    total: int
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        """``total / 1e9``."""
        return self.total / 1e9

    def by_top_level(self) -> dict[str, int]:
        """FMAs grouped by the first component of the module name (e.g. backbone/context/head)."""
        groups: dict[str, int] = {}
        for name, fmas in self.by_module.items():
            top = name.split(".", 1)[0]
            groups[top] = groups.get(top, 0) + fmas
        return groups


def count_flops(model: nn.Module, inputs: Tensor) -> FlopCount:
    """Count fused multiply-adds of one eval-mode, no-grad forward of ``model(inputs)``.

    See the module docstring for what is counted. The model's train/eval flags are restored
    afterwards. Counts follow the shapes seen during this forward, so data-dependent models
    (sparse decoders) report the cost of this particular input.

    Args:
        model: the model; called as ``model(inputs)``.
        inputs: the input batch, on the model's device. FMAs scale with its batch size.
    """
    counts: dict[str, int] = {}
    handles = []
    seen: set[int] = set()

    def visit(module: nn.Module, name: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        rule = _fma_rule(module)
        if rule is None:
            for child_name, child in module.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)
            return

        def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            counts[name] = counts.get(name, 0) + rule(mod, args, output)

        handles.append(module.register_forward_hook(hook))

    visit(model, "")
    try:
        with preserve_state(model, buffers=False), torch.no_grad():
            model.eval()
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(total=sum(counts.values()), by_module=counts)
