"""Export a model to ONNX, verified in onnxruntime before the file is kept (``leanseg export``).

The exported graph maps images ``(B, 3, H, W)`` to class scores ``(B, C, H, W)`` at the input
size, as :meth:`Segmentor.forward <leanseg.nn.segmentor.Segmentor.forward>` does, with batch,
height and width dynamic. Its input contract is written into the file's ``metadata_props``
(:func:`input_contract`): by default the input is normalised RGB, ``(x / 255 - mean) / std``,
as the training data; with ``include_normalization`` the graph takes 0..255 RGB (float32, or
uint8) and normalises itself.

Choices (issue 16):

- **Exporter.** torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
  deprecated since torch 2.9 but present in 2.13. Measured here on a ResNet-18 model, it exports
  in about 1 s where the ``torch.export``-based one (``dynamo=True``) takes 10-20 s and needs
  ``onnxscript`` besides ``onnx``; both bake a size-derived tensor constant in where the model
  builds one (iGUM's grid scale did, fixed in :mod:`leanseg.nn.heads.igum`), and the
  TorchScript tracer also bakes in data-dependent branches. Neither is trusted on its word:
  every export is traced at a size that needs padding and then run in onnxruntime at two other
  sizes (one a multiple of the size divisor, one not, the second with batch 2) and compared with
  PyTorch; the file is written under a temporary name beside the target and renamed only when
  all differences are within the tolerance. ``exporter="dynamo"`` selects the other exporter.
- **Parts that do not export** are refused before tracing (:func:`refuse_unexportable`), for
  the reason their class declares (``onnx_unexportable`` of
  :class:`~leanseg.nn.heads.base.HeadCapabilities`, set beside each head): QGN's decoder
  evaluates a data-dependent set of sparse sites, which a trace would freeze to the sites of
  the example image; S&F's attention pools to fixed grids from a size-dependent map
  (``adaptive_avg_pool2d``), which ONNX cannot express with dynamic height and width (the SPP
  and PSP-SPP contexts pool with :func:`leanseg.nn.context.spp.pool_to_grid` instead, two
  matrix products that export). A model that needs inputs besides the image (depth-guided scale
  selection) is refused too.
- **BN folding** (``fold_bn``) uses :func:`leanseg.nn.fold_bn.fold_batchnorm` on the trace input
  before export; the verification then compares the ONNX graph with the *unfolded* model, so
  the printed difference covers folding and export together.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from leanseg.files.atomic import temp_path, terminate_raises
from leanseg.files.outputs import OutputKind, check_output_path
from leanseg.nn.backbones.base import IMAGENET_NORMALIZATION, Normalization
from leanseg.nn.fold_bn import fold_batchnorm
from leanseg.nn.segmentor import extra_inputs, input_channels

Exporter = Literal["torchscript", "dynamo"]
InputDtype = Literal["float32", "uint8"]

DEFAULT_OPSET = 17  # the newest opset every onnxruntime >= 1.16 runs (the `export` extra's floor)
DEFAULT_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported graph does not match PyTorch."""


class UnsupportedModelError(ExportError):
    """The model has a part that does not export (named in the message)."""


class VerificationError(ExportError):
    """onnxruntime's output differs from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class CheckResult:
    """One onnxruntime-vs-PyTorch comparison: input shape ``(B, 3, H, W)`` and max abs diff."""

    shape: tuple[int, int, int, int]
    max_abs_diff: float


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how it checked it."""

    path: Path
    checks: list[CheckResult]
    folded_bn: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max(check.max_abs_diff for check in self.checks)


def onnx_available() -> str | None:
    """``None`` when onnx and onnxruntime import, else what to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return f"ONNX export needs onnx and onnxruntime ({err}); pip install 'leanseg[export]'"
    return None


class NormalizedInput(nn.Module):
    """``model`` behind its input normalisation: takes RGB in 0..255 (float or uint8)."""

    def __init__(self, model: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images.float() / 255.0 - self.mean) / self.std)


def _base_size(size_divisor: int) -> tuple[int, int]:
    """The smallest multiple of ``size_divisor`` at least 96 x 128."""
    return -(-96 // size_divisor) * size_divisor, -(-128 // size_divisor) * size_divisor


def check_sizes(size_divisor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Default verification sizes: one a multiple of ``size_divisor``, one not (padded).

    The offsets 18 and -10 are no multiple of any power of two from 4 up.
    """
    height, width = _base_size(size_divisor)
    return (height, width), (height + 18, width - 10)


def trace_size(size_divisor: int) -> tuple[int, int]:
    """Size of the trace input: not a multiple of ``size_divisor``, so padding is traced."""
    height, width = _base_size(size_divisor)
    return height + 6, width + 22


def refuse_unexportable(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` naming the part of ``model`` that cannot export: one
    that needs inputs besides the image, or the first module whose class declares a reason in
    ``onnx_unexportable`` (:class:`~leanseg.nn.heads.base.HeadCapabilities`)."""
    needs = extra_inputs(model)
    if needs:
        raise UnsupportedModelError(
            f"{type(model).__name__} needs {', '.join(needs)} besides the image; ONNX export "
            "covers image-only models"
        )
    for name, module in model.named_modules():
        reason = getattr(module, "onnx_unexportable", None)
        if reason is not None:
            raise UnsupportedModelError(
                f"{type(module).__name__} ({name}) does not export to ONNX: {reason}"
            )


def input_contract(
    *,
    normalization: Normalization,
    include_normalization: bool,
    input_dtype: InputDtype,
    size_divisor: int,
    class_names: Sequence[str],
) -> dict[str, str]:
    """The ``metadata_props`` that tell a user of the ONNX file how to feed it."""
    if include_normalization:
        values = f"{input_dtype} RGB in 0..255; the graph applies (x / 255 - mean) / std itself"
    else:
        values = "float32 RGB, already normalised: (x / 255 - mean) / std with x in 0..255"
    return {
        "leanseg.input": f"images (B, {len(normalization.mean)}, H, W), any H and W; {values}",
        "leanseg.output": "scores (B, num_classes, H, W) at the input size; argmax = class id",
        "leanseg.normalization_included": str(include_normalization).lower(),
        "leanseg.mean": json.dumps(list(normalization.mean)),
        "leanseg.std": json.dumps(list(normalization.std)),
        "leanseg.size_divisor": str(size_divisor),
        "leanseg.size_divisor_note": "inputs are padded to a multiple of it inside the graph",
        "leanseg.class_names": json.dumps(list(class_names)),
    }


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    normalization: Normalization,
    class_names: Sequence[str] | None = None,
    include_normalization: bool = False,
    input_dtype: InputDtype = "float32",
    fold_bn: bool = False,
    opset: int = DEFAULT_OPSET,
    sizes: Sequence[tuple[int, int]] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    exporter: Exporter = "torchscript",
    force: bool = False,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path``, keeping the file only if onnxruntime matches PyTorch.

    Args:
        model: an image-only model, ``forward(images) -> scores``; it is not modified.
        path: the ``.onnx`` file to write.
        normalization: the input normalisation of the model (``cfg.data.mean`` / ``std``).
        class_names: names of the classes, index = class id (metadata only).
        include_normalization: the graph takes 0..255 RGB and normalises it itself.
        input_dtype: dtype of the graph's input with ``include_normalization`` (``uint8`` or
            ``float32``); without it the input is float32.
        fold_bn: fold BatchNorm into the preceding convolutions before export.
        opset: ONNX opset version.
        sizes: two or more ``(H, W)`` to verify at (default :func:`check_sizes`); the second
            and later run with batch 2.
        tolerance: largest max-abs difference of the scores accepted.
        exporter: ``"torchscript"`` (default, see the module docstring) or ``"dynamo"``.
        force: replace an ONNX model leanseg exported at ``path`` earlier (never another file,
            see :mod:`leanseg.files.outputs`).
        metadata: more ``metadata_props`` entries (source, checkpoint ...).

    Returns:
        The path, the checks with their max abs differences, and the number of BNs folded.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false, or it is not an ONNX
            model leanseg exported (:data:`ONNX_MODEL`).
        UnsupportedModelError: a part of the model does not export (named).
        ExportError: the exporter failed (its first message line is kept).
        VerificationError: onnxruntime differs from PyTorch by more than ``tolerance``; no
            file is left behind.
    """
    missing = onnx_available()
    if missing:
        raise ExportError(missing)
    path = check_output_path(path, ONNX_MODEL, force=force)
    model = model.eval()
    refuse_unexportable(model)
    if input_dtype != "float32" and not include_normalization:
        raise ExportError(
            "a uint8 input needs the normalisation in the graph (--include-normalization)"
        )
    size_divisor = int(getattr(model, "size_divisor", 32))
    sizes = list(sizes or check_sizes(size_divisor))
    if len(sizes) < 2:
        raise ExportError("verification needs at least two input sizes")
    channels = input_channels(model)
    example = _random_images(
        (1, channels, *trace_size(size_divisor)), include_normalization, input_dtype
    )

    reference: nn.Module = NormalizedInput(model, normalization) if include_normalization else model
    exported = reference
    folded = 0
    if fold_bn:
        plain = _normalized(example, normalization) if include_normalization else example
        folded_model, folded = _fold_bn_for_export(model, plain, tolerance)
        exported = (
            NormalizedInput(folded_model, normalization) if include_normalization else folded_model
        )

    props = {
        **input_contract(
            normalization=normalization,
            include_normalization=include_normalization,
            input_dtype=input_dtype if include_normalization else "float32",
            size_divisor=size_divisor,
            class_names=class_names or [str(i) for i in range(_num_classes(model))],
        ),
        "leanseg.bn_folded": str(folded),
        **(metadata or {}),
    }
    checks = _write_verified(
        path,
        exported,
        reference,
        example,
        props,
        sizes=sizes,
        include_normalization=include_normalization,
        input_dtype=input_dtype,
        opset=opset,
        exporter=exporter,
        tolerance=tolerance,
        force=force,
    )
    return ExportResult(path=path, checks=checks, folded_bn=folded, metadata=props)


def _fold_bn_for_export(
    model: nn.Module, example: Tensor, tolerance: float
) -> tuple[nn.Module, int]:
    """A copy of ``model`` with BN folded on the normalised ``example``
    (:func:`~leanseg.nn.fold_bn.fold_batchnorm`), and how many BNs were folded."""
    folded_model = fold_batchnorm(model, example, atol=tolerance, rtol=0.0)
    folded = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - sum(
        isinstance(m, nn.BatchNorm2d) for m in folded_model.modules()
    )
    return folded_model, folded


def _write_verified(
    path: Path,
    exported: nn.Module,
    reference: nn.Module,
    example: Tensor,
    props: dict[str, str],
    *,
    sizes: Sequence[tuple[int, int]],
    include_normalization: bool,
    input_dtype: InputDtype,
    opset: int,
    exporter: Exporter,
    tolerance: float,
    force: bool,
) -> list[CheckResult]:
    """Export ``exported`` traced on ``example`` with ``props`` into a temporary file, verify it
    against ``reference`` at ``sizes`` and rename it to ``path`` when within ``tolerance``.

    Returns:
        The checks, one per size.

    Raises:
        VerificationError: onnxruntime differs from PyTorch by more than ``tolerance``; no file
            is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Reserved with the mode a new file gets under the user's umask (mkstemp's would be 0600):
    # the exporter and the metadata writer rewrite it in place, then it is renamed over ``path``.
    # It is removed on any exception, Ctrl-C and SIGTERM (terminate_raises) too.
    temp = temp_path(path)
    with terminate_raises():
        temp.open("xb").close()
        try:
            _export(exported.eval(), example, temp, opset=opset, exporter=exporter)
            _write_metadata(temp, props)
            checks = verify_onnx(
                temp,
                reference,
                sizes,
                include_normalization=include_normalization,
                input_dtype=input_dtype,
            )
            worst = max(check.max_abs_diff for check in checks)
            if not worst <= tolerance:  # also catches NaN
                detail = ", ".join(f"{c.shape}: {c.max_abs_diff:.3g}" for c in checks)
                raise VerificationError(
                    f"onnxruntime differs from PyTorch by {worst:.3g} > tolerance "
                    f"{tolerance:g} ({detail}); {path} not written"
                )
            # Checked again: the export took a while, and a file may have appeared there.
            check_output_path(path, ONNX_MODEL, force=force)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    return checks


def verify_onnx(
    path: str | Path,
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    *,
    include_normalization: bool = False,
    input_dtype: InputDtype = "float32",
    seed: int = 0,
) -> list[CheckResult]:
    """Max abs difference of the ONNX graph's scores from ``model``'s, per size (onnxruntime CPU).

    The first size runs with batch 1, the others with batch 2 (so a frozen batch size shows).
    """
    session = _session(path)
    name = session.get_inputs()[0].name
    channels = session.get_inputs()[0].shape[1]  # static in the graphs export_onnx writes
    if not isinstance(channels, int):
        channels = input_channels(model)
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for index, (height, width) in enumerate(sizes):
        shape = (1 if index == 0 else 2, channels, height, width)
        images = _random_images(shape, include_normalization, input_dtype, generator)
        with torch.no_grad():
            expected = model(images).numpy()
        got = session.run(None, {name: images.numpy()})[0]
        if got.shape != expected.shape:
            raise VerificationError(
                f"onnxruntime returned shape {got.shape} for input {shape}, "
                f"PyTorch {expected.shape}"
            )
        checks.append(CheckResult(shape, float(np.abs(got - expected).max())))
    return checks


def onnxruntime_latency(
    model: nn.Module | str | Path,
    size: tuple[int, int],
    *,
    batch: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    fold_bn: bool = False,
) -> dict[str, Any]:
    """Median latency of one forward in onnxruntime (CPU), for ``leanseg bench``.

    Args:
        model: a model (exported to a temporary file, normalised input) or an ``.onnx`` path.
        size: ``(H, W)`` of the input.
        batch: batch size.
        repeats: timed runs.
        warmup: untimed runs first.
        threads: onnxruntime intra-op threads (default: torch's thread count, so both backends
            compare on the same cores).
        fold_bn: fold BN before export (a model only; onnxruntime fuses most of them anyway).

    Returns:
        ``{"backend": "onnxruntime", "median_ms", "min_ms", "times_ms", "threads"}``.
    """
    missing = onnx_available()
    if missing:
        raise ExportError(missing)
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, nn.Module):
            model = model.eval()
            refuse_unexportable(model)
            divisor = int(getattr(model, "size_divisor", 32))
            example = torch.randn(1, input_channels(model), *trace_size(divisor))
            if fold_bn:
                model = fold_batchnorm(model, example)
            onnx_path = Path(folder) / "model.onnx"
            _export(model, example, onnx_path, opset=DEFAULT_OPSET, exporter="torchscript")
        else:
            onnx_path = Path(model)
        session = _session(onnx_path, threads=threads)
        name, channels = session.get_inputs()[0].name, session.get_inputs()[0].shape[1]
        if not isinstance(channels, int):
            channels = input_channels(model) if isinstance(model, nn.Module) else 3
        shape = (batch, channels, *size)
        images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        for _ in range(warmup):
            session.run(None, {name: images})
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, {name: images})
            times.append((time.perf_counter() - start) * 1000.0)
    return {
        "backend": "onnxruntime",
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "times_ms": times,
        "threads": threads,
    }


class OnnxRuntimeModel(nn.Module):
    """An ONNX graph run by onnxruntime on the CPU, called like the PyTorch model it came from.

    ``forward(images)`` takes normalised images ``(B, 3, H, W)`` (a torch tensor, any memory
    format) and returns float32 class scores ``(B, C, H, W)`` as a torch tensor, so
    :func:`~leanseg.inference.predictor.predict_scores` and tiled inference use it unchanged.
    ``size_divisor`` and ``num_classes`` are read from the graph's metadata
    (:func:`input_contract`). The graph is held in memory: the file may be removed after loading.

    Args:
        path: an ``.onnx`` file written by :func:`export_onnx` without ``include_normalization``.
        threads: onnxruntime intra-op threads (default: torch's thread count).

    Raises:
        ExportError: onnx / onnxruntime missing, or a graph that takes 0..255 RGB.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        missing = onnx_available()
        if missing:
            raise ExportError(missing)
        self.threads = threads or torch.get_num_threads()
        self.session = _session(path, threads=self.threads)
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("leanseg.normalization_included") == "true":
            raise ExportError(
                f"{path}: the graph normalises its input itself (--include-normalization); "
                "export it without that to run it in place of the PyTorch model"
            )
        self.size_divisor = int(props.get("leanseg.size_divisor", "32"))
        self.num_classes = len(json.loads(props.get("leanseg.class_names", "[]")))
        self._input = self.session.get_inputs()[0].name

    def forward(self, images: Tensor) -> Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        (scores,) = self.session.run(None, {self._input: array})
        return torch.from_numpy(scores).to(images.device)


def onnxruntime_model(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
) -> OnnxRuntimeModel:
    """``model`` exported to a temporary ONNX file, verified, and loaded into onnxruntime.

    The export is :func:`export_onnx`'s (verified against ``model`` at two sizes within
    ``tolerance``); the temporary file is removed once onnxruntime holds the graph.

    Raises:
        UnsupportedModelError: a part of the model does not export (named).
        ExportError: onnx / onnxruntime missing, the exporter failed, or verification failed.
    """
    # Metadata only: the graph takes normalised images, as the model does.
    backbone = getattr(model, "backbone", None)
    normalization = getattr(backbone, "normalization", IMAGENET_NORMALIZATION)
    with tempfile.TemporaryDirectory(prefix="leanseg-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(
            model,
            path,
            normalization=normalization,
            fold_bn=fold_bn,
            tolerance=tolerance,
            metadata={"leanseg.source": "in-process export for the onnxruntime backend"},
        )
        return OnnxRuntimeModel(path, threads=threads)


# --------------------------------------------------------------------------- helpers


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0))


def _normalized(images: Tensor, normalization: Normalization) -> Tensor:
    mean = torch.tensor(normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _random_images(
    shape: tuple[int, ...],
    include_normalization: bool,
    input_dtype: InputDtype,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inputs in the graph's contract: 0..255 RGB with the normalisation inside, else N(0, 1)."""
    if not include_normalization:
        return torch.randn(shape, generator=generator)
    images = torch.randint(0, 256, shape, generator=generator)
    return images.to(torch.uint8 if input_dtype == "uint8" else torch.float32)


def _export(
    model: nn.Module, example: Tensor, path: Path, *, opset: int, exporter: Exporter
) -> None:
    """Run torch's exporter with dynamic batch, height and width; its chatter is swallowed."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracer and deprecation warnings: verified below
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=1024)
                height = torch.export.Dim("height", min=1, max=16384)
                width = torch.export.Dim("width", min=1, max=16384)
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    input_names=["images"],
                    output_names=["scores"],
                    dynamic_shapes={"images": {0: batch, 2: height, 3: width}},
                    opset_version=max(opset, 18),  # the dynamo exporter starts at opset 18
                )
                program.save(str(path))
            else:
                axes = {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    input_names=["images"],
                    output_names=["scores"],
                    dynamic_axes={"images": axes, "scores": axes},
                    opset_version=opset,
                    do_constant_folding=True,
                )
    except Exception as err:  # the exporters raise many types; keep the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {first[:400]}") from err


def is_leanseg_onnx(path: Path) -> bool:
    """Whether ``path`` is an ONNX model leanseg exported: its metadata holds the input contract
    (:func:`input_contract`). Never raises; without ``onnx`` installed the answer is no."""
    try:
        import onnx

        if path.stat().st_size >= 2**31:  # protobuf's limit: no model file is that large
            return False
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # no onnx, an unreadable file, bytes protobuf cannot parse
        return False
    keys = {entry.key for entry in graph.metadata_props}
    return {"leanseg.input", "leanseg.output"} <= keys


# What ``--force`` may replace at ``--out`` (leanseg.files.outputs).
ONNX_MODEL = OutputKind("an ONNX model leanseg exported", is_leanseg_onnx)


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    existing = {entry.key: entry for entry in graph.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _session(path: str | Path, threads: int = 1) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
