"""Checkpoint files: written atomically, read with errors that name the file.

A checkpoint is a ``torch.save`` dict:

- ``model``: the model's ``state_dict``;
- ``config``: the resolved config as a plain dict (so a checkpoint alone rebuilds its model);
- ``iteration``: the number of optimisation steps done;
- ``optimizer``, ``scaler``, ``rng``: training state, absent from weights-only exports;
- ``best``: ``{"metric": name, "value": float, "iteration": int}`` of the best evaluation so far;
- ``leanseg_version``.

Every value is a tensor or a plain Python value (dict, list, tuple, str, int, float, bool, None):
files are read with ``torch.load(weights_only=True)``, which refuses any other object instead of
running the code a pickle can carry. Checkpoints written before that rule stored the NumPy RNG
state as an array: NumPy's array, scalar and dtype constructors are allowed too, to read them.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a run killed at any moment leaves either the old or the new file, never a torn one.

Sizes are checked before anything is loaded (:func:`check_checkpoint_sizes`, issue 27): the
file's size, and, in the zip archive ``torch.save`` writes, the directory of records (how many,
how large, whether compressed) and the size of the pickled structure. What a record holds is
read by torch only after that, and torch refuses a tensor that claims more bytes than its
record holds before allocating it (measured on torch 2.13: a storage claiming 8 GB over a
16-byte record raises ``record size (16 bytes) does not match expected size``), so no
allocation exceeds the records the directory lists. ``torch.load(mmap=True)`` is not used to
look first: it maps a compressed record's bytes as they are, and sizes a storage that claims
more than its record by the end of the file instead of refusing it.
"""

from __future__ import annotations

import pickle
import struct
import warnings
import zipfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leanseg.config import limits
from leanseg.files.atomic import atomic_write


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


# Records in one checkpoint archive: one per tensor storage and a few more; a model with Adam
# state has a few thousand.
MAX_RECORDS = 100_000


def check_checkpoint_sizes(
    path: str | Path,
    max_bytes: int = limits.MAX_CHECKPOINT_BYTES,
    max_pickle_bytes: int = limits.MAX_CHECKPOINT_PICKLE_BYTES,
) -> None:
    """Refuse a checkpoint whose sizes exceed the limits, reading only its directory.

    - the file: at most ``max_bytes``;
    - a zip archive (``torch.save`` since torch 1.6): at most :data:`MAX_RECORDS` records, each
      stored uncompressed (as torch writes them: a compressed record could inflate to any
      size), the pickled structure (``data.pkl``) at most ``max_pickle_bytes``;
    - a file of the format before torch 1.6 (not a zip): its size only; torch reads each
      storage's stated size from the file and fails at the file's end.

    Raises:
        CheckpointError: naming the file, the size found and the limit.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(
            f"{path}: {size} bytes ({_gib(size)}) is more than the checkpoint size limit of "
            f"{max_bytes} bytes ({_gib(max_bytes)}); refused before reading"
        )
    if not zipfile.is_zipfile(path):
        return
    records = _zip_record_count(path)
    if records > MAX_RECORDS:
        raise CheckpointError(
            f"{path}: {records} records in the archive, more than {MAX_RECORDS}; refused before "
            "reading"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint archive ({err})") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(
                f"{path}: record {info.filename} is compressed ({info.compress_size} bytes "
                f"inflating to {info.file_size}); torch.save stores records uncompressed, so "
                "this is not a checkpoint it wrote; refused before reading"
            )
        if info.filename.endswith("data.pkl") and info.file_size > max_pickle_bytes:
            raise CheckpointError(
                f"{path}: its pickled structure ({info.filename}) is {_gib(info.file_size)}, "
                f"more than {_gib(max_pickle_bytes)} (a checkpoint's is kilobytes to a few "
                "megabytes); refused before reading"
            )


def _zip_record_count(path: Path) -> int:
    """Records an archive's end-of-directory record states, read before the directory is.

    The zip64 end record is read where the classic one holds its ``0xFFFF`` marker. 0 when
    neither is found (``zipfile`` reports such files itself).
    """
    with path.open("rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        tail_size = min(end, 22 + 65_535 + 20 + 56)  # end record, comment, zip64 locator, end
        handle.seek(end - tail_size)
        tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return 0
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator < 0:
        return count
    zip64_end = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
    with path.open("rb") as handle:
        handle.seek(zip64_end)
        record = handle.read(56)
    if len(record) < 40 or record[:4] != b"PK\x06\x06":
        return count
    return struct.unpack("<Q", record[32:40])[0]


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else err.__class__.__name__


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename)."""
    return atomic_write(path, lambda handle: torch.save(payload, handle), fsync=True)


# What the NumPy values of checkpoints from older leanseg versions (the RNG state array, a NumPy
# float as best mIoU) unpickle with: array, scalar and dtype constructors only.
_LEGACY_NUMPY_GLOBALS = [
    np.zeros(1).__reduce__()[0],  # numpy.(_)core.multiarray._reconstruct
    np.float64(0).__reduce__()[0],  # numpy.(_)core.multiarray.scalar
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),  # the state's 624 key words
    type(np.dtype(np.float64)),  # a best-mIoU value stored as a NumPy scalar
]


def _allow_legacy_numpy() -> AbstractContextManager[Any]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return safe_globals(_LEGACY_NUMPY_GLOBALS) if safe_globals else nullcontext()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or a bare state dict).

    Only tensors and plain values are read (``weights_only=True``); a file holding any other
    Python object is refused before anything in it runs. Sizes are checked first
    (:func:`check_checkpoint_sizes`).

    Raises:
        CheckpointError: the file is missing, torn, not a checkpoint, holds other objects, or
            is larger than the limits.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_checkpoint_sizes(path)
    try:
        with warnings.catch_warnings(), _allow_legacy_numpy():
            # torch warns about pickles of other protocols before refusing or reading them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: not a weights-only checkpoint (torn, or it holds Python objects "
            "other than tensors and plain values; nothing in it was run)"
        ) from None
    except Exception as err:  # torch raises several types for torn or foreign files
        text = str(err)
        if "does not match expected size" in text or "resize storage" in text:
            # torch's check of a tensor against its record, before allocating (module docstring)
            raise CheckpointError(
                f"{path}: a tensor claims more bytes than the file holds for it "
                f"({_first_line(err)}); refused before allocating"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({err.__class__.__name__})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(payload).__name__}")
    if "model" not in payload:
        # A bare state dict, as torchvision publishes weights.
        payload = {"model": payload}
    return payload


def load_model_state(model: nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """Load ``state`` into ``model`` exactly; on mismatch, say which keys and shapes differ."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    wrong_shape = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
        if missing:
            problems.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (different architecture or class "
            f"count): {'; '.join(problems)}"
        )
    model.load_state_dict(state)
