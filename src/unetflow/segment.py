"""Segment: threshold the cell probability and label connected components into an instance OME-Zarr.

2D segmentation (default) labels each slice on its own, with ids made unique across the volume by a running
offset; labels are uint32 (0 = membrane). Streams one chunk-deep slab of slices at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from unetflow.labels import connectivity_structure
from unetflow.store import atomic_output, create_image, open_image, set_attrs


def label_slab(cell: np.ndarray, connectivity: int, offset: int) -> tuple[np.ndarray, int]:
    """Label each slice of a boolean (z, y, x) slab; ids start after `offset`. Returns labels and new offset."""
    structure = connectivity_structure(2, connectivity)
    out = np.zeros(cell.shape, np.uint32)
    for z in range(cell.shape[0]):
        labels, n = ndimage.label(cell[z], structure=structure)
        out[z] = np.where(labels > 0, labels + offset, 0)
        offset += n
    return out, offset


def segment_volume(
    probabilities: str | Path,
    out: str | Path,
    threshold: float = 0.5,
    connectivity: int = 4,
    cell_class: int = 1,
) -> Path:
    if not 0 < threshold < 1:
        raise ValueError(f"segment.threshold must be in (0, 1), got {threshold}")
    probs = open_image(probabilities)
    if probs.axes != "czyx":
        raise ValueError(f"{probabilities}: expected class probabilities with axes czyx, got {probs.axes!r}")
    c, z, y, x = probs.shape
    if not 0 <= cell_class < c:
        raise ValueError(f"{probabilities}: cell class {cell_class} not among its {c} classes")
    depth = int(probs.array.chunks[1])
    scale = 255.0 if probs.dtype == np.uint8 else 1.0
    offset = 0
    with atomic_output(out) as tmp:
        target = create_image(tmp, (z, y, x), np.uint32, (depth, y, x), "zyx", probs.voxel_size, probs.unit)
        for z0 in range(0, z, depth):
            slab = np.asarray(probs.array[cell_class, z0 : z0 + depth]).astype(np.float32) / scale
            labels, offset = label_slab(slab > threshold, connectivity, offset)
            target[z0 : z0 + len(labels)] = labels
        set_attrs(
            tmp,
            {
                "kind": "segmentation",
                "threshold": threshold,
                "connectivity": connectivity,
                "segments": offset,
            },
        )
    return Path(out)
