"""Segment: threshold the cell probability and label connected components into an instance OME-Zarr, blockwise.

The probabilities are read chunk by chunk with dask (chunks tiled in y and x as predict wrote them), and cells are
labelled consistently across chunk faces (`unetflow.components`): per slice (dims 2, the paper's 2D network) or
connected in 3D (dims 3), equal to labelling the whole volume at once up to the numbering. Cells smaller than
`min_size` voxels are dropped. Ids are 1..n (0 = membrane), stored as uint32, or uint64 beyond 2^32 - 1 cells.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from unetflow.components import label_counted
from unetflow.labels import connectivity_structure
from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.settings import check, defaults
from unetflow.store import atomic_output, create_image, decode_probabilities, open_image, set_attrs

_D = defaults("segment")


def structure_for(dims: int, connectivity: int) -> np.ndarray:
    """The 3 x 3 x 3 neighbourhood of a zyx volume: a 2D one in the middle plane for per-slice cells."""
    if dims == 3:
        return connectivity_structure(3, connectivity)
    if connectivity not in (4, 8):
        raise ValueError(f"segment.connectivity {connectivity} is for 3D; per slice (dims 2) use 4 or 8")
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = connectivity_structure(2, connectivity)
    return structure


def _sizes(labels: da.Array) -> dict[int, int]:
    """Voxels per id, summed over blocks (memory grows with the cells, not the volume)."""

    def count(block: np.ndarray) -> np.ndarray:
        ids, n = np.unique(block, return_counts=True)
        return np.stack([ids, n])[None, None, None]

    pieces = labels.map_blocks(count, dtype=np.int64, chunks=(1, 1, 1)).to_delayed().ravel()
    total: dict[int, int] = {}
    for piece in da.compute(*pieces):
        for i, n in zip(*piece[0, 0, 0].tolist(), strict=True):
            if i:
                total[i] = total.get(i, 0) + n
    return total


def segment_volume(
    probabilities: str | Path,
    out: str | Path,
    threshold: float = _D["threshold"],
    connectivity: int = _D["connectivity"],
    dims: int | None = _D["dims"],
    min_size: int = _D["min_size"],
    cell_class: int = 1,
) -> Path:
    settings = check(
        "segment", {"threshold": threshold, "connectivity": connectivity, "dims": dims, "min_size": min_size}
    )
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
    dims = dims or int(probs.attrs.get("model_dims", 2))
    structure = structure_for(dims, connectivity)
    chunks = tuple(int(n) for n in probs.array.chunks)
    stored = da.from_array(probs.array, chunks=chunks, asarray=True)[cell_class]
    cell = stored.map_blocks(lambda b: decode_probabilities(b) > threshold, dtype=bool)
    labels, count = label_counted(cell, structure)
    if min_size > 0:
        sizes = _sizes(labels)
        kept = np.array(sorted(i for i, n in sizes.items() if n >= min_size), np.int64)
        top = max(sizes, default=0)
        table = np.zeros(top + 1, np.int64)
        table[kept] = np.arange(1, len(kept) + 1)
        labels = labels.map_blocks(lambda b: table[b], dtype=np.int64)
        count = len(kept)
    dtype = np.uint32 if count < 2**32 else np.uint64
    with atomic_output(out) as tmp:
        target = create_image(tmp, (z, y, x), dtype, chunks[1:], "zyx", probs.voxel_size, probs.unit)
        da.store(labels.astype(dtype), target, lock=False)
        set_attrs(
            tmp,
            {
                "kind": "segmentation",
                **settings,
                "dims": dims,
                "segments": count,
                "z_range": probs.attrs.get("z_range"),
                RECORD_KEY: make_record(
                    {"probabilities": input_fingerprint(probabilities)},
                    {**settings, "dims": dims, "cell_class": cell_class},
                    stage_code("segment"),
                ),
            },
        )
    return Path(out)
