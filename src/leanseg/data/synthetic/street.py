"""The street's cross-section in metres: road, lanes, kerbs, pavements, verges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Street:
    """Layout of the street in metres (X: right of the camera)."""

    centre: float  # X of the road's centre line
    road_width: float
    lanes: int
    sidewalk: dict[int, float]  # side (-1 left, +1 right) -> width
    grass_verge: dict[int, bool]
    open_side: dict[int, bool]  # no buildings on that side (park, car park)

    @staticmethod
    def draw(rng: np.random.Generator) -> Street:
        lanes = int(rng.integers(2, 5))
        return Street(
            centre=rng.uniform(-2.5, 2.5),
            road_width=lanes * rng.uniform(2.8, 3.6),
            lanes=lanes,
            sidewalk={side: rng.uniform(2, 6) for side in (-1, 1)},
            grass_verge={side: bool(rng.random() < 0.3) for side in (-1, 1)},
            open_side={side: bool(rng.random() < 0.15) for side in (-1, 1)},
        )

    def kerb(self, side: int) -> float:
        """X of the kerb on ``side`` (-1 left, +1 right)."""
        return self.centre + side * self.road_width / 2

    def frontage(self, side: int) -> float:
        """X of the back of the pavement, where buildings start."""
        return self.kerb(side) + side * self.sidewalk[side]
