"""Training options that change how, not what, the trainer computes."""

from __future__ import annotations

import copy

import pytest
import torch

from leanseg.data import build_dataset
from leanseg.models import create_model, load_run_config
from leanseg.training.trainer import Trainer


def test_channels_last_gives_the_same_losses_and_gradients():
    torch.manual_seed(0)
    plain = create_model(head="ladder", backbone="efficientnet_lite0", num_classes=5, channels=16)
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 96)
    targets = {"label": torch.randint(0, 5, (2, 64, 96))}
    losses = []
    for model in (plain, nhwc):
        loss = sum(model.train().losses(images, targets).values())
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=0)
    # The whole gradient points the same way; single entries differ by float summation order
    # (depthwise weight gradients sum thousands of products in another order in NHWC).
    grads = [torch.cat([p.grad.flatten() for p in model.parameters()]) for model in (plain, nhwc)]
    assert torch.nn.functional.cosine_similarity(*grads, dim=0) > 0.999


def test_trainer_keeps_the_model_channels_last(tmp_path):
    overrides = [
        "data.dataset=synthetic",
        "data.options={num_samples: 2, size: [64, 96]}",
        "data.crop_size=[64, 96]",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_iters=1",
        "train.channels_last=true",
        "model.backbone.name=efficientnet_lite0",
        "model.head={name: ladder, channels: 16}",  # 3x3 kernels in the head too
        f"work_dir={tmp_path / 'run'}",
    ]
    trainer = Trainer.from_config(load_run_config(None, overrides), show_progress=False)
    trainer.train()
    stem = trainer.model.backbone._conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    # Every convolution of the model, the head's too, not the backbone's alone.
    kernels = {name: p for name, p in trainer.model.named_parameters() if p.dim() == 4}
    assert any(name.startswith("head.") and k.shape[-1] > 1 for name, k in kernels.items())
    for name, kernel in kernels.items():
        assert kernel.is_contiguous(memory_format=torch.channels_last), name


def test_trainer_trains_a_hand_built_model_on_given_datasets(tmp_path):
    cfg = load_run_config(
        None,
        [
            "data.dataset=synthetic",
            "data.options={num_samples: 2, size: [48, 64]}",
            "data.crop_size=[48, 64]",
            "data.batch_size=2",
            "data.num_workers=0",
            "train.max_iters=2",
            "train.eval_interval=2",
            f"work_dir={tmp_path / 'run'}",
        ],
    )
    torch.manual_seed(0)
    model = create_model(head="bilinear", backbone="resnet18", num_classes=11)
    before = [p.detach().clone() for p in model.parameters()]
    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    trainer = Trainer.from_config(
        cfg, model=model, train_set=train_set, val_set=val_set, show_progress=False
    )
    assert trainer.model is model and trainer.train_set is train_set
    assert trainer.val_set is val_set
    result = trainer.train()
    assert result.iteration == 2 and result.final_scores is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_trainer_refuses_a_model_for_other_classes(tmp_path):
    cfg = load_run_config(None, ["data.dataset=synthetic", f"work_dir={tmp_path / 'run'}"])
    model = create_model(head="bilinear", backbone="resnet18", num_classes=5)
    with pytest.raises(ValueError, match="predicts 5 classes.*'synthetic' has 11"):
        Trainer.from_config(cfg, model=model, show_progress=False)
    assert not (tmp_path / "run").exists()
