"""Segment: threshold the cell probability and label connected components into an instance OME-Zarr.

2D segmentation (default) labels each slice on its own, with ids made unique across the volume by a running
offset; labels are uint32 (0 = membrane). Streams one chunk-deep slab of slices at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.segmentation import label_slab
from unetflow.settings import check, defaults
from unetflow.store import atomic_output, create_image, decode_probabilities, open_image, set_attrs

_D = defaults("segment")


def segment_volume(
    probabilities: str | Path,
    out: str | Path,
    threshold: float = _D["threshold"],
    connectivity: int = _D["connectivity"],
    cell_class: int = 1,
) -> Path:
    check("segment", {"threshold": threshold, "connectivity": connectivity})
    probs = open_image(probabilities)
    if probs.attrs.get("complete") is not True:
        raise ValueError(
            f"{probabilities}: not a finished prediction (no 'complete' mark); run or finish predict first"
        )
    if probs.axes != "czyx":
        raise ValueError(f"{probabilities}: expected class probabilities with axes czyx, got {probs.axes!r}")
    c, z, y, x = probs.shape
    if not 0 <= cell_class < c:
        raise ValueError(f"{probabilities}: cell class {cell_class} not among its {c} classes")
    depth = int(probs.array.chunks[1])
    offset = 0
    with atomic_output(out) as tmp:
        target = create_image(tmp, (z, y, x), np.uint32, (depth, y, x), "zyx", probs.voxel_size, probs.unit)
        for z0 in range(0, z, depth):
            slab = decode_probabilities(probs.array[cell_class, z0 : z0 + depth])
            labels, offset = label_slab(slab > threshold, connectivity, offset)
            target[z0 : z0 + len(labels)] = labels
        set_attrs(
            tmp,
            {
                "kind": "segmentation",
                "threshold": threshold,
                "connectivity": connectivity,
                "segments": offset,
                "z_range": probs.attrs.get("z_range"),
                RECORD_KEY: make_record(
                    {"probabilities": input_fingerprint(probabilities)},
                    {"threshold": threshold, "connectivity": connectivity, "cell_class": cell_class},
                    stage_code("segment"),
                ),
            },
        )
    return Path(out)
