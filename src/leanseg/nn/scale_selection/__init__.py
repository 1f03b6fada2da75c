"""Depth-guided scale selection (thesis chapter 3, Kreso et al. GCPR 2016).

- :mod:`.pyramid`: the input pyramid and the shared feature extractor (§3.2.1-3.2.2).
- :mod:`.multiplexer`: the per-pixel scale-selection multiplexer (§3.2.3, eq. 3.1-3.2).
- :mod:`.model`: the back-end classifier (§3.2.4) and the model with the four variants of
  Table 3.1 (Single5, Single3+5, FixedScales, ScaleInvariant).
"""

from leanseg.nn.scale_selection.model import (
    VARIANTS,
    BackEndClassifier,
    ScaleSelectionSegmentor,
    fixed_scales,
    scale_invariant,
    single3_5,
    single5,
)
from leanseg.nn.scale_selection.multiplexer import ScaleMultiplexer, disparity_on_grid
from leanseg.nn.scale_selection.pyramid import PyramidExtractor, pyramid_sizes

__all__ = [
    "VARIANTS",
    "BackEndClassifier",
    "PyramidExtractor",
    "ScaleMultiplexer",
    "ScaleSelectionSegmentor",
    "disparity_on_grid",
    "fixed_scales",
    "pyramid_sizes",
    "scale_invariant",
    "single3_5",
    "single5",
]
