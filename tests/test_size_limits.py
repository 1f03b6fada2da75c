"""Sizes refused before memory is spent, and predict in bounded memory (issue 27, item 4).

Every refusal is checked to come before the allocation it guards: huge images are hand-written
headers whose decoding is made to fail the test, huge checkpoints are small crafted archives
read with ``torch.load`` made to fail the test. Nothing here allocates more than a few
megabytes.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from leanseg.commands.bench import parse_size
from leanseg.config import ConfigError, TrainConfig, limits, load_config
from leanseg.data.base import DatasetError
from leanseg.data.io import (
    ImageRegions,
    ImageTooLargeError,
    open_image,
    open_image_header,
    read_rgb,
)
from leanseg.data.synthetic.dataset import SyntheticStreetScenes
from leanseg.files.checkpoint import CheckpointError, check_checkpoint_sizes, load_checkpoint
from leanseg.inference.ood_maps import predict_with_ood
from leanseg.inference.predictor import Predictor
from leanseg.metrics.ood import foreign_map
from leanseg.models import run_config_from_dict
from leanseg.visualize import write_png

# --------------------------------------------------------------------------- helpers


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG of signature, IHDR (``width x height`` RGB) and IEND: a size, no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def jpeg_header(path: Path, width: int, height: int) -> Path:
    """A 16 x 16 JPEG whose SOF0 frame header claims ``width x height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, any decoding of pixels fails the test."""

    def load(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", load)


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- limits


def test_size_and_scale_problems() -> None:
    assert limits.size_problem(1024, 2048) is None
    assert "65536" in limits.size_problem(70_000, 8)
    assert "64.0 MP" in limits.size_problem(9000, 9000)
    assert limits.scales_problem([0.5, 1.0, 2.0]) is None
    assert "above 8" in limits.scales_problem([1000.0])
    assert "17 scales" in limits.scales_problem([1.0] * 17)


def test_threads_above_the_cores_are_clamped_with_a_warning(monkeypatch, capsys) -> None:
    monkeypatch.setattr(limits, "cpu_cores", lambda: 2)
    assert limits.clamp_threads(2, "--threads") == 2
    assert capsys.readouterr().err == ""
    assert limits.clamp_threads(10**9, "--threads") == 2
    err = capsys.readouterr().err
    assert err.startswith("leanseg: warning: --threads 1000000000") and "2 cores" in err


def test_train_num_threads_is_clamped(monkeypatch, capsys) -> None:
    from leanseg.runtime import process as runtime

    monkeypatch.setattr(limits, "cpu_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        runtime.set_up_device(TrainConfig(num_threads=100_000, device="cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "train.num_threads 100000" in capsys.readouterr().err


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.crop_size=[100000,100000]", "data.crop_size"),
        ("data.crop_size=[70000,16]", "data.crop_size"),
        ("data.crop_size=[9000,9000]", "data.crop_size"),
        ("data.crop_schedule=[{crop_size: [100000, 100000], until: 5}]", "data.crop_schedule"),
        ("data.batch_size=1000000", "data.batch_size"),
        ("data.scale_range=[0.5,1000]", "data.scale_range"),
        ("data.num_workers=1000000", "data.num_workers"),
        ("eval.scales=[1000]", "eval.scales"),
        (f"eval.scales={[1.0] * 17}", "eval.scales"),
        ("eval.boundary_width=1000000000", "eval.boundary_width"),
        ("eval.batch_size=1000000", "eval.batch_size"),
        ("eval.crf={iterations: 1000000000}", "eval.crf.iterations"),
    ],
)
def test_config_sizes_are_refused_naming_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"{named}: must be .* got") as caught:
        load_config(None, [override])
    assert "\n" not in str(caught.value)


def test_a_batch_of_large_crops_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"batch_size 64 x crops of \[2048, 2048\].*268\.4 MP"):
        load_config(None, ["data.batch_size=64", "data.crop_size=[2048,2048]"])
    load_config(None, ["data.batch_size=16", "data.crop_size=[1024,2048]"])  # 32 MP: fine


def test_shipped_limits_leave_usual_values_alone() -> None:
    cfg = load_config(None, ["eval.scales=[0.5,0.75,1,1.25,1.5,1.75]", "eval.boundary_width=64"])
    assert cfg.eval.scales[-1] == 1.75


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("write", "width", "height"),
    [(png_header, 100_000, 100_000), (png_header, 20_000, 20_000), (jpeg_header, 65535, 65535)],
)
def test_image_headers_over_the_limit_are_refused_before_decoding(
    tmp_path, monkeypatch, write, width, height
) -> None:
    path = write(tmp_path / f"huge.{'png' if write is png_header else 'jpg'}", width, height)
    forbid_decoding(monkeypatch)
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match=rf"huge\.\w+: {width}x{height} pixels") as err:
        open_image(path)
    assert "refused before decoding" in str(err.value) and "300.0 MP" in str(err.value)
    assert isinstance(err.value, DatasetError)  # the CLI's one-line error
    assert saved == Image.MAX_IMAGE_PIXELS  # Pillow's own guard is left as it was


def test_the_limit_is_leanseg_s_not_pillow_s(tmp_path, monkeypatch) -> None:
    # 200 MP: Pillow's guard alone would raise (above 2 x 89.5 MP); leanseg's limit is 300 MP.
    path = png_header(tmp_path / "wide.png", 20_000, 10_000)
    forbid_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor Pillow's DecompressionBombWarning
        image = open_image_header(path)
    assert image.size == (20_000, 10_000)
    with pytest.raises(ImageTooLargeError, match=r"limit of 150\.0 MP"):
        open_image_header(path, max_pixels=150_000_000)


def test_read_rgb_takes_a_limit(tmp_path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(_rgb(40, 60)).save(path)
    assert read_rgb(path).shape == (40, 60, 3)
    with pytest.raises(ImageTooLargeError, match=r"small\.png: 60x40 pixels"):
        read_rgb(path, max_pixels=2399)


@pytest.mark.parametrize("mode", ["RGB", "P", "I;16", "L"])
def test_image_regions_are_the_slices_of_the_whole_image(tmp_path, mode) -> None:
    rgb = _rgb(37, 53)
    if mode == "RGB":
        image = Image.fromarray(rgb)
    elif mode == "P":
        image = Image.fromarray(rgb).convert("P")
    elif mode == "L":
        image = Image.fromarray(rgb[:, :, 0])
    else:
        image = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)  # mode I;16
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    image.save(path)
    whole = read_rgb(path)
    regions = ImageRegions.open(path)
    assert regions.shape == (37, 53)
    for rows, cols in [
        (slice(0, 37), slice(0, 53)),
        (slice(5, 20), slice(30, 53)),
        (slice(36, 99), slice(0, 1)),
    ]:
        np.testing.assert_array_equal(regions.read(rows, cols), whole[rows, cols])
    array_regions = ImageRegions(whole)
    np.testing.assert_array_equal(array_regions.read(slice(3, 9), slice(4, 8)), whole[3:9, 4:8])


def test_image_regions_are_upright(tmp_path) -> None:
    rgb = _rgb(20, 30)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotated: displayed turned 90 degrees clockwise
    image.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=100)
    whole = read_rgb(tmp_path / "turned.jpg")
    assert whole.shape == (30, 20, 3)
    regions = ImageRegions.open(tmp_path / "turned.jpg")
    np.testing.assert_array_equal(regions.read(slice(2, 17), slice(5, 20)), whole[2:17, 5:20])


# --------------------------------------------------------------------------- streamed predict


class Local(nn.Module):
    """3x3 conv, stride-2 3x3 conv, 3x3 conv, x2 upsampling: a receptive field of ~6 px."""

    size_divisor = 2

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        x = F.pad(images, (0, (-width) % 2, 0, (-height) % 2))
        x = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return F.interpolate(x, scale_factor=2, mode="bilinear")[..., :height, :width]


@pytest.fixture
def local() -> Local:
    torch.manual_seed(0)
    return Local().eval()


def _watch_scores(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pixel count of every array ``predictor`` turns into float scores."""
    seen: list[int] = []
    scores = predictor._scores

    def watched(array: np.ndarray, inputs: object) -> Tensor:
        seen.append(array.shape[0] * array.shape[1])
        return scores(array, inputs)

    monkeypatch.setattr(predictor, "_scores", watched)
    return seen


def test_streamed_predict_equals_whole_and_holds_no_full_float_map(local, monkeypatch) -> None:
    cfg = run_config_from_dict({})
    image = _rgb(150, 211)
    whole = Predictor(local, cfg, max_pixels=None).predict(image)
    budget = 48 * 64
    streamed = Predictor(local, cfg, max_pixels=budget, overlap=16)
    seen = _watch_scores(streamed, monkeypatch)
    labels = streamed.predict(image)
    np.testing.assert_array_equal(labels, whole)
    assert len(seen) > 4 and max(seen) <= budget  # scored a tile at a time, never the image


def test_streamed_multiscale_fits_the_budget_and_stays_close(local, monkeypatch) -> None:
    cfg = run_config_from_dict({})
    # A smooth picture (noise would put most pixels near a tie between classes).
    rows, cols = np.mgrid[0:100, 0:140]
    image = np.stack([rows * 255 // 100, cols * 255 // 140, (rows + cols) % 256], -1)
    image = image.astype(np.uint8)
    whole = Predictor(local, cfg, max_pixels=None, scales=(0.5, 1.0, 2.0), flip=True)
    budget = 80 * 96
    streamed = Predictor(local, cfg, max_pixels=budget, overlap=16, scales=(0.5, 1.0, 2.0))
    streamed.flip = True
    seen = _watch_scores(streamed, monkeypatch)
    agree = (streamed.predict(image) == whole.predict(image)).mean()
    assert max(seen) * 2.0**2 <= budget  # the tile at its largest scale fits the budget
    assert agree > 0.95


def test_streamed_crf_stays_close_to_whole_image_crf(local) -> None:
    from leanseg.config import CRFConfig

    cfg = run_config_from_dict({})
    rows, cols = np.mgrid[0:120, 0:170]
    image = np.stack([rows * 2, cols, (rows + cols) % 256], -1).astype(np.uint8)
    crf = CRFConfig(iterations=3)
    whole = Predictor(local, cfg, max_pixels=None, crf=crf).predict(image)
    tiled = Predictor(local, cfg, max_pixels=60 * 80, overlap=32, crf=crf).predict(image)
    assert (whole == tiled).mean() > 0.98  # the CRF sees a tile at a time


def test_predict_blocks_cover_the_image_once(local) -> None:
    predictor = Predictor(local, run_config_from_dict({}), max_pixels=40 * 40, overlap=8)
    covered = np.zeros((90, 130), np.int32)
    for rows, cols, probabilities in predictor.predict_blocks(_rgb(90, 130)):
        assert probabilities.shape[1:] == covered[rows, cols].shape
        covered[rows, cols] += 1
    assert (covered == 1).all()


def test_streamed_ood_maps_equal_whole_image_maps(local) -> None:
    cfg = run_config_from_dict({})
    image = _rgb(120, 170)
    probabilities = Predictor(local, cfg, max_pixels=None).predict_scores(image)
    expected = foreign_map(probabilities, [0, 2])
    streamed = Predictor(local, cfg, max_pixels=40 * 64, overlap=16)
    label, (flag, mass) = predict_with_ood(streamed, image, [0, 2])
    np.testing.assert_array_equal(label, probabilities.argmax(0).numpy())
    np.testing.assert_array_equal(flag, expected.foreign.numpy().astype(np.uint8) * 255)
    expected_mass = torch.round(expected.mass * 255).to(torch.uint8).numpy()
    assert np.abs(mass.astype(int) - expected_mass).max() <= 1  # float rounding at .5


def test_predictor_refuses_a_huge_file_before_decoding(local, tmp_path, monkeypatch) -> None:
    path = png_header(tmp_path / "huge.png", 30_000, 20_000)
    forbid_decoding(monkeypatch)
    predictor = Predictor(local, run_config_from_dict({}), max_image_pixels=500_000_000)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: 30000x20000 pixels"):
        predictor.predict(path)


# --------------------------------------------------------------------------- PNG writer


@pytest.mark.parametrize("rows_per_block", [1, 7, 64])
def test_write_png_round_trips(tmp_path, rows_per_block) -> None:
    rgb = _rgb(45, 31)
    blocks = (rgb[top : top + rows_per_block] for top in range(0, 45, rows_per_block))
    path = write_png(tmp_path / "rgb.png", 45, 31, blocks, channels=3)
    with Image.open(path) as picture:
        assert picture.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(picture), rgb)
    label = rgb[:, :, 0] % 5
    palette = np.array([[i * 40, 255 - i * 40, 7] for i in range(5)], np.uint8)
    blocks = (label[top : top + rows_per_block] for top in range(0, 45, rows_per_block))
    path = write_png(tmp_path / "label.png", 45, 31, blocks, palette=palette)
    with Image.open(path) as picture:
        assert picture.mode == "P"
        np.testing.assert_array_equal(np.asarray(picture), label)
        assert picture.getpalette()[:15] == palette.reshape(-1).tolist()


def test_write_png_checks_the_rows(tmp_path) -> None:
    with pytest.raises(ValueError, match="expected 10"):
        write_png(tmp_path / "a.png", 10, 4, [np.zeros((9, 4), np.uint8)])
    with pytest.raises(ValueError, match="more than 10 rows"):
        write_png(tmp_path / "a.png", 10, 4, [np.zeros((11, 4), np.uint8)])
    with pytest.raises(ValueError, match="uint8 blocks"):
        write_png(tmp_path / "a.png", 10, 4, [np.zeros((10, 5), np.uint8)])
    assert not list(tmp_path.iterdir())  # nothing left behind


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", load)


def _records() -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(4)}}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def _write_zip(path: Path, records: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return path


def test_a_checkpoint_within_the_limits_loads(tmp_path) -> None:
    path = _write_zip(tmp_path / "fine.pt", _records())
    check_checkpoint_sizes(path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(4))


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, no_torch_load) -> None:
    path = _write_zip(tmp_path / "big.pt", _records())
    size = path.stat().st_size
    with pytest.raises(CheckpointError, match=rf"big\.pt: {size} bytes .* limit of {size - 1}"):
        check_checkpoint_sizes(path, max_bytes=size - 1)
    sparse = tmp_path / "sparse.pt"
    with sparse.open("wb") as handle:
        handle.truncate(limits.MAX_CHECKPOINT_BYTES + 1)  # no disk space taken
    with pytest.raises(CheckpointError, match=r"sparse\.pt: 4294967297 bytes"):
        load_checkpoint(sparse)


def test_compressed_records_are_refused_unread(tmp_path, no_torch_load) -> None:
    path = _write_zip(tmp_path / "deflated.pt", _records(), zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match=r"deflated\.pt: record .* is compressed"):
        load_checkpoint(path)


def test_a_large_pickle_is_refused_unread(tmp_path, no_torch_load) -> None:
    path = _write_zip(tmp_path / "pickle.pt", _records())
    with pytest.raises(CheckpointError, match=r"pickle\.pt: its pickled structure"):
        check_checkpoint_sizes(path, max_pickle_bytes=10)


def test_a_claimed_record_count_is_refused_before_the_directory_is_read(
    tmp_path, no_torch_load, monkeypatch
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in _records().items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    at = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack("<II", data[at + 12 : at + 20])
    count = 10**9
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size, offset, 0)
    path = tmp_path / "records.pt"
    path.write_bytes(data[:at] + zip64 + locator + end)
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: pytest.fail("listed"))
    with pytest.raises(CheckpointError, match=r"records\.pt: 1000000000 records"):
        load_checkpoint(path)


def test_a_tensor_claiming_more_than_its_record_is_refused(tmp_path) -> None:
    records = _records()
    name = next(n for n in records if n.endswith("data.pkl"))
    # The storage's location 'cpu', its memo index, then its element count 4 (BININT1).
    claim = b"J" + struct.pack("<i", 2**31 - 1)
    records[name], found = re.subn(
        rb"(X\x03\x00\x00\x00cpuq.)K\x04", lambda m: m.group(1) + claim, records[name]
    )
    assert found == 1
    path = _write_zip(tmp_path / "claims.pt", records)
    with pytest.raises(CheckpointError, match=r"claims\.pt: a tensor claims more bytes"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- bench, synthetic


@pytest.mark.parametrize(
    ("text", "batch", "match"),
    [
        ("100000x100000", 1, "side is longer than 65536"),
        ("8000x8000", 8, r"batch x H x W is 512\.0 MP"),
        ("9" * 30 + "x2", 1, "expected HxW"),
        ("0x64", 1, "expected HxW"),
        ("٣٢x64", 1, "expected HxW"),  # digits, but not ASCII ones
    ],
)
def test_bench_sizes_are_refused(text: str, batch: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_size(text, batch)
    assert parse_size("1024x2048", 8) == (1024, 2048)


def test_export_check_sizes_are_refused(tmp_path, capsys) -> None:
    from leanseg.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("model: {backbone: {name: resnet18, pretrained: null}}\n")
    argv = ["export", str(config), "--random-init", "--out", str(tmp_path / "m.onnx")]
    with pytest.raises(SystemExit) as exited:  # argparse refuses it: exit status 2
        main([*argv, "--check-sizes", "100000x100000", "64x64"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--check-sizes: 100000x100000 is too large" in err
    assert not (tmp_path / "m.onnx").exists()


def test_synthetic_scenes_over_the_limit_are_refused_before_drawing(monkeypatch) -> None:
    import leanseg.data.synthetic.dataset as dataset

    monkeypatch.setattr(dataset, "generate_scene", lambda *a: pytest.fail("drawn"))
    with pytest.raises(DatasetError, match=r"size \[9000, 9000\]: too large .* 81\.0 MP"):
        SyntheticStreetScenes("train", size=(9000, 9000), num_samples=1)
