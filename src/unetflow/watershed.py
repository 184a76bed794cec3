"""Cells from probabilities by a seeded watershed, per slice: the mask of pixels above the cell threshold is
re-divided along the boundary probability, from seeds that mark one cell each, so that cells the threshold joins
through a thin bridge (a merge) come apart where the membrane is most probable.

Seeds (`seeds`):
- `probability`: the connected components of the cell probability above `seed_threshold` (higher than the mask's
  threshold: the cells' confident cores);
- `distance`: the maxima of the distance to the mask's border, at least `seed_distance` pixels apart (cell centres,
  whatever the probabilities' calibration).
A component of the mask without a seed is a cell of its own (never dropped). Pixels outside the mask stay membrane
(0), so the pixel error is the threshold's; flooding follows `connectivity` (4 or 8).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

SEEDS = ("probability", "distance")


def seeded_watershed(
    cell: np.ndarray,
    threshold: float,
    seeds: str = "probability",
    seed_threshold: float = 0.9,
    seed_distance: int = 5,
    connectivity: int = 4,
) -> np.ndarray:
    """Cell ids (int32, 0 = membrane) of one slice of cell probabilities (see the module doc)."""
    if cell.ndim != 2:
        raise ValueError(f"the watershed runs per slice: a 2D slice, not {cell.shape}")
    if seeds not in SEEDS:
        raise ValueError(f"seeds must be one of {SEEDS}, not {seeds!r}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    mask = cell > threshold
    components, count = ndimage.label(mask, structure)
    if seeds == "probability":
        markers, found = ndimage.label(cell > max(seed_threshold, threshold), structure)
    else:
        distance = ndimage.distance_transform_edt(mask)
        peaks = peak_local_max(distance, min_distance=seed_distance, labels=components, exclude_border=False)
        markers = np.zeros(cell.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        found = len(peaks)
    seeded = np.zeros(count + 1, bool)
    seeded[np.unique(components[markers > 0])] = True
    alone = ~seeded[components] & mask  # components without a seed: one seed each, the whole component
    markers = markers.astype(np.int32)
    markers[alone] = found + components[alone]
    return watershed(1.0 - cell, markers, mask=mask, connectivity=1 if connectivity == 4 else 2).astype(np.int32)
