"""leanseg: efficient semantic segmentation of large images.

The public API:

- :func:`load_config` reads a YAML config into a typed :class:`Config`, the model section
  checked against the builders (:func:`leanseg.models.load_run_config`).
- :func:`create_model` builds a model in one line (``create_model(head="ladder",
  backbone="efficientnet_lite0", num_classes=19, pretrained=True)``).
- :func:`build_model` turns a config into a :class:`~leanseg.nn.segmentor.Segmentor` whose
  ``forward(images)`` returns class scores at the input size.
- :class:`Predictor` loads a checkpoint and predicts label maps of images of any size.
"""

from leanseg.config import Config, ConfigError
from leanseg.version import __version__

__all__ = [
    "Config",
    "ConfigError",
    "Predictor",
    "build_model",
    "create_model",
    "load_config",
    "__version__",
]


def __getattr__(name: str):
    # Imported lazily so that ``import leanseg`` stays cheap for the CLI's --help.
    if name in ("build_model", "create_model"):
        from leanseg import models

        return getattr(models, name)
    if name == "load_config":
        from leanseg.models import load_run_config

        return load_run_config
    if name == "Predictor":
        from leanseg.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'leanseg' has no attribute {name!r}")
