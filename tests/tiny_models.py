"""Small random models and checkpoints that several test modules share."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from leanseg.files.checkpoint import save_checkpoint
from leanseg.models import build_model, run_config_from_dict


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from (0, 1), so folding does something."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
    return model.eval()


def save_random_checkpoint(raw: dict, path: Path) -> Path:
    """``path``: the model the config ``raw`` describes, random (seed 0) and untrained, saved
    with its config as a run directory's checkpoint holds it."""
    cfg = run_config_from_dict(raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0}, path)
    return path


def save_tiny_ladder_checkpoint(folder: Path) -> Path:
    """``folder/last.pt``: a random ResNet-18 ladder (width 32, BN randomised, no training)
    whose config reads 4 synthetic scenes, as a run directory would hold it."""
    raw = {
        "model": {"backbone": {"name": "resnet18"}, "head": {"name": "ladder", "channels": 32}},
        "data": {"dataset": "synthetic", "options": {"num_samples": 4, "size": [64, 96]}},
        "eval": {"max_images": 2, "boundary_width": 2},
        "work_dir": str(folder),
    }
    cfg = run_config_from_dict(raw)
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(cfg))
    save_checkpoint(
        {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0},
        folder / "last.pt",
    )
    return folder / "last.pt"
