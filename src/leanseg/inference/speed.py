"""Inference-speed options: BN folding, channels-last, reduced-precision autocast, torch.compile.

Issue 16. :class:`InferenceOptions` names what may be changed about how a trained model runs at
test time; :func:`prepare_model` applies the options that change the model (on a copy, so the
caller's model, e.g. the one being trained, is never touched) and :class:`InferenceRunner` the
ones that change each call (input memory format, autocast). ``Predictor`` (``leanseg predict``),
:func:`~leanseg.evaluation.evaluator.evaluate` (``leanseg eval``) and ``leanseg bench`` use them::

    prepared = prepare_model(model, InferenceOptions(dtype="bf16"), device=device)
    scorer = InferenceRunner(prepared.model, prepared.options)   # float32 scores, any options

The options, and what each costs in exactness:

- ``fold_bn``: every BatchNorm whose input is a convolution's output is folded into it
  (:func:`leanseg.nn.fold_bn.fold_batchnorm`). Same function, float rounding only.
- ``channels_last``: parameters and inputs in NHWC memory format, which oneDNN's convolutions
  prefer on the CPU. Same arithmetic in another order, float rounding only.
- ``dtype``: ``"bf16"`` runs under ``torch.autocast`` in bfloat16 (CPU or CUDA), ``"fp16"`` in
  float16 (CUDA only: CPU float16 autocast is refused, it is neither fast nor supported by
  every kernel). Not exact: 8 (bf16) or 11 (fp16) significant bits. Scores are returned as
  float32 either way.
- ``compile``: ``torch.compile`` (inductor) of the prepared model. Compilation happens on the
  first call of each input size and takes tens of seconds on a CPU (35-41 s measured).
- ``backend``: ``"torch"``, or ``"onnxruntime"``: the model (BN folded if ``fold_bn``) is exported
  to ONNX in-process, verified against PyTorch at two sizes (:func:`leanseg.export.export_onnx`),
  and run by onnxruntime on the CPU (fp32; channels-last and compile do not apply to it). Needs
  ``leanseg[export]``. A model that does not export (QGN, S&F, extra inputs) runs in PyTorch,
  with a note.

The defaults are the fastest exact settings measured on this project's CPU (2-core Xeon with
avx512_bf16, torch 2.13, EfficientNet-Lite0 + ladder at 1024x2048; figures in
``benchmarks/results/inference_options.json`` and ``docs/notes/issue-16.md``).

Nothing here crashes on a model an option does not suit. :func:`prepare_model` runs the plain
model once on a small random example (which also finds the BN layers to fold), then the copy with
the exact options (folding, channels-last) once, and each reduced dtype once, and compares the
scores with the plain model's; an option that raises, or changes the scores by more than float
tolerance (``CHECK_ATOL`` / ``CHECK_RTOL``), is dropped and a note says why (e.g. a QGN head
whose active sites move with the rounding of a folded BN). The exact options are tried one at a
time only when their joint check fails, to find the one at fault, and the checks run on one
thread (issue 28: five forwards on two threads beside a training run made loading a Lite0 ladder
take seconds). Reduced precision and ``torch.compile`` are not applied to heads whose work
depends on the data (:class:`~leanseg.nn.heads.base.CostReporting`, QGN's sparse path), whose
paths on real images the example check cannot vouch for.
Models that need inputs besides the image (:class:`~leanseg.nn.segmentor.ExtraInputs`) are
checked with neutral example inputs (:func:`example_inputs`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from leanseg.inference.model_inputs import HOW_INPUTS_FOLLOW_THE_IMAGE
from leanseg.nn.fold_bn import fold_pairs, trace_conv_bn_pairs
from leanseg.nn.heads.base import CostReporting
from leanseg.nn.segmentor import extra_inputs, input_channels

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
BACKENDS = ("torch", "onnxruntime")

# Tolerance of the example check of the exact options, on class scores (logits). Folding and
# another memory format only reorder float arithmetic: measured differences on the trained
# Lite0 ladder are around 1e-5 on logits of magnitude 10.
CHECK_ATOL = 1e-3
CHECK_RTOL = 1e-3

# Side of the example input, in multiples of at least this many pixels (rounded up to the
# model's size divisor): big enough for every level of a stride-32 backbone to have 2x3 cells.
_EXAMPLE_UNIT = 32


class InferenceOptionError(ValueError):
    """An option the device cannot run (fp16 autocast on the CPU, bf16 on an old GPU)."""


@dataclass(frozen=True)
class InferenceOptions:
    """How a trained model runs at test time (see the module docstring for each option).

    Attributes:
        fold_bn: fold BatchNorm into the preceding convolution. On by default: together with
            channels-last it was the fastest exact setting measured (Lite0 ladder, 1024x2048,
            2 threads: 0.64x of plain; channels-last alone 0.68x). Alone, in NCHW, it was
            slower (1.08x).
        channels_last: NHWC memory format for parameters and inputs. On by default (above).
        dtype: ``"fp32"``, ``"bf16"`` (autocast, CPU or CUDA) or ``"fp16"`` (autocast, CUDA).
            ``"fp32"`` by default: reduced precision changes predictions (bf16: 0.25x of plain,
            -0.08 mIoU points on CamVid val, 0.42 % of the labels changed).
        compile: ``torch.compile`` the prepared model. Off by default: a further 0.90x at
            1024x2048, but the first call of each input size compiles (35-41 s at 540x720 on
            2 threads with an empty inductor cache).
        backend: ``"torch"`` (default) or ``"onnxruntime"`` (CPU, fp32; see the module
            docstring).
    """

    fold_bn: bool = True
    channels_last: bool = True
    dtype: str = "fp32"
    compile: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InferenceOptionError(
                f"unknown inference dtype {self.dtype!r}; use one of {', '.join(DTYPES)}"
            )
        if self.backend not in BACKENDS:
            raise InferenceOptionError(
                f"unknown inference backend {self.backend!r}; use one of {', '.join(BACKENDS)}"
            )
        if self.backend == "onnxruntime" and (self.dtype != "fp32" or self.compile):
            asked = "torch.compile" if self.compile else f"dtype {self.dtype}"
            raise InferenceOptionError(
                f"backend onnxruntime runs the exported float32 graph: {asked} does not apply "
                "to it; drop one of the two"
            )

    @property
    def exact(self) -> bool:
        """Whether the options keep the model's float32 arithmetic (up to rounding order)."""
        return self.dtype == "fp32"

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``"fold-bn, channels-last, fp32"``."""
        parts = [name for name, on in self._flags() if on]
        backend = [] if self.backend == "torch" else [self.backend]
        return ", ".join([*backend, *parts, self.dtype])

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def _flags(self) -> list[tuple[str, bool]]:
        return [
            ("fold-bn", self.fold_bn),
            ("channels-last", self.channels_last),
            ("compile", self.compile),
        ]


# The options under which a model runs exactly as built: nothing folded, converted or compiled.
PLAIN = InferenceOptions(fold_bn=False, channels_last=False, dtype="fp32", compile=False)


def check_device(dtype: str, device: torch.device | str) -> None:
    """Refuse a ``dtype`` that ``device`` cannot run under autocast.

    Raises:
        InferenceOptionError: an unknown dtype, fp16 on a CPU, bf16 on a CUDA device without
            bfloat16, or reduced precision on a device type other than CPU and CUDA.
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise InferenceOptionError(
            f"unknown inference dtype {dtype!r}; use one of {', '.join(DTYPES)}"
        )
    if dtype == "fp32":
        return
    if device.type == "cpu":
        if dtype == "fp16":
            raise InferenceOptionError(
                "dtype fp16 is for CUDA devices only; on the CPU use bf16 (autocast in "
                "bfloat16) or fp32"
            )
        return
    if device.type == "cuda":
        if dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise InferenceOptionError(
                f"dtype bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16"
            )
        return
    raise InferenceOptionError(
        f"dtype {dtype} runs on cpu (bf16) or cuda (bf16, fp16), not on {device.type}"
    )


@contextlib.contextmanager
def autocast(dtype: str, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` in ``dtype`` on ``device``'s type; nothing for ``"fp32"``.

    Raises:
        InferenceOptionError: for a combination :func:`check_device` refuses.
    """
    device = torch.device(device)
    check_device(dtype, device)
    if dtype == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=DTYPES[dtype]):
        yield


class InferenceRunner(nn.Module):
    """``model`` called with the per-call options: input memory format and autocast.

    ``forward(images, **inputs)`` returns float32 class scores whatever the dtype, so the
    softmax, resizing and averaging of :func:`~leanseg.inference.predictor.predict_scores` stay in
    float32. ``size_divisor`` is the wrapped model's, so tiled inference cuts the same tiles.

    Args:
        model: maps images (and extra inputs) to class scores; usually
            :attr:`PreparedModel.model`, or a :class:`~leanseg.inference.site_cost.SiteCounter`
            around it.
        options: the options in effect (:attr:`PreparedModel.options`); ``channels_last`` and
            ``dtype`` are used here.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions) -> None:
        super().__init__()
        self.model = model
        self.options = options
        for attribute in ("size_divisor", "num_classes"):  # only where the model has them
            if hasattr(model, attribute):
                setattr(self, attribute, getattr(model, attribute))

    def forward(self, images: Tensor, **inputs: Tensor) -> Tensor:
        if self.options.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.options.dtype, images.device):
            scores = self.model(images, **inputs)
        return scores.float()


@dataclass(frozen=True)
class PreparedModel:
    """A model made ready for inference by :func:`prepare_model`.

    Attributes:
        model: the model to call: an eval-mode copy on the device with BN folded, in
            channels-last format and compiled as the options say, or the original model when no
            option changes it.
        options: the options in effect; an option dropped because the model does not suit it
            is off here.
        notes: one line per option that was asked for and dropped, saying why.
    """

    model: nn.Module
    options: InferenceOptions
    notes: tuple[str, ...] = ()


def example_inputs(model: nn.Module, example: Tensor) -> dict[str, Tensor]:
    """Neutral extra inputs for ``model`` on ``example`` images, for the example check.

    Per-pixel maps (``disparity``) are ones (one pixel of disparity everywhere), per-image values
    (``stereo_baseline``) ones; ``{}`` for models that need nothing besides the image.

    Raises:
        ValueError: for an input whose kind is not in
            :data:`~leanseg.inference.model_inputs.HOW_INPUTS_FOLLOW_THE_IMAGE`.
    """
    batch, _, height, width = example.shape
    inputs = {}
    for key in extra_inputs(model):
        kind = HOW_INPUTS_FOLLOW_THE_IMAGE.get(key)
        if kind == "map":
            inputs[key] = example.new_ones((batch, height, width))
        elif kind == "per_image":
            inputs[key] = example.new_ones((batch,))
        else:
            raise ValueError(f"no example value for model input {key!r}")
    return inputs


class WithExampleInputs(nn.Module):
    """A model that reads more than the image (depth-guided scale selection) fed neutral extra
    inputs (:func:`example_inputs`) shaped like each batch of images, so that ``leanseg bench``
    can measure its FLOPs, memory and latency like any model: the pyramid computes every level
    whatever the disparity, so the cost does not depend on it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.size_divisor = model.size_divisor

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, **example_inputs(self.model, images))

    def losses(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.losses(images, {**targets, **example_inputs(self.model, images)})


def example_images(model: nn.Module, device: torch.device | str) -> Tensor:
    """A random ``(1, C, 2u, 3u)`` batch, ``C`` the model's ``in_channels`` and ``u`` the smallest
    multiple of the model's size divisor of at least 32 pixels (seeded, so the check is the same
    every time)."""
    divisor = int(getattr(model, "size_divisor", None) or 1)
    unit = -(-_EXAMPLE_UNIT // divisor) * divisor
    generator = torch.Generator().manual_seed(0)
    channels = input_channels(model)
    return torch.randn(1, channels, 2 * unit, 3 * unit, generator=generator).to(device)


class _WithInputs(nn.Module):
    """``model(images, **inputs)`` as a one-argument module, so that BN folding can trace it."""

    def __init__(self, model: nn.Module, inputs: dict[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, **self.inputs)


def prepare_model(
    model: nn.Module,
    options: InferenceOptions,
    *,
    device: torch.device | str,
    example: Tensor | None = None,
) -> PreparedModel:
    """Apply the model-changing options (BN folding, channels-last, compile) to a copy of ``model``.

    ``model`` itself is left as it is (it may be the model being trained). The exact options
    are applied to one copy and checked on ``example`` together: its scores must match those of
    ``model`` within ``CHECK_ATOL`` / ``CHECK_RTOL``, and the dtype must run. When the joint
    check fails, folding and channels-last are checked alone (folding first, channels-last on top
    of what is kept), and an option that fails its check is dropped with a note. When no option
    changes the model, ``model`` is returned uncopied. The checks run on one thread
    (:func:`one_thread`).

    Args:
        model: maps normalised images (and its extra inputs) to class scores; moved to
            ``device`` and put in eval mode.
        options: what to apply.
        device: where the model runs.
        example: images for the check; default :func:`example_images`.

    Raises:
        InferenceOptionError: for a dtype ``device`` cannot run (:func:`check_device`).
    """
    device = torch.device(device)
    check_device(options.dtype, device)
    check_backend(options.backend, device)
    model = model.to(device).eval()
    if options == PLAIN:
        return PreparedModel(model=model, options=PLAIN)
    if options.backend == "onnxruntime":
        return _prepare_for_onnxruntime(model, options)
    if example is None:
        example = example_images(model, device)
    with one_thread():
        return _prepare_checked(model, options, example)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op threads set to one inside, restored after.

    For the example checks of :func:`prepare_model`: on their small input a second thread gains
    nothing, and beside a busy process it makes every operator wait for a core
    (:mod:`leanseg.runtime.cpu_share`). Loading a Lite0 ladder beside a training run on the 2-core
    CPU took 1.6 and 6.5 s with the checks on two threads, 0.64 and 0.66 s on one (timed by
    hand); with the joint check, median 0.73 s against 2.6 s before
    (``benchmarks/results/predictor_load.json``).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prepare_checked(model: nn.Module, options: InferenceOptions, example: Tensor) -> PreparedModel:
    """:func:`prepare_model` past its early returns: the options that change the model, applied
    and checked on ``example`` (``model`` in eval mode on the example's device)."""
    try:
        inputs = example_inputs(model, example)
        # One forward gives the reference scores and the conv-BN pairs that folding folds.
        pairs, output = trace_conv_bn_pairs(_WithInputs(model, inputs).eval(), example)
        reference = output.float()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        return _unchecked(model, options, example, err)
    pairs = [(conv.removeprefix("model."), bn.removeprefix("model.")) for conv, bn in pairs]

    def exact_copy(fold: bool, nhwc: bool) -> tuple[nn.Module, str | None]:
        """A copy of ``model`` folded and/or channels-last, and why it fails the check."""
        changed = copy.deepcopy(model)
        if fold:
            fold_pairs(changed, pairs)
        images = example
        if nhwc:
            changed = changed.to(memory_format=torch.channels_last)
            images = example.contiguous(memory_format=torch.channels_last)
        return changed, _check_scores(changed, images, inputs, reference, "fp32")

    name = type(model).__name__
    prepared, fold_bn, channels_last, notes = _apply_exact_options(model, options, exact_copy)
    # A head whose work depends on the data (QGN's sparse sites) may take paths on real images
    # that the example never reaches: only the exact options are applied to it.
    head = getattr(model, "head", None)
    data_dependent = type(head).__name__ if isinstance(head, CostReporting) else None
    dtype, note = _checked_dtype(prepared, options.dtype, example, inputs, data_dependent)
    notes += [f"{options.dtype} autocast not applied to {name}: {note}"] if note else []
    compiled = options.compile
    if compiled and data_dependent:
        compiled = False
        notes.append(
            f"torch.compile not applied to {name}: its {data_dependent} does data-dependent "
            "work (sparse sites), which is not compiled here (untried)"
        )
    elif compiled:
        prepared = _compile(prepared)
    if prepared is not model:
        zero_subnormal_weights(prepared)
    applied = InferenceOptions(
        fold_bn=fold_bn, channels_last=channels_last, dtype=dtype, compile=compiled
    )
    return PreparedModel(model=prepared, options=applied, notes=tuple(notes))


def _unchecked(
    model: nn.Module, options: InferenceOptions, example: Tensor, err: Exception
) -> PreparedModel:
    """``model`` as it is, in fp32, when it does not run on the example (raising ``err``):
    nothing can be checked; a note names the options asked for."""
    notes = []
    asked = [flag for flag, on in options._flags() if on]
    asked += [] if options.exact else [options.dtype]
    if asked:
        notes.append(
            f"{', '.join(asked)} not applied to {type(model).__name__}: it does not run on the "
            f"example input {tuple(example.shape)} ({_reason(err)})"
        )
    return PreparedModel(model=model, options=PLAIN, notes=tuple(notes))


def _apply_exact_options(
    model: nn.Module,
    options: InferenceOptions,
    exact_copy: Callable[[bool, bool], tuple[nn.Module, str | None]],
) -> tuple[nn.Module, bool, bool, list[str]]:
    """The model with the exact options (folding, channels-last) that pass the check applied,
    whether each is kept, and a note per option dropped.

    ``exact_copy(fold, nhwc)`` makes a changed copy and says why it fails the check (None when
    it passes).
    """
    name = type(model).__name__
    notes: list[str] = []
    # The exact options are applied to one copy and checked with one forward. Only when that
    # check fails is each tried alone, as they were before (folding first, then channels-last
    # on top of what was kept), to say which one the model does not suit.
    fold_bn, channels_last = options.fold_bn, options.channels_last
    prepared: nn.Module = model
    if not (fold_bn or channels_last):
        return prepared, fold_bn, channels_last, notes
    candidate, problem = exact_copy(fold_bn, channels_last)
    if problem is None:
        return candidate, fold_bn, channels_last, notes
    fold_problem = nhwc_problem = problem
    if fold_bn and channels_last:
        candidate, fold_problem = exact_copy(True, False)
        if fold_problem is None:
            prepared = candidate  # folding passed alone: channels-last is at fault
        else:
            candidate, nhwc_problem = exact_copy(False, True)
            if nhwc_problem is None:
                prepared = candidate
    if fold_bn and fold_problem is not None:
        fold_bn = False
        notes.append(f"BN folding not applied to {name}: {fold_problem}")
    if channels_last and nhwc_problem is not None:
        channels_last = False
        notes.append(f"channels-last not applied to {name}: {nhwc_problem}")
    return prepared, fold_bn, channels_last, notes


def _checked_dtype(
    prepared: nn.Module,
    dtype: str,
    example: Tensor,
    inputs: dict[str, Tensor],
    data_dependent: str | None,
) -> tuple[str, str | None]:
    """``dtype`` where ``prepared`` runs in it on the example, else ``"fp32"`` and why not.

    A model whose head does data-dependent work (``data_dependent`` names its class) stays in
    fp32 untried.
    """
    if dtype != "fp32" and data_dependent:
        return "fp32", (
            f"its {data_dependent} does data-dependent sparse work that the example check cannot "
            "cover (QGN's sparse convolution, torch.mm into a preallocated output, fails under "
            "autocast)"
        )
    if dtype != "fp32":
        problem = _check_scores(prepared, example, inputs, None, dtype)
        if problem is not None:
            return "fp32", problem
    return dtype, None


def check_backend(backend: str, device: torch.device | str) -> None:
    """Refuse a backend ``device`` cannot use (onnxruntime runs on the CPU here).

    Raises:
        InferenceOptionError: naming the backend and the device.
    """
    if backend == "onnxruntime" and torch.device(device).type != "cpu":
        raise InferenceOptionError(
            f"backend onnxruntime runs on the CPU (CPUExecutionProvider), not on "
            f"{torch.device(device)}; use --device cpu or the torch backend"
        )


def _prepare_for_onnxruntime(model: nn.Module, options: InferenceOptions) -> PreparedModel:
    """``model`` exported, verified and loaded into onnxruntime; in PyTorch with a note when a
    part of it does not export (the other options then apply as for the torch backend).

    Raises:
        InferenceOptionError: onnx / onnxruntime are not installed.
    """
    from leanseg.export import ExportError, onnx_available, onnxruntime_model

    missing = onnx_available()
    if missing:
        raise InferenceOptionError(f"backend onnxruntime: {missing}")
    name = type(model).__name__
    try:
        # Verified within the exact options' tolerance: folding rounds as in PyTorch.
        runtime = onnxruntime_model(model, fold_bn=options.fold_bn, tolerance=CHECK_ATOL)
    except ExportError as err:  # also a part that does not export (UnsupportedModelError)
        fallback = prepare_model(model, dataclasses.replace(options, backend="torch"), device="cpu")
        note = f"onnxruntime not used for {name}, it runs in PyTorch: {_reason(err)}"
        return dataclasses.replace(fallback, notes=(note, *fallback.notes))
    applied = dataclasses.replace(PLAIN, fold_bn=options.fold_bn, backend="onnxruntime")
    return PreparedModel(model=runtime, options=applied)


def zero_subnormal_weights(model: nn.Module) -> int:
    """Set the parameters and buffers of ``model`` below float32's smallest normal number
    (1.2e-38, e.g. weights that weight decay drove towards zero) to zero; returns how many.

    x86 CPUs compute on subnormal numbers many times slower than on others, and a product with
    such a weight is below any score's rounding, so the change is exact in practice. Applied by
    :func:`prepare_model` to its copy (never to the caller's model).
    """
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                small = (tensor != 0) & (tensor.abs() < tiny)
                count += int(small.sum())
                tensor.masked_fill_(small, 0.0)
    return count


def _check_scores(
    model: nn.Module,
    example: Tensor,
    inputs: dict[str, Tensor],
    reference: Tensor | None,
    dtype: str,
) -> str | None:
    """Why ``model`` fails the example check (raises, or differs from ``reference``), or None."""
    try:
        with torch.no_grad(), autocast(dtype, example.device):
            scores = model(example, **inputs).float()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        return _reason(err)
    if reference is None:
        return None
    if scores.shape != reference.shape:
        return f"scores of shape {tuple(scores.shape)}, expected {tuple(reference.shape)}"
    if not torch.allclose(scores, reference, atol=CHECK_ATOL, rtol=CHECK_RTOL):
        diff = (scores - reference).abs().max().item()
        return f"scores changed by up to {diff:.3g} on the example input"
    return None


def _compile(model: nn.Module) -> nn.Module:
    """``torch.compile`` of ``model``, keeping the attributes inference reads from it."""
    compiled = torch.compile(model)
    for attribute in ("size_divisor", "num_classes"):
        if hasattr(model, attribute):
            setattr(compiled, attribute, getattr(model, attribute))
    return compiled  # type: ignore[return-value]


def _reason(err: BaseException) -> str:
    """The first line of an exception's message, for a one-line note."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# --------------------------------------------------------------------------- command line


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The inference-option flags of ``predict``, ``eval`` and ``bench``.

    Every flag defaults to ``None`` (the :class:`InferenceOptions` default), so a command can tell
    an option the user gave from a default (:func:`options_from_args`, :func:`options_given`).
    """
    defaults = InferenceOptions()
    group = parser.add_argument_group(
        "inference speed",
        "How the trained model is run, not what it has learnt: options marked exact give the "
        "same label maps, the others may change scores in the last digits.",
    )
    on_off = {True: "on", False: "off"}
    group.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="merge each batch-normalisation layer into the convolution before it: one layer "
        f"less to run (exact; default {on_off[defaults.fold_bn]})",
    )
    group.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store weights and images with the colour channels last in memory (NHWC), which most "
        f"CPU kernels run faster (exact; default {on_off[defaults.channels_last]})",
    )
    group.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="compute in 16-bit floats where that is safe: faster on hardware that supports it, "
        "scores differ slightly; bf16 on cpu or cuda, fp16 on cuda only "
        f"(default {defaults.dtype})",
    )
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the model with torch.compile: faster per image, but the first image of "
        f"each size waits for the compilation (default {on_off[defaults.compile]})",
    )
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="run the model in PyTorch or, exported to ONNX and verified, in onnxruntime "
        f"(CPU, fp32; needs leanseg[export]; default {defaults.backend})",
    )


_FLAGS: dict[str, str] = {
    "fold_bn": "--fold-bn",
    "channels_last": "--channels-last",
    "dtype": "--dtype",
    "compile": "--compile",
    "backend": "--backend",
}


def options_from_args(args: argparse.Namespace) -> InferenceOptions:
    """:class:`InferenceOptions` from the flags :func:`add_inference_arguments` added."""
    given = {
        field: getattr(args, field) for field in _FLAGS if getattr(args, field, None) is not None
    }
    return dataclasses.replace(InferenceOptions(), **given)


def options_given(args: argparse.Namespace) -> list[str]:
    """The inference-option flags given on the command line (for refusing them where unused)."""
    return [flag for field, flag in _FLAGS.items() if getattr(args, field, None) is not None]
