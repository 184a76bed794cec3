"""Cells from a cell mask: connected components per slice, with ids unique across a volume."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unetflow.labels import connectivity_structure


def label_slab(cell: np.ndarray, connectivity: int, offset: int) -> tuple[np.ndarray, int]:
    """Label each slice of a boolean (z, y, x) slab; ids start after `offset`. Returns labels and new offset."""
    structure = connectivity_structure(2, connectivity)
    out = np.zeros(cell.shape, np.uint32)
    for z in range(cell.shape[0]):
        labels, n = ndimage.label(cell[z], structure=structure)
        out[z] = np.where(labels > 0, labels + offset, 0)
        offset += n
    return out, offset
