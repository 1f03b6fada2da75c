"""Bad inputs that set a size, for ``benchmarks/robustness/bad_inputs.py`` (issue 27, item 4).

Every input that sets how much memory or time leanseg spends is given a value far beyond what
any use needs (a crop of 100000 x 100000, a batch of a million, a PNG whose header claims ten
gigapixels, a checkpoint whose archive would inflate without end), and must be refused with
one line naming the key, flag or file and the value, before the memory is spent. A few cases
check the other side (``expect: ok``): thread counts above the cores are clamped with a
warning, and a 6-megapixel image is segmented tile by tile inside the harness's 4 GiB
address-space limit.

:func:`size_cases` returns the cases in the dict format that ``bad_inputs.py`` runs (each in a
``python -m leanseg`` process, in ``workdir``, under a memory and a time limit). Their inputs are
made by each case's ``setup(workdir)``, cheaply: a huge image is a hand-written header, a huge
checkpoint a small crafted archive (or a sparse file), so that no case spends the memory its
input claims before leanseg is even run.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

KLASS = "sizes"
CHECKPOINT = "tiny.pt"  # a real checkpoint of a small model, made once by the first case needing it

Setup = Callable[[Path], None]

# A small run: random ResNet-18 weights, a bilinear head, four tiny synthetic scenes.
TINY: dict[str, Any] = {
    "model": {"backbone": {"name": "resnet18", "pretrained": None}, "head": {"name": "bilinear"}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_samples": 4, "size": [64, 96], "seed": 0},
        "crop_size": [64, 64],
        "scale_range": [0.75, 1.25],
        "batch_size": 2,
        "num_workers": 0,
    },
    "train": {"max_iters": 1, "eval_interval": 1, "checkpoint_interval": 1, "device": "cpu"},
    "eval": {"max_images": 1},
}


# --------------------------------------------------------------------------- inputs


def _config(name: str, **values: Any) -> Setup:
    """Setup writing ``NAME.yaml``: :data:`TINY` run into ``runs/NAME`` with dotted ``values``."""

    def setup(workdir: Path) -> None:
        raw = yaml.safe_load(yaml.safe_dump(TINY))
        raw["work_dir"] = f"runs/{name}"
        for dotted, value in values.items():
            section = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                section = section.setdefault(key, {})
            section[leaf] = value
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(raw))

    return setup


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG of a signature, an IHDR claiming ``width x height`` RGB pixels and an IEND: what
    Pillow reads to learn the size, without one pixel."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))


def jpeg_header(path: Path, width: int, height: int) -> None:
    """A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to claim ``width x height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


def bmp_header(path: Path, width: int, height: int) -> None:
    """A real 4 x 4 BMP whose info header is rewritten to claim ``width x height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, format="BMP")
    data = bytearray(buffer.getvalue())
    data[18:26] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(data))


def ppm_header(path: Path, width: int, height: int) -> None:
    """A binary PPM header claiming ``width x height``, followed by a few bytes."""
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode() + bytes(64))


def _image(name: str, write: Callable[[Path, int, int], None], width: int, height: int) -> Setup:
    def setup(workdir: Path) -> None:
        (workdir / "images").mkdir(exist_ok=True)
        write(workdir / "images" / name, width, height)

    return setup


def real_png(path: Path, height: int, width: int) -> None:
    """A real RGB PNG of ``height x width`` (gradients), written a block of rows at a time."""
    from leanseg.visualize import write_png

    columns = np.arange(width)

    def blocks():
        step = max(1, 1_000_000 // width)
        for top in range(0, height, step):
            rows = np.arange(top, min(height, top + step))[:, None]
            red = np.broadcast_to(rows * 255 // height, (len(rows), width))
            green = np.broadcast_to(columns * 255 // width, red.shape)
            blue = ((rows // 50 + columns // 50) % 2) * 180
            yield np.stack([red, green, blue], axis=-1).astype(np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, height, width, blocks(), channels=3)


def _real_image(name: str, height: int, width: int) -> Setup:
    def setup(workdir: Path) -> None:
        path = workdir / "images" / name
        if not path.exists():
            real_png(path, height, width)

    return setup


def ensure_checkpoint(workdir: Path) -> None:
    """``workdir/tiny.pt``: EfficientNet-Lite0 + bilinear head, random weights, as the trainer
    writes a checkpoint (weights and resolved config); made once."""
    path = workdir / CHECKPOINT
    if path.exists():
        return
    import torch

    from leanseg.files.checkpoint import save_checkpoint
    from leanseg.models import build_model, run_config_from_dict

    raw = {
        "model": {
            "backbone": {"name": "efficientnet_lite0", "pretrained": None},
            "head": {"name": "bilinear"},
        },
        "data": {"dataset": "synthetic"},
    }
    cfg = run_config_from_dict(raw)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0}, path)


def _small_torch_zip() -> dict[str, bytes]:
    """The records of ``torch.save({"w": torch.ones(4)})``, by name."""
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def _write_zip(path: Path | io.BytesIO, records: dict[str, bytes], compress: bool = False) -> None:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in records.items():
            archive.writestr(name, data)


def _pickle_record(records: dict[str, bytes]) -> str:
    return next(name for name in records if name.endswith("data.pkl"))


def checkpoint_claiming_bytes(path: Path) -> None:
    """A torch archive whose one storage claims 2^31 - 1 floats (8 GB) over a 16-byte record."""
    records = _small_torch_zip()
    name = _pickle_record(records)
    old = b"X\x03\x00\x00\x00cpuq\x06K\x04"  # location 'cpu', then the element count 4
    assert old in records[name], "torch's pickle layout changed"
    records[name] = records[name].replace(
        old, b"X\x03\x00\x00\x00cpuq\x06J" + struct.pack("<i", 2**31 - 1)
    )
    _write_zip(path, records)


def checkpoint_claiming_shape(path: Path) -> None:
    """A torch archive whose one tensor claims a shape of 2^31 - 1 elements over 4 stored."""
    records = _small_torch_zip()
    name = _pickle_record(records)
    assert b"K\x04\x85" in records[name], "torch's pickle layout changed"
    records[name] = records[name].replace(
        b"K\x04\x85", b"J" + struct.pack("<i", 2**31 - 1) + b"\x85"
    )
    _write_zip(path, records)


def checkpoint_inflating(path: Path) -> None:
    """A torch archive whose storage record is deflated, inflating to 256 MiB of zeros from
    about 256 KiB: a zip bomb in small (torch.save never compresses)."""
    records = _small_torch_zip()
    storage = next(name for name in records if "/data/" in name)
    chunk, count = bytes(1 << 20), 64
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip stores it
    body = b"".join(compressor.compress(chunk) for _ in range(count)) + compressor.flush()
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():  # stored, as torch stores them
            if name != storage:
                archive.writestr(name, data)
        # The record is written already compressed, through zipfile's own bookkeeping.
        info = zipfile.ZipInfo(storage)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.CRC, info.compress_size, info.file_size = crc, len(body), count * len(chunk)
        info.header_offset = archive.fp.tell()
        archive.fp.write(info.FileHeader(zip64=False))
        archive.fp.write(body)
        archive.start_dir = archive.fp.tell()
        archive.filelist.append(info)
        archive.NameToInfo[storage] = info


def checkpoint_big_pickle(path: Path) -> None:
    """A stored torch archive whose pickled structure is 65 MiB (a bytes value in the dict)."""
    records = _small_torch_zip()
    name = _pickle_record(records)
    blob = bytes(65 << 20)
    # A pickle of {"model": {}, "note": blob}, in place of torch's.
    records[name] = b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01}q\x02X\x04\x00\x00\x00noteq\x03"
    records[name] += b"B" + struct.pack("<I", len(blob)) + blob + b"q\x04u."
    _write_zip(path, records)


def checkpoint_claiming_records(path: Path) -> None:
    """A small stored torch archive whose end record (zip64) claims 10^9 records: a directory
    that would take gigabytes to list."""
    buffer = io.BytesIO()
    _write_zip(buffer, _small_torch_zip())
    data = buffer.getvalue()
    at = data.rfind(b"PK\x05\x06")
    directory_size, directory_offset = struct.unpack("<II", data[at + 12 : at + 20])
    count = 10**9
    zip64_end = struct.pack(
        "<4sQHHIIQQQQ",
        b"PK\x06\x06",
        44,
        45,
        45,
        0,
        0,
        count,
        count,
        directory_size,
        directory_offset,
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, directory_size, directory_offset, 0
    )
    path.write_bytes(data[:at] + zip64_end + locator + end)


def checkpoint_sparse(path: Path) -> None:
    """A sparse file of 4 GiB + 1 byte: over the checkpoint size limit, nothing on the disk."""
    with path.open("wb") as handle:
        handle.truncate(4 * 2**30 + 1)


def _file(name: str, write: Callable[[Path], None]) -> Setup:
    def setup(workdir: Path) -> None:
        path = workdir / name
        if not path.exists():
            write(path)

    return setup


def _folder_dataset(name: str, first_image: Callable[[Path], None]) -> Setup:
    """A two-class ``folder`` dataset ``NAME/`` whose first training image is ``first_image``,
    and ``NAME.yaml`` training on it."""

    def setup(workdir: Path) -> None:
        root = workdir / name
        for split in ("train", "val"):
            for index in range(2):
                image = root / "images" / split / f"s{index}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (40 * index, 90, 160)).save(image)
                label = np.zeros((64, 64), np.uint8)
                label[:, 32:] = 1
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(label).save(root / "labels" / split / f"s{index}.png")
        first_image(root / "images" / "train" / "s0.png")
        _config(
            name,
            **{
                "data.dataset": "folder",
                "data.root": name,
                "data.classes": ["left", "right"],
                "data.options": {},
            },
        )(workdir)

    return setup


def _all(*setups: Setup) -> Setup:
    def setup(workdir: Path) -> None:
        for step in setups:
            step(workdir)

    return setup


# --------------------------------------------------------------------------- cases


def _case(
    name: str,
    argv: list[str],
    setup: Setup | None = None,
    expect: str = "refused",
    writes: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "name": f"sizes: {name}",
        "klass": KLASS,
        "argv": argv,
        "expect": expect,
        "writes": list(writes),
        "setup": setup,
    }


def _train_case(name: str, **values: Any) -> dict[str, Any]:
    """``leanseg train`` on :data:`TINY` with ``values``: refused at load, nothing written."""
    slug = "cfg_" + "".join(c if c.isalnum() else "_" for c in name)[:60]
    return _case(name, ["train", f"{slug}.yaml", "--no-progress"], _config(slug, **values))


def _predict(image: str, out: str, *extra: str, checkpoint: str = CHECKPOINT) -> list[str]:
    return ["predict", "--checkpoint", checkpoint, f"images/{image}", "--out", out, *extra]


def size_cases(workdir: Path) -> list[dict[str, Any]]:
    """The size cases (module docstring), their inputs made in ``workdir`` by their setups."""
    del workdir  # every path is relative to the folder the cases run in
    huge = 100_000
    cases = [
        # Config values that size a batch, refused when the config is read.
        _train_case("crop 100000 x 100000", **{"data.crop_size": [huge, huge]}),
        _train_case("crop side 70000", **{"data.crop_size": [70_000, 16]}),
        _train_case("crop of 81 MP", **{"data.crop_size": [9000, 9000]}),
        _train_case("batch of a million", **{"data.batch_size": 10**6}),
        _train_case("batch of 4097", **{"data.batch_size": 4097}),
        _train_case(
            "batch 64 x 2048 x 2048 crops",
            **{"data.batch_size": 64, "data.crop_size": [2048, 2048]},
        ),
        _train_case(
            "crop schedule stage of 100000",
            **{"data.crop_schedule": [{"crop_size": [huge, huge], "until": 1}]},
        ),
        _train_case("training rescale up to 1000x", **{"data.scale_range": [0.5, 1000.0]}),
        _train_case("eval scale 1000", **{"eval.scales": [1000.0]}),
        _train_case("17 eval scales", **{"eval.scales": [1.0] * 17}),
        _train_case("boundary width 10^9", **{"eval.boundary_width": 10**9}),
        _train_case("boundary width 65", **{"eval.boundary_width": 65}),
        _train_case("CRF iterations 10^9", **{"eval.crf": {"iterations": 10**9}}),
        _train_case("eval batch of a million", **{"eval.batch_size": 10**6}),
        _train_case("a million loader workers", **{"data.num_workers": 10**6}),
        _train_case("synthetic scenes 100000 x 100000", **{"data.options.size": [huge, huge]}),
        _case(
            "train.num_threads 100000 clamped to the cores",
            ["train", "threads.yaml", "--no-progress"],
            _config("threads", **{"train.num_threads": 100_000}),
            expect="ok",
            writes=("runs",),
        ),
        # eval: the config (with --scales) is read before the checkpoint.
        _case(
            "eval --scales 1000",
            ["eval", "eval_scales.yaml", "--checkpoint", "none.pt", "--scales", "1000"],
            _config("eval_scales"),
        ),
        # Images: the size is read from the header and refused before decoding.
        _case(
            "predict PNG header of 100000 x 100000",
            _predict("huge.png", "out_huge_png"),
            _all(ensure_checkpoint, _image("huge.png", png_header, huge, huge)),
        ),
        _case(
            "predict PNG header of 20000 x 20000 (400 MP)",
            _predict("big.png", "out_big_png"),
            _all(ensure_checkpoint, _image("big.png", png_header, 20_000, 20_000)),
        ),
        _case(
            "predict JPEG header of 65535 x 65535",
            _predict("huge.jpg", "out_huge_jpg"),
            _all(ensure_checkpoint, _image("huge.jpg", jpeg_header, 65_535, 65_535)),
        ),
        _case(
            "predict BMP header of 100000 x 100000",
            _predict("huge.bmp", "out_huge_bmp"),
            _all(ensure_checkpoint, _image("huge.bmp", bmp_header, huge, huge)),
        ),
        _case(
            "predict PPM header of 100000 x 100000",
            _predict("huge.ppm", "out_huge_ppm"),
            _all(ensure_checkpoint, _image("huge.ppm", ppm_header, huge, huge)),
        ),
        _case(
            "predict a 6 MP image above --max-image-megapixels 5",
            _predict("six.png", "out_six_refused", "--max-image-megapixels", "5"),
            _all(ensure_checkpoint, _real_image("six.png", 1732, 3464)),
        ),
        _case(
            "predict --scales 1000",
            _predict("small.png", "out_scales", "--scales", "1000"),
            _all(ensure_checkpoint, _real_image("small.png", 64, 96)),
        ),
        _case(
            "predict 17 scales",
            _predict("small.png", "out_17_scales", "--scales", *["1"] * 17),
            _all(ensure_checkpoint, _real_image("small.png", 64, 96)),
        ),
        _case(
            "predict a 6 MP image in 1 MP tiles",
            _predict("six.png", "out_six", "--max-megapixels", "1"),
            _all(ensure_checkpoint, _real_image("six.png", 1732, 3464)),
            expect="ok",
            writes=("out_six",),
        ),
        _case(
            "data check: a training image whose header claims 20000 x 20000",
            ["data", "check", "header_data.yaml"],
            _folder_dataset("header_data", lambda path: png_header(path, 20_000, 20_000)),
        ),
        _case(
            "train: a training image whose header claims 20000 x 20000",
            ["train", "header_train.yaml", "--no-progress"],
            _folder_dataset("header_train", lambda path: png_header(path, 20_000, 20_000)),
        ),
        _case(
            "data check: synthetic scenes of 9000 x 9000",
            ["data", "check", "synthetic_big.yaml"],
            _config("synthetic_big", **{"data.options.size": [9000, 9000]}),
        ),
        # bench: the input size and batch, before the model is built.
        _case(
            "bench --size 100000x100000",
            ["bench", "bench.yaml", "--size", "100000x100000"],
            _config("bench"),
        ),
        _case(
            "bench --size 8000x8000 --batch 8",
            ["bench", "bench.yaml", "--size", "8000x8000", "--batch", "8"],
            _config("bench"),
        ),
        _case(
            "bench --batch 1000000",
            ["bench", "bench.yaml", "--size", "64x64", "--batch", "1000000"],
            _config("bench"),
        ),
        _case(
            "bench --size of 30 digits",
            ["bench", "bench.yaml", "--size", "9" * 30 + "x2"],
            _config("bench"),
        ),
        _case(
            "bench --threads 100000 clamped to the cores",
            [
                "bench",
                "bench.yaml",
                "--size",
                "64x64",
                "--threads",
                "100000",
                "--warmup",
                "0",
                "--repeats",
                "1",
            ],
            _config("bench"),
            expect="ok",
        ),
        _case(
            "export --check-sizes 100000x100000",
            [
                "export",
                "bench.yaml",
                "--random-init",
                "--out",
                "x.onnx",
                "--check-sizes",
                "100000x100000",
                "64x64",
            ],
            _config("bench"),
        ),
        # Checkpoints: sizes read from the file and its archive directory before loading.
        _case(
            "checkpoint of 4 GiB + 1 byte (sparse)",
            _predict("small.png", "out_sparse", checkpoint="sparse.pt"),
            _all(_real_image("small.png", 64, 96), _file("sparse.pt", checkpoint_sparse)),
        ),
        _case(
            "checkpoint whose storage claims 8 GB over 16 bytes",
            ["eval", "eval_scales.yaml", "--checkpoint", "claims_bytes.pt"],
            _all(_config("eval_scales"), _file("claims_bytes.pt", checkpoint_claiming_bytes)),
        ),
        _case(
            "checkpoint whose tensor claims 2^31 elements",
            ["eval", "eval_scales.yaml", "--checkpoint", "claims_shape.pt"],
            _all(_config("eval_scales"), _file("claims_shape.pt", checkpoint_claiming_shape)),
        ),
        _case(
            "checkpoint with a record inflating 1000 times",
            ["eval", "eval_scales.yaml", "--checkpoint", "inflating.pt"],
            _all(_config("eval_scales"), _file("inflating.pt", checkpoint_inflating)),
        ),
        _case(
            "checkpoint whose pickle is 65 MiB",
            ["eval", "eval_scales.yaml", "--checkpoint", "big_pickle.pt"],
            _all(_config("eval_scales"), _file("big_pickle.pt", checkpoint_big_pickle)),
        ),
        _case(
            "checkpoint whose archive claims 10^9 records",
            ["eval", "eval_scales.yaml", "--checkpoint", "many_records.pt"],
            _all(_config("eval_scales"), _file("many_records.pt", checkpoint_claiming_records)),
        ),
        _case(
            "pretrained weights with a record inflating 1000 times",
            ["train", "pretrained_bomb.yaml", "--no-progress"],
            _all(
                _file("inflating.pt", checkpoint_inflating),
                _config("pretrained_bomb", **{"model.backbone.pretrained": "inflating.pt"}),
            ),
        ),
    ]
    return cases
