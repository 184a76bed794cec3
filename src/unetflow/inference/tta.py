"""Test-time augmentation: the symmetries of the square (2D) or the axis flips (3D) that the paper's ISBI entry
averaged over. A transform maps an input tile batch (N, C, *spatial) and its inverse maps the model's output
back; both are exact index permutations, so averaging changes no geometry.

Flipping a valid-convolution tile moves its pooling grid to the tile's far end. Tiles start and end on the
block grid (multiples of the pooling step) grown by the same context on both sides, so every flipped pass of
every tile still sits on one common grid and tiled TTA output stays seamless.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unetflow.models.geometry import Geometry


@dataclass(frozen=True)
class Transform:
    """Flip the spatial axes in `flips` (0 = first spatial axis), then swap the last two axes if `transpose`."""

    flips: tuple[int, ...] = ()
    transpose: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flips:
            x = torch.flip(x, [2 + a for a in self.flips])
        return x.transpose(-1, -2) if self.transpose else x

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            y = y.transpose(-1, -2)
        return torch.flip(y, [2 + a for a in self.flips]) if self.flips else y


IDENTITY_TRANSFORM = Transform()


def test_time_transforms(geometries: Sequence[Geometry]) -> tuple[Transform, ...]:
    """2D: the 8 flips and 90-degree rotations (dihedral group of the square); 3D: the 8 axis flips.

    The transposition needs both in-plane axes to share a geometry, which 2D models always do."""
    dims = len(geometries)
    flip_sets = [tuple(a for a in range(dims) if mask >> a & 1) for mask in range(2**dims)]
    transposes = (False, True) if dims == 2 and geometries[0] == geometries[1] else (False,)
    return tuple(Transform(f, t) for t, f in itertools.product(transposes, flip_sets))
