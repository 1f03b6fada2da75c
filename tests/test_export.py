"""ONNX export (leanseg.export): every exportable head round-trips through onnxruntime."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'leanseg[export]')")
ort = pytest.importorskip(
    "onnxruntime", reason="ONNX export needs onnxruntime (pip install 'leanseg[export]')"
)

from leanseg.config import ModelConfig  # noqa: E402
from leanseg.export import (  # noqa: E402
    UnsupportedModelError,
    VerificationError,
    export_onnx,
    onnxruntime_latency,
)
from leanseg.files.outputs import OutputExistsError  # noqa: E402
from leanseg.models import HEADS, build_segmentor  # noqa: E402
from leanseg.nn.backbones.base import IMAGENET_NORMALIZATION  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = [(64, 96), (70, 90)]  # one a multiple of the output stride, one padded
REFUSED_HEADS = sorted(name for name, head in HEADS.items() if head.onnx_unexportable)
EXPORTABLE_HEADS = sorted(set(HEADS) - set(REFUSED_HEADS))


def _model(head="bilinear", backbone="resnet18", context=None, num_classes=5):
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(backbone={"name": backbone}, context=context, head={"name": head}),
        num_classes=num_classes,
    )
    # Non-trivial BN statistics, so that folding and export are checked on real arithmetic.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return model.eval()


def test_refused_heads_are_the_expected_ones():
    assert REFUSED_HEADS == ["qgn", "sandf"]


@pytest.mark.parametrize("head", EXPORTABLE_HEADS)
@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_head_round_trips_through_onnxruntime(tmp_path, backbone, head):
    model = _model(head, backbone)
    result = export_onnx(
        model, tmp_path / "m.onnx", normalization=IMAGENET_NORMALIZATION, sizes=SIZES
    )
    assert result.path.is_file()
    assert [check.shape for check in result.checks] == [(1, 3, 64, 96), (2, 3, 70, 90)]
    assert result.max_abs_diff <= 1e-4


@pytest.mark.parametrize(
    ("head", "context", "part"),
    [
        ("qgn", None, "QGNHead"),
        ("sandf", None, "SandFHead"),
    ],
)
def test_unexportable_parts_are_refused_by_name(tmp_path, head, context, part):
    model = _model(head, context=context)
    with pytest.raises(UnsupportedModelError, match=rf"^{part} \(.*\) does not export to ONNX: "):
        export_onnx(model, tmp_path / "m.onnx", normalization=IMAGENET_NORMALIZATION)
    assert list(tmp_path.iterdir()) == []


# The LDN / SwiftNet form (configs/ldn/rn18_32to4_cityscapes.yaml: resnet18, SPP, LDN head) and
# PSP-SPP, small. The third size is wide: its square-cell grids have many more columns than the
# trace's, so a column count frozen at trace time would show.
SMALL_CONTEXTS = {
    "spp": {"bottleneck_channels": 64, "level_channels": 16, "out_channels": 32},
    "psp_spp": {"out_channels": 32},
}


@pytest.mark.parametrize("context", sorted(SMALL_CONTEXTS))
def test_pyramid_pooling_contexts_round_trip_at_dynamic_sizes(tmp_path, context):
    model = _model("ldn", context={"name": context, **SMALL_CONTEXTS[context]})
    result = export_onnx(
        model,
        tmp_path / "m.onnx",
        normalization=IMAGENET_NORMALIZATION,
        sizes=[*SIZES, (64, 250)],
    )
    assert [check.shape[2:] for check in result.checks] == [(64, 96), (70, 90), (64, 250)]
    assert result.max_abs_diff <= 1e-4


class _FrozenWidth(nn.Module):
    """Scales by its input width through a tensor built from the size: a trace freezes it."""

    def forward(self, images):
        return images * images.new_tensor(float(images.shape[-1]))


def test_failed_verification_leaves_no_file(tmp_path):
    with pytest.raises(VerificationError, match="not written"):
        export_onnx(
            _FrozenWidth(), tmp_path / "m.onnx", normalization=IMAGENET_NORMALIZATION, sizes=SIZES
        )
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_existing_file_is_kept_unless_forced(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_text("keep me")
    for force in (False, True):  # --force replaces only a model leanseg exported
        with pytest.raises(OutputExistsError, match="not even --force"):
            export_onnx(
                _model(), path, normalization=IMAGENET_NORMALIZATION, sizes=SIZES, force=force
            )
    assert path.read_text() == "keep me"
    path.unlink()
    export_onnx(_model(), path, normalization=IMAGENET_NORMALIZATION, sizes=SIZES)
    with pytest.raises(OutputExistsError, match="--force"):
        export_onnx(_model(), path, normalization=IMAGENET_NORMALIZATION, sizes=SIZES)
    export_onnx(_model(), path, normalization=IMAGENET_NORMALIZATION, sizes=SIZES, force=True)


def test_exported_file_gets_the_mode_of_a_new_file_under_the_umask(tmp_path):
    # Issue 28: the temporary file came from mkstemp, so every export was 0600.
    previous = os.umask(0o027)
    try:
        export_onnx(
            _model(), tmp_path / "m.onnx", normalization=IMAGENET_NORMALIZATION, sizes=SIZES
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_folded_export_matches_unfolded_model(tmp_path, backbone):
    model = _model("ladder", backbone)
    result = export_onnx(
        model,
        tmp_path / "m.onnx",
        normalization=IMAGENET_NORMALIZATION,
        sizes=SIZES,
        fold_bn=True,
    )
    assert result.folded_bn > 0
    assert result.max_abs_diff <= 1e-4  # checked against the unfolded model
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # model not modified


def test_included_normalization_takes_uint8_and_documents_the_contract(tmp_path):
    import onnx

    model = _model()
    path = tmp_path / "m.onnx"
    export_onnx(
        model,
        path,
        normalization=IMAGENET_NORMALIZATION,
        class_names=["a", "b", "c", "d", "e"],
        include_normalization=True,
        input_dtype="uint8",
        sizes=SIZES,
    )
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert json.loads(props["leanseg.mean"]) == pytest.approx(IMAGENET_NORMALIZATION.mean)
    assert json.loads(props["leanseg.class_names"]) == ["a", "b", "c", "d", "e"]
    assert props["leanseg.normalization_included"] == "true"
    assert props["leanseg.size_divisor"] == "32"
    assert "uint8" in props["leanseg.input"]

    images = torch.randint(0, 256, (1, 3, 50, 77), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_NORMALIZATION.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZATION.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((images.float() / 255 - mean) / std).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    got = session.run(None, {"images": images.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4


def _run(argv):
    from leanseg.cli import main

    return main(argv)


def test_command_exports_a_config_only_with_random_init(tmp_path, capsys):
    config = str(CONFIGS / "ssn" / "erfnet_camvid.yaml")
    out = tmp_path / "m.onnx"
    assert _run(["export", config, "--out", str(out)]) == 2
    assert "--random-init" in capsys.readouterr().err
    sizes = ["--check-sizes", "64x96", "70x90"]
    assert _run(["export", config, "--out", str(out), "--random-init", "--fold-bn", *sizes]) == 0
    printed = capsys.readouterr().out
    assert printed.count("max abs diff") == 3 and f"wrote {out}" in printed
    assert out.is_file()


def test_command_reports_a_refused_model_with_status_2(tmp_path, capsys):
    config = str(CONFIGS / "qgn" / "qgn_r18_synthetic_cpu.yaml")
    status = _run(["export", config, "--out", str(tmp_path / "m.onnx"), "--random-init"])
    assert status == 2
    assert "QGNHead (head) does not export to ONNX" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_onnxruntime_latency_times_a_model():
    figures = onnxruntime_latency(_model(), (64, 96), repeats=2, warmup=1, threads=1)
    assert figures["backend"] == "onnxruntime" and len(figures["times_ms"]) == 2
    assert 0 < figures["min_ms"] <= figures["median_ms"]


def test_bench_times_onnxruntime_beside_pytorch(tmp_path, capsys):
    config = CONFIGS / "baseline" / "rn18_bilinear_synthetic.yaml"
    out = tmp_path / "bench.json"
    args = ["bench", str(config), "--size", "64x96", "--repeats", "2", "--warmup", "1"]
    assert _run([*args, "--onnxruntime", "--threads", "1", "--json", str(out)]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["onnxruntime"]["threads"] == 1 and len(figures["onnxruntime"]["times_ms"]) == 2
    assert figures["onnxruntime"]["median_ms"] > 0 and figures["latency_median_ms"] > 0

    refused = str(CONFIGS / "qgn" / "qgn_r18_synthetic_cpu.yaml")
    args = ["bench", refused, "--size", "64x96", "--repeats", "1", "--warmup", "0"]
    assert _run([*args, "--onnxruntime", "--json", str(out), "--force"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime not timed: QGNHead (head)" in err
    assert "does not export" in json.loads(out.read_text())["onnxruntime"]["error"]

    assert _run([*args, "--onnxruntime", "--train"]) == 2
    assert "--onnxruntime times CPU inference" in capsys.readouterr().err
