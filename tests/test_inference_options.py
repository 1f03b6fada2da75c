"""Inference-speed options (issue 16): BN folding, channels-last, bf16 autocast, their CLI flags.

Small random models with non-trivial BatchNorm statistics, tiny odd-sized inputs, CPU only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from leanseg.cli import build_parser, main
from leanseg.inference.predictor import Predictor
from leanseg.inference.speed import (
    PLAIN,
    InferenceOptionError,
    InferenceOptions,
    InferenceRunner,
    options_from_args,
    prepare_model,
)
from leanseg.models import build_model, create_model, load_run_config
from tiny_models import randomise_batchnorm

REPO = Path(__file__).resolve().parents[1]

EXACT = {
    "fold": InferenceOptions(fold_bn=True, channels_last=False),
    "channels_last": InferenceOptions(fold_bn=False, channels_last=True),
    "both": InferenceOptions(fold_bn=True, channels_last=True),
}
QGN_OPTIONS = {
    "in_channels": 128,
    "decoder_channels": [16, 16, 16, 16, 16],
    "decoder_units": [1, 1, 1, 1, 1],
    "eval_scheme": "pc",
}


def _model(head: str, **head_options: object) -> nn.Module:
    torch.manual_seed(0)
    backbone_options = {"stem_features": True} if head == "qgn" else None
    model = create_model(
        head,
        "resnet18",
        num_classes=5,
        backbone_options=backbone_options,
        head_options=head_options,
    )
    return randomise_batchnorm(model)


def _images(height: int = 70, width: int = 90) -> Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))


def _scores(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("head", ["bilinear", "ladder"])
@pytest.mark.parametrize("name", list(EXACT))
def test_exact_options_match_the_plain_model(head: str, name: str) -> None:
    model = _model(head)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    images = _images()
    expected = _scores(model, images)
    prepared = prepare_model(model, EXACT[name], device="cpu")
    assert prepared.options == EXACT[name] and prepared.notes == ()
    got = _scores(InferenceRunner(prepared.model, prepared.options), images)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
    # The caller's model is neither folded nor converted.
    assert prepared.model is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.is_contiguous(), key
    if EXACT[name].fold_bn:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.model.backbone.modules())


def test_plain_options_leave_the_model_alone() -> None:
    model = _model("bilinear")
    assert prepare_model(model, PLAIN, device="cpu").model is model


NOTE_NAMES = {"fold_bn": "BN folding", "channels_last": "channels-last", "compile": "torch.compile"}


def _explained(asked: InferenceOptions, applied: InferenceOptions, notes: tuple[str, ...]) -> bool:
    """Whether every option asked for and not applied has a note naming it."""
    dropped = [NOTE_NAMES[f] for f in NOTE_NAMES if getattr(asked, f) and not getattr(applied, f)]
    dropped += [f"{asked.dtype} autocast"] if asked.dtype != applied.dtype else []
    return all(any(note.startswith(f"{part} not applied") for note in notes) for part in dropped)


def test_qgn_sparse_head_runs_under_every_option() -> None:
    model = _model("qgn", **QGN_OPTIONS)
    images = _images(64, 96)
    expected = _scores(model, images)
    for options in [*EXACT.values(), InferenceOptions(dtype="bf16", compile=True)]:
        prepared = prepare_model(model, options, device="cpu")
        assert _explained(options, prepared.options, prepared.notes), prepared.notes
        got = _scores(InferenceRunner(prepared.model, prepared.options), images)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        # The active sites may move with float rounding: compare the labels.
        agree = (got.argmax(dim=1) == expected.argmax(dim=1)).float().mean().item()
        assert agree > 0.99
    # Its sparse path is data-dependent: neither reduced precision nor compiling is applied.
    assert prepared.options.dtype == "fp32" and not prepared.options.compile
    assert any("bf16 autocast" in note and "QGNHead" in note for note in prepared.notes)
    assert any("torch.compile" in note and "QGNHead" in note for note in prepared.notes)


def test_predictor_counts_qgn_sites_with_the_options() -> None:
    model = _model("qgn", **QGN_OPTIONS)
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    fast = Predictor(model, device="cpu", max_pixels=None)
    plain = Predictor(model, device="cpu", max_pixels=None, options=PLAIN)
    assert fast.predict(image).shape == plain.predict(image).shape == (64, 96)
    assert fast.options == InferenceOptions() or fast.notes
    assert fast.last_active_sites is not None and plain.last_active_sites is not None
    assert fast.last_active_sites.keys() == plain.last_active_sites.keys()
    # Counted, not only keyed: every site of the coarsest level (stride 32) is active.
    assert fast.last_active_sites["Q5"] == plain.last_active_sites["Q5"] == (64 // 32) * (96 // 32)


def test_bf16_autocast_returns_float32_scores() -> None:
    model = _model("ladder")
    images = _images()
    prepared = prepare_model(model, InferenceOptions(dtype="bf16"), device="cpu")
    assert prepared.options.dtype == "bf16"
    got = _scores(InferenceRunner(prepared.model, prepared.options), images)
    expected = _scores(model, images)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.isfinite(got).all()
    # bf16 keeps 8 significant bits: close to the fp32 scores, not equal.
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()


def test_fp16_on_cpu_is_refused_with_the_reason() -> None:
    with pytest.raises(InferenceOptionError, match="CUDA"):
        prepare_model(_model("bilinear"), InferenceOptions(dtype="fp16"), device="cpu")
    with pytest.raises(InferenceOptionError, match="unknown inference dtype"):
        InferenceOptions(dtype="int8")


class _ViewsFeatures(nn.Module):
    """A conv whose output is ``view``-ed, which NHWC memory does not allow."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        features = self.conv(images)
        flat = features.view(features.shape[0], -1)  # (B, C*H*W): needs NCHW-contiguous memory
        return flat.view(features.shape)


class _BypassesBatchNorm(nn.Module):
    """A conv output used both through its BN and around it: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, images: Tensor) -> Tensor:
        features = self.conv(images)
        return self.bn(features) + features


def test_unsuitable_models_fall_back_with_a_note() -> None:
    images = _images(16, 24)
    viewing = _ViewsFeatures().eval()
    prepared = prepare_model(viewing, InferenceOptions(fold_bn=False), device="cpu")
    assert not prepared.options.channels_last
    assert "channels-last not applied to _ViewsFeatures" in prepared.notes[0]
    torch.testing.assert_close(
        _scores(InferenceRunner(prepared.model, prepared.options), images),
        _scores(viewing, images),
    )
    bypass = randomise_batchnorm(_BypassesBatchNorm())
    prepared = prepare_model(bypass, InferenceOptions(channels_last=False), device="cpu")
    assert not prepared.options.fold_bn
    assert "BN folding not applied to _BypassesBatchNorm" in prepared.notes[0]
    torch.testing.assert_close(
        _scores(InferenceRunner(prepared.model, prepared.options), images),
        _scores(bypass, images),
    )


def test_exact_options_are_checked_once_on_one_thread() -> None:
    # Issue 28: the plain forward finds the BNs to fold and gives the reference, one forward
    # checks the folded channels-last copy (five forwards before, on every thread).
    model = _model("ladder")
    threads_seen: list[int] = []
    model.register_forward_pre_hook(
        lambda module, args: threads_seen.append(torch.get_num_threads())
    )
    threads = torch.get_num_threads()
    prepared = prepare_model(model, InferenceOptions(), device="cpu")
    assert prepared.options == InferenceOptions() and prepared.notes == ()
    assert threads_seen == [1, 1]  # the hook is copied with the model: both forwards count
    assert torch.get_num_threads() == threads


class _ViewsBypassedFeatures(nn.Module):
    """Both unsuitable: a conv output used around its BN, and ``view``-ed."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, images: Tensor) -> Tensor:
        features = self.conv(images)
        summed = self.bn(features) + features
        return summed.view(summed.shape[0], -1).view(summed.shape)


@pytest.mark.parametrize(
    ("model", "dropped"),
    [
        (_BypassesBatchNorm(), ["BN folding"]),
        (_ViewsFeatures(), ["channels-last"]),
        (_ViewsBypassedFeatures(), ["BN folding", "channels-last"]),
    ],
)
def test_a_failed_joint_check_drops_only_the_unsuitable_option(
    model: nn.Module, dropped: list[str]
) -> None:
    model = randomise_batchnorm(model).eval()
    prepared = prepare_model(model, InferenceOptions(), device="cpu")
    assert [note.split(" not applied")[0] for note in prepared.notes] == dropped
    assert prepared.options.fold_bn == ("BN folding" not in dropped)
    assert prepared.options.channels_last == ("channels-last" not in dropped)
    images = _images(16, 24)
    torch.testing.assert_close(
        _scores(InferenceRunner(prepared.model, prepared.options), images),
        _scores(model, images),
    )


def test_model_with_extra_inputs_is_checked_with_example_inputs() -> None:
    cfg = load_run_config(
        REPO / "configs/scale_selection/scale_invariant_lite0_synthetic.yaml",
        ["model.backbone.pretrained=null", "model.head.hidden_channels=16"],
    )
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(cfg))
    assert "disparity" in model.extra_inputs
    images = _images(64, 96)
    inputs = {"disparity": torch.full((1, 64, 96), 8.0), "stereo_baseline": torch.tensor([0.2])}
    expected = _scores(lambda x: model(x, **inputs), images)  # type: ignore[arg-type]
    prepared = prepare_model(model, InferenceOptions(), device="cpu")
    runner = InferenceRunner(prepared.model, prepared.options)
    got = _scores(lambda x: runner(x, **inputs), images)  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_flags_parse_into_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "c.yaml", "--size", "64x96"])
    assert options_from_args(args) == InferenceOptions()
    args = parser.parse_args(
        ["eval", "run", "--no-fold-bn", "--channels-last", "--dtype", "bf16", "--compile"]
    )
    assert options_from_args(args) == InferenceOptions(
        fold_bn=False, channels_last=True, dtype="bf16", compile=True
    )
    args = parser.parse_args(["predict", "a.png", "--checkpoint", "c", "--out", "o"])
    assert options_from_args(args) == InferenceOptions()
    args = parser.parse_args(
        ["predict", "a.png", "--checkpoint", "c", "--out", "o", "--no-channels-last"]
    )
    assert not options_from_args(args).channels_last


# ---------------------------------------------------------------------- commands


def test_eval_flags_reach_the_evaluation(tiny_ladder_checkpoint: Path, tmp_path: Path) -> None:
    scores = {}
    for name, flags in {
        "default": [],
        "plain": ["--no-fold-bn", "--no-channels-last"],
        "bf16": ["--dtype", "bf16"],
    }.items():
        out = tmp_path / f"{name}.json"
        argv = ["eval", str(tiny_ladder_checkpoint), "--device", "cpu", "--json", str(out)]
        assert main([*argv, *flags]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores["default"]["inference"]["fold_bn"] == InferenceOptions().fold_bn
    assert scores["plain"]["inference"] == {**PLAIN.to_dict(), "notes": []}
    assert scores["bf16"]["inference"]["dtype"] == "bf16"
    assert scores["default"]["miou"] == pytest.approx(scores["plain"]["miou"], abs=1e-3)


def test_predict_flags_and_fp16_refusal(
    tiny_ladder_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(images / "a.png")
    written = {}
    for name, flags in {"plain": ["--no-fold-bn", "--no-channels-last"], "fast": []}.items():
        out = tmp_path / name
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    str(tiny_ladder_checkpoint),
                    str(images),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    *flags,
                ]
            )
            == 0
        )
        written[name] = np.asarray(Image.open(out / "a.png"))
    # Folding and NHWC change float rounding, which can flip a near-tied pixel of this untrained
    # model on a noise image (1 of 2800 on the CI machine); anything beyond that is a real change.
    assert written["fast"].shape == written["plain"].shape
    assert (written["fast"] != written["plain"]).mean() <= 0.01
    capsys.readouterr()
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_ladder_checkpoint),
            str(images),
            "--out",
            str(tmp_path / "half"),
            "--device",
            "cpu",
            "--dtype",
            "fp16",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--dtype fp16" in err and "CUDA" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "half").exists()


def test_bench_records_the_options_and_refuses_them_for_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        "model: {backbone: {name: resnet18}, head: {name: bilinear}}\ndata: {dataset: synthetic}\n"
    )
    out = tmp_path / "bench.json"
    args = ["bench", str(config), "--size", "64x96", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--dtype", "bf16", "--no-fold-bn", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["inference"]["dtype"] == "bf16" and not figures["inference"]["fold_bn"]
    assert figures["parameters"] > 0 and figures["latency_median_ms"] > 0
    capsys.readouterr()
    assert main([*args, "--train", "--dtype", "bf16"]) == 2
    assert "--dtype" in capsys.readouterr().err


def test_subnormal_weights_are_zeroed_in_the_prepared_copy_only() -> None:
    torch.set_flush_denormal(False)  # a training test may have left flushing on
    model = _model("bilinear")
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.view(-1)[:3] = 1e-39  # subnormal in float32
    assert (conv.weight.view(-1)[:3] != 0).all()
    prepared = prepare_model(model, InferenceOptions(), device="cpu")
    tiny = torch.finfo(torch.float32).tiny
    for tensor in prepared.model.parameters():
        assert not ((tensor != 0) & (tensor.abs() < tiny)).any()
    assert (conv.weight.view(-1)[:3] != 0).all()  # the caller's model is untouched
