"""HRNetV2 backbones: checkpoint names, shapes and parameter counts; S&F on HRNet-W18."""

import json

import pytest
import torch

from leanseg.config import ModelConfig
from leanseg.models import BACKBONES, build_segmentor
from leanseg.nn.backbones.hrnet import CLASSIFICATION_PREFIXES

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _manifest(width, shared_reference):
    return json.loads((shared_reference / f"timm_hrnet_w{width}.json").read_text())


@pytest.mark.parametrize("width", [18, 32, 48])
def test_names_shapes_and_params_match_the_manifest(width, shared_reference):
    manifest = _manifest(width, shared_reference)
    with torch.device("meta"):  # shapes only: no memory, no init cost for W48
        model = BACKBONES[f"hrnet_w{width}"]()
    expected = {
        k: tuple(v)
        for k, v in manifest["keys"].items()
        if not k.startswith(CLASSIFICATION_PREFIXES)
    }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    dropped = sum(
        torch.Size(v).numel()
        for k, v in manifest["keys"].items()
        if k.startswith(CLASSIFICATION_PREFIXES) and not k.endswith(BUFFERS)
    )
    assert sum(p.numel() for p in model.parameters()) + dropped == manifest["num_params"]
    assert model.feature_info[0].channels == 15 * width and model.output_stride == 4


def test_checkpoint_file_loads_and_classifier_is_dropped(tmp_path, shared_reference):
    manifest = _manifest(18, shared_reference)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v, generator=g) if v else torch.tensor(1)
        for k, v in manifest["keys"].items()
    }
    torch.save(state, tmp_path / "w18.pth")
    model = BACKBONES["hrnet_w18"](pretrained=str(tmp_path / "w18.pth"))
    loaded = model.state_dict()
    # Every parameter and BN statistic is the file's; the classifier's keys are left out.
    kept = {k for k in state if not k.startswith(CLASSIFICATION_PREFIXES)}
    assert set(loaded) == kept and len(kept) < len(state)
    for key in kept:
        assert torch.equal(loaded[key], state[key]), key


def test_sandf_on_hrnet_w18_odd_size():
    torch.manual_seed(0)
    model = build_segmentor(
        ModelConfig(
            backbone={"name": "hrnet_w18"}, head={"name": "sandf", "semantic_channels": 32}
        ),
        num_classes=4,
    )
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 4, 37, 53)
    model.train()
    losses = model.losses(torch.randn(2, 3, 64, 64), {"label": torch.randint(0, 4, (2, 64, 64))})
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sandf_configs_load_and_validate():
    from pathlib import Path

    from leanseg.config import load_config

    folder = Path(__file__).resolve().parents[1] / "configs" / "sandf"
    names = {p.name for p in folder.glob("*.yaml")}
    expected = {"sandf_hrnet48_ade20k.yaml", "sandf_hrnet48_cocostuff.yaml"}
    expected |= {f"sandf_hrnet32_ablation_{r}_ade20k.yaml" for r in "abcdefghi"}
    assert expected <= names and any("camvid" in n for n in names)
    for path in sorted(folder.glob("*.yaml")):
        assert load_config(path).model.head["name"] == "sandf"
