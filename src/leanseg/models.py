"""Model builders: small name -> function tables and :func:`build_model`.

A model is ``backbone -> context (optional) -> head`` (DESIGN.md), or one of
:data:`PYRAMID_MODELS`, which apply the backbone themselves to every level of an image pyramid
(depth-guided scale selection, thesis ch. 3). The tables below are the only
place names are looked up; each entry is a plain function or class whose keyword arguments are the
options a config may set. A run reads its config with :func:`load_run_config`, which validates the
options against those signatures once, at load time, so ``model.head.dropuot: 0.1`` fails with the
list of valid options before anything is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from leanseg.config import (
    Config,
    ConfigError,
    ModelConfig,
    coerce,
    config_from_dict,
    load_config,
)
from leanseg.nn.backbones import densenet, efficientnet_lite, hrnet, resnet, ssn_encoder, vgg
from leanseg.nn.backbones.base import IMAGENET_NORMALIZATION, Normalization
from leanseg.nn.context.aspp import ASPP
from leanseg.nn.context.spp import PSPSPP, SPP, ConvContext
from leanseg.nn.heads.base import DenseHead, DenseLoss, PartialLabels
from leanseg.nn.heads.bilinear import BilinearHead
from leanseg.nn.heads.carafe import CARAFEHead
from leanseg.nn.heads.deeplabv3plus import DeepLabV3PlusHead
from leanseg.nn.heads.duc import DUCHead
from leanseg.nn.heads.erfnet import ERFNetDecoderHead
from leanseg.nn.heads.igum import GUMHead, IGUMHead
from leanseg.nn.heads.ladder import LadderHead
from leanseg.nn.heads.ldn import LDNHead
from leanseg.nn.heads.nrd import NRDHead
from leanseg.nn.heads.qgn import QGNHead
from leanseg.nn.heads.sandf import SandFHead
from leanseg.nn.heads.ssn_instance import SSNInstanceHead
from leanseg.nn.scale_selection import model as scale_selection
from leanseg.nn.scale_selection.model import ScaleSelectionSegmentor
from leanseg.nn.segmentor import Segmentor
from leanseg.structures.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from leanseg.data.label_info import DatasetClasses

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "densenet121": densenet.densenet121,
    "densenet169": densenet.densenet169,
    "densenet161": densenet.densenet161,
    "erfnet_encoder": ssn_encoder.erfnet_encoder,
    "ssn_encoder": ssn_encoder.ssn_encoder,
    "hrnet_w18": hrnet.hrnet_w18,
    "hrnet_w32": hrnet.hrnet_w32,
    "hrnet_w48": hrnet.hrnet_w48,
    "efficientnet_lite0": efficientnet_lite.efficientnet_lite0,
    "efficientnet_lite1": efficientnet_lite.efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite.efficientnet_lite2,
    "vgg16": vgg.vgg16,
}

# The input normalisation each backbone's pretrained weights expect, declared per name so that a
# config's ``data.mean`` / ``data.std`` default to it without building the backbone. The values
# are the family's own constants, which its class also carries as ``Backbone.normalization``; a
# test checks that every name of :data:`BACKBONES` has one and that it is the built backbone's.
BACKBONE_NORMALIZATIONS: dict[str, Normalization] = {
    "resnet18": IMAGENET_NORMALIZATION,
    "resnet34": IMAGENET_NORMALIZATION,
    "resnet50": IMAGENET_NORMALIZATION,
    "resnet101": IMAGENET_NORMALIZATION,
    "densenet121": IMAGENET_NORMALIZATION,
    "densenet169": IMAGENET_NORMALIZATION,
    "densenet161": IMAGENET_NORMALIZATION,
    "erfnet_encoder": IMAGENET_NORMALIZATION,
    "ssn_encoder": IMAGENET_NORMALIZATION,
    "hrnet_w18": IMAGENET_NORMALIZATION,
    "hrnet_w32": IMAGENET_NORMALIZATION,
    "hrnet_w48": IMAGENET_NORMALIZATION,
    "efficientnet_lite0": efficientnet_lite.LITE_NORMALIZATION,
    "efficientnet_lite1": efficientnet_lite.LITE_NORMALIZATION,
    "efficientnet_lite2": efficientnet_lite.LITE_NORMALIZATION,
    "vgg16": IMAGENET_NORMALIZATION,
}

CONTEXTS: dict[str, Callable[..., nn.Module]] = {
    "spp": SPP,
    "psp_spp": PSPSPP,
    "conv": ConvContext,
    "aspp": ASPP,
}

HEADS: dict[str, Callable[..., nn.Module]] = {
    "bilinear": BilinearHead,
    "ladder": LadderHead,
    "ldn": LDNHead,
    "erfnet_decoder": ERFNetDecoderHead,
    "igum": IGUMHead,
    "gum": GUMHead,
    "ssn_instance": SSNInstanceHead,
    "nrd": NRDHead,
    "qgn": QGNHead,
    "deeplabv3plus": DeepLabV3PlusHead,
    "duc": DUCHead,
    "carafe": CARAFEHead,
    "sandf": SandFHead,
}

# Models that are not ``backbone -> context -> head``: the rows of thesis Table 3.1, which run the
# backbone (the shared extractor) on each level of an image pyramid and classify the levels the
# disparity selects. A config names them as its head (``model.head: {name: scale_invariant,
# hidden_channels: 128}``); ``model.backbone`` is the extractor and ``model.context`` must be
# null. The class-balanced loss of thesis 3.4 is their ``class_balancing`` option (on by default,
# as in the thesis).
PYRAMID_MODELS: dict[str, Callable[..., nn.Module]] = {
    "single5": scale_selection.single5,
    "single3_5": scale_selection.single3_5,
    "fixed_scales": scale_selection.fixed_scales,
    "scale_invariant": scale_selection.scale_invariant,
}

# Arguments the builder passes itself; a config may not set them. A builder gets those of them
# its signature declares (only LDN declares ``pooled_channels``, the context's pooled grids).
_SUPPLIED = {
    "feature_info",
    "num_classes",
    "ignore_index",
    "pooled_channels",
    "norm_layer",
    "backbone",
}
# A pyramid model's extractor (and its weights) come from ``model.backbone``.
_PYRAMID_SUPPLIED = _SUPPLIED | {"pretrained"}


def load_run_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Read the config of a run: :func:`leanseg.config.load_config`, then its model section.

    The plain loader checks types and value ranges; this one then checks the component names
    and options against the builder tables (:func:`validate_model_config`) and sets
    ``data.mean`` / ``data.std`` left ``null`` to the backbone's normalisation. Training,
    evaluation and prediction read configs through it (``leanseg.load_config`` is this function).

    Raises:
        ConfigError: as :func:`leanseg.config.load_config`, or on an unknown component or option;
            the message names the file and the dotted key.
    """
    cfg = load_config(path, overrides)
    return _resolve_model_section(cfg, source="<defaults>" if path is None else str(path))


def run_config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested mapping into a run :class:`Config`, as :func:`load_run_config` does."""
    return _resolve_model_section(config_from_dict(raw, source=source), source=source)


def _resolve_model_section(cfg: Config, *, source: str) -> Config:
    try:
        validate_model_config(cfg.model)
        return fill_input_normalization(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def build_model(
    cfg: Config, classes: DatasetClasses | None = None
) -> Segmentor | ScaleSelectionSegmentor:
    """Build the model a config describes, for the dataset's classes; with
    ``data.union.partial_labels``, its head trains on the union's label sets.

    Args:
        cfg: the run config.
        classes: the dataset's classes as :func:`leanseg.data.resolve_classes` answers them for
            ``cfg.data``; given, building reads nothing of the dataset. ``None`` resolves them.
    """
    if classes is None:
        from leanseg.data import resolve_classes

        classes = resolve_classes(cfg.data)
    model = build_segmentor(
        cfg.model, num_classes=classes.num_classes, ignore_index=classes.ignore_index
    )
    if classes.label_set_mask is not None:
        _attach_label_sets(model, cfg, classes.label_set_mask)
    return model


def _attach_label_sets(
    model: Segmentor | ScaleSelectionSegmentor, cfg: Config, mask: Tensor
) -> None:
    """Give the head the union's label-set mask ``(C + S, C)`` (:class:`PartialLabels`), after
    checking it can use it."""
    key, name = "data.union.partial_labels", cfg.model.head.get("name")
    head = getattr(model, "head", None)
    if not isinstance(model, Segmentor) or not isinstance(head, PartialLabels):
        raise ConfigError(
            f"{key}: head {name!r} has its own loss, which does not take label sets; partial "
            "labels train the dense cross-entropy heads and ldn"
        )
    if cfg.model.class_balancing:
        raise ConfigError(f"{key}: not combined with model.class_balancing (a set has no class)")
    if getattr(head, "class_weights", None) is not None:
        raise ConfigError(f"{key}: not combined with model.head.class_weights (a set has no class)")
    if cfg.model.hard_pixel_fraction is not None:
        raise ConfigError(f"{key}: not combined with model.hard_pixel_fraction")
    head.label_set_mask = mask


def build_segmentor(
    model_cfg: ModelConfig, *, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Segmentor | ScaleSelectionSegmentor:
    """Build backbone, context and head from a :class:`ModelConfig`; for a head named in
    :data:`PYRAMID_MODELS`, that model around the backbone."""
    backbone = _construct("model.backbone", model_cfg.backbone, BACKBONES)
    if model_cfg.head.get("name") in PYRAMID_MODELS:
        if model_cfg.class_balancing:
            raise ConfigError(
                f"model.class_balancing: head {model_cfg.head['name']!r} is a whole model with "
                "its own loss; set model.head.class_balancing instead"
            )
        if model_cfg.hard_pixel_fraction is not None:
            raise ConfigError(
                f"model.hard_pixel_fraction: head {model_cfg.head['name']!r} is a whole model "
                "with its own loss; hard pixel mining applies to dense-score heads"
            )
        if model_cfg.loss_points is not None:
            raise ConfigError(
                f"model.loss_points: head {model_cfg.head['name']!r} is a whole model with its "
                "own loss; the loss at sampled pixels applies to dense-score heads"
            )
        return _construct(
            "model.head",
            model_cfg.head,
            PYRAMID_MODELS,
            supplied=_PYRAMID_SUPPLIED,
            backbone=backbone,
            num_classes=num_classes,
            ignore_index=ignore_index,
        )
    feature_info = backbone.feature_info
    pooled_channels: tuple[int, ...] = ()
    context = None
    if model_cfg.context is not None:
        context = _construct(
            "model.context", model_cfg.context, CONTEXTS, feature_info=feature_info
        )
        feature_info = context.feature_info
        pooled_channels = context.pooled_channels
    head = _construct(
        "model.head",
        model_cfg.head,
        HEADS,
        feature_info=feature_info,
        num_classes=num_classes,
        ignore_index=ignore_index,
        pooled_channels=pooled_channels,
    )
    if model_cfg.class_balancing:
        name = model_cfg.head.get("name")
        _require_dense_loss(head, "model.class_balancing", name, "class balancing")
        if getattr(head, "class_weights", None) is not None:
            raise ConfigError(
                f"model.class_balancing: head {name!r} also has model.head.class_weights; "
                "both weigh the classes, choose one"
            )
        head.class_balancing = True
    if model_cfg.hard_pixel_fraction is not None:
        _set_hard_pixel_fraction(head, model_cfg)
    if model_cfg.loss_points is not None:
        _set_loss_points(head, model_cfg)
    return Segmentor(backbone, head, context, num_classes=num_classes)


def _require_dense_loss(head: nn.Module, key: str, name: str | None, option: str) -> None:
    """Raise ConfigError naming ``key`` unless ``head``'s loss is the dense cross-entropy
    (:class:`DenseLoss`), the only loss ``option`` changes."""
    if not isinstance(head, DenseLoss):
        raise ConfigError(
            f"{key}: head {name!r} computes its own loss (not the dense cross-entropy); "
            f"{option} applies to dense-score heads"
        )


def _set_hard_pixel_fraction(head: nn.Module, model_cfg: ModelConfig) -> None:
    """Give a dense cross-entropy head ``model.hard_pixel_fraction``, after checking it can use
    it."""
    key = "model.hard_pixel_fraction"
    _require_dense_loss(head, key, model_cfg.head.get("name"), "hard pixel mining")
    if model_cfg.class_balancing:
        raise ConfigError(f"{key}: not combined with model.class_balancing; choose one")
    head.hard_pixel_fraction = model_cfg.hard_pixel_fraction


def _set_loss_points(head: nn.Module, model_cfg: ModelConfig) -> None:
    """Give a dense-score head ``model.loss_points``, after checking that its scores come from
    coarse scores upsampled bilinearly (:class:`DenseHead`), the form the sampling reads."""
    if not isinstance(head, DenseHead):
        dense = sorted(
            name
            for name, kind in HEADS.items()
            if isinstance(kind, type) and issubclass(kind, DenseHead)
        )
        raise ConfigError(
            f"model.loss_points: head {model_cfg.head.get('name')!r} does not predict scores at a "
            "stride that are upsampled bilinearly to the image, so its loss cannot be sampled at "
            f"pixels; the option applies to {', '.join(dense)}"
        )
    head.loss_points = model_cfg.loss_points


def create_model(
    head: str = "ladder",
    backbone: str = "efficientnet_lite0",
    num_classes: int = 19,
    *,
    pretrained: bool | str = False,
    in_channels: int = 3,
    context: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    backbone_options: dict[str, Any] | None = None,
    context_options: dict[str, Any] | None = None,
    head_options: dict[str, Any] | None = None,
    **more_head_options: Any,
) -> Segmentor:
    """Build a model in one line, with the option checking of configs.

    ``create_model(head="ladder", backbone="efficientnet_lite0", num_classes=19, pretrained=True)``
    is the ``model:`` section of a config written as arguments: further keywords are the head's
    keyword arguments, ``backbone_options`` / ``context_options`` those of the other parts, and
    unknown names or wrong types raise :class:`ConfigError` listing the valid ones. A head option
    named like an argument of this function (QGN's own ``in_channels``) goes in ``head_options``.

    Args:
        head: a name of :data:`HEADS`.
        backbone: a name of :data:`BACKBONES`.
        num_classes: output classes.
        pretrained: ``True`` for the backbone's named ImageNet source (EfficientNet-Lite, from
            the installed ``leanseg[weights]`` packages), a path to a weight file, or ``False``.
        in_channels: channels of the input images (1 for grey-scale, 4 for RGB-D ...); the
            pretrained RGB first convolution is adapted to them (sum of its filters for 1,
            filters repeated and scaled by ``3 / in_channels`` otherwise).
        context: a name of :data:`CONTEXTS`, or ``None``.
        ignore_index: label value the losses ignore.
        backbone_options: further keyword arguments of the backbone builder.
        context_options: keyword arguments of the context.
        head_options: keyword arguments of the head, as a dict.
        **more_head_options: keyword arguments of the head.
    """
    from leanseg.nn.backbones.pretrained import PRETRAINED_SOURCES

    backbone_spec: dict[str, Any] = {"name": backbone, **(backbone_options or {})}
    if in_channels != 3:
        backbone_spec["in_channels"] = in_channels
    if pretrained is True:
        source = backbone.replace("_", "-")
        if source not in PRETRAINED_SOURCES:
            raise ConfigError(
                f"pretrained=True: no installable ImageNet weights are known for {backbone!r} "
                f"(known: {', '.join(sorted(PRETRAINED_SOURCES))}); pass the path of a weight file"
            )
        backbone_spec["pretrained"] = source
    elif pretrained:
        backbone_spec["pretrained"] = str(pretrained)
    model_cfg = ModelConfig(
        backbone=backbone_spec,
        context=None if context is None else {"name": context, **(context_options or {})},
        head={"name": head, **(head_options or {}), **more_head_options},
    )
    validate_model_config(model_cfg)
    return build_segmentor(model_cfg, num_classes=num_classes, ignore_index=ignore_index)


def without_pretrained(cfg: Config) -> Config:
    """``cfg`` with ``model.backbone.pretrained`` set to ``None``, for building a model that a
    checkpoint is then loaded into (eval, predict, ``--resume``).

    A checkpoint holds every weight, so the ImageNet file the run started from is not read:
    it may not exist where the model is evaluated or used.
    """
    if cfg.model.backbone.get("pretrained") is None:
        return cfg
    backbone = {**cfg.model.backbone, "pretrained": None}
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))


def input_normalization(model_cfg: ModelConfig) -> Normalization:
    """The input normalisation the configured backbone declares (:data:`BACKBONE_NORMALIZATIONS`).

    Nothing is built and the backbone's options are not checked (:func:`validate_model_config`
    does that); an unknown name lists the known ones. These are RGB statistics;
    :func:`fill_input_normalization` derives those of other channel counts.
    """
    _builder("model.backbone", model_cfg.backbone, BACKBONES)
    return BACKBONE_NORMALIZATIONS[model_cfg.backbone["name"]]


def configured_in_channels(model_cfg: ModelConfig) -> int:
    """``model.backbone.in_channels``: the channels of the input images, 3 unless set."""
    return int(model_cfg.backbone.get("in_channels", 3))


def fill_input_normalization(cfg: Config) -> Config:
    """Set ``data.mean`` / ``data.std`` left ``null`` and check that both fit the input channels.

    The rule, for ``C = model.backbone.in_channels``: ``data.mean`` and ``data.std`` hold ``C``
    values each. Left ``null``, they are the backbone's statistics for 3 channels and their
    averages for 1 (:meth:`Normalization.for_channels`); any other ``C`` (RGB-D,
    multispectral) must give them, since only the user knows the extra channels' statistics.

    Raises:
        ConfigError: naming ``data.mean`` or ``data.std``, on a statistic that must be given or
            has another number of values than ``C``.
    """
    in_channels = configured_in_channels(cfg.model)
    if cfg.data.mean is None or cfg.data.std is None:
        rgb = input_normalization(cfg.model)
        normalization = rgb.for_channels(in_channels)
        if normalization is None:
            key = "data.mean" if cfg.data.mean is None else "data.std"
            raise ConfigError(
                f"{key}: model.backbone.in_channels is {in_channels}, and the backbone's own "
                f"statistics are for RGB (mean {list(rgb.mean)}, std {list(rgb.std)}); give "
                f"data.mean and data.std with {in_channels} values each, those of your channels "
                "scaled to 0..1 (e.g. the RGB ones followed by the extra channels')"
            )
        if cfg.data.mean is None:
            cfg.data.mean = normalization.mean
        if cfg.data.std is None:
            cfg.data.std = normalization.std
    for key, values in (("data.mean", cfg.data.mean), ("data.std", cfg.data.std)):
        if len(values) != in_channels:
            raise ConfigError(
                f"{key}: {len(values)} values {list(values)} for model.backbone.in_channels "
                f"{in_channels}; give one per input channel"
            )
    return cfg


def _construct(
    key: str,
    spec: dict[str, Any],
    table: dict[str, Callable[..., nn.Module]],
    *,
    supplied: set[str] = _SUPPLIED,
    **inputs: Any,
) -> nn.Module:
    """Build one component; a value its builder rejects becomes a ConfigError naming ``key``."""
    builder, kwargs = _lookup(key, spec, table, supplied=supplied)
    declared = inspect.signature(builder).parameters
    supplied = {name: value for name, value in inputs.items() if name in declared}
    try:
        return builder(**supplied, **kwargs)
    except (ValueError, RuntimeError) as err:
        # RuntimeError: torch refusing a value the builder passed on (e.g. negative widths).
        raise ConfigError(f"{key} ({spec['name']}): {err}") from None


def validate_model_config(model_cfg: ModelConfig) -> None:
    """Check component names and options against the builder tables; raise ConfigError."""
    _lookup("model.backbone", model_cfg.backbone, BACKBONES)
    if model_cfg.head.get("name") in PYRAMID_MODELS:
        if model_cfg.context is not None:
            raise ConfigError(
                f"model.context: must be null for model.head.name {model_cfg.head['name']!r} "
                "(a scale-selection model runs the backbone on an image pyramid itself)"
            )
        _lookup("model.head", model_cfg.head, PYRAMID_MODELS, supplied=_PYRAMID_SUPPLIED)
        return
    if model_cfg.context is not None:
        _lookup("model.context", model_cfg.context, CONTEXTS)
    _lookup("model.head", model_cfg.head, {**HEADS, **PYRAMID_MODELS})


def _lookup(
    key: str,
    spec: dict[str, Any],
    table: dict[str, Callable[..., nn.Module]],
    *,
    supplied: set[str] = _SUPPLIED,
) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """Resolve ``{name: ..., **options}`` to a builder and validated keyword arguments."""
    builder = _builder(key, spec, table)
    name = spec["name"]
    options = {k: v for k, v in spec.items() if k != "name"}
    parameters = _settable_parameters(builder, supplied)
    hints = typing.get_type_hints(builder.__init__ if inspect.isclass(builder) else builder)
    kwargs = {}
    for option, value in options.items():
        if option not in parameters:
            raise ConfigError(
                f"unknown key {key}.{option} for {name!r}; valid keys: "
                f"{', '.join(['name', *parameters])}"
            )
        kwargs[option] = coerce(value, hints.get(option, Any), f"{key}.{option}")
        if _LOSS_PARAMETER.fullmatch(option) and _any_negative(kwargs[option]):
            raise ConfigError(
                f"{key}.{option}: a loss weight or parameter must be 0 or more, got {value!r}"
            )
    return builder, kwargs


# Options that weigh a loss or a term of it (``aux_weight``, ``class_weights``, QGN's level
# ratio ``gamma``): a negative value turns minimising into maximising, silently. NaN and infinite
# values are refused for every option (``leanseg.config.check_plain_values``).
_LOSS_PARAMETER = re.compile(r"\w*_weights?|gamma")


def _any_negative(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(_any_negative(item) for item in value)
    return isinstance(value, int | float) and not isinstance(value, bool) and value < 0


def _builder(
    key: str, spec: dict[str, Any], table: dict[str, Callable[..., nn.Module]]
) -> Callable[..., nn.Module]:
    """The builder ``spec["name"]`` names in ``table``; a missing or unknown name lists them."""
    if "name" not in spec:
        raise ConfigError(f"{key}.name is missing; choose one of: {', '.join(sorted(table))}")
    name = spec["name"]
    if name not in table:
        raise ConfigError(
            f"{key}.name: unknown {name!r}; choose one of: {', '.join(sorted(table))}"
        )
    return table[name]


def _settable_parameters(
    builder: Callable[..., nn.Module], supplied: set[str] = _SUPPLIED
) -> list[str]:
    signature = inspect.signature(builder)
    return [
        name
        for name, parameter in signature.parameters.items()
        if name not in supplied
        and name != "self"
        and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
