"""Evaluate: per-slice metrics of a segmentation against ground truth, into a CSV (one row per slice).

A segmentation of part of a stack (a fold's held-out slices) records the slice range it covers; it is compared with
those slices of the truth, and rows carry the slices' numbers in the whole stack. The CSV's provenance record sits
beside it (`<csv>.provenance.json`, see `unetflow.store.write_table`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.blocks import block_grid
from unetflow.components import UnitStore
from unetflow.image import Image
from unetflow.labels import INSTANCES, cell_mask, recorded_convention, structure_for
from unetflow.metrics import Counts
from unetflow.provenance import input_fingerprint, make_record, stage_code
from unetflow.settings import check, defaults
from unetflow.store import open_image, write_table

TILE = (1, 2048, 2048)  # what a slice is read in: memory per tile, whatever the slice's size


def _true_cells(
    gt: Image, convention: str, start: int, stop: int, structure: np.ndarray, scratch: Path
) -> Callable[[tuple[slice, ...]], np.ndarray]:
    """Ground-truth cell ids of any tile of slices [start, stop), the same for a cell in every tile: given instance
    ids as they are, else the binary labels' cells under `structure`, labelled unit by unit (units: the label
    store's files) in the folder `scratch` (`unetflow.components`), memory one unit at a time."""

    def shifted(region: tuple[slice, ...]) -> tuple[slice, ...]:
        return (slice(region[0].start + start, region[0].stop + start), *region[1:])

    if convention == INSTANCES:
        return lambda region: np.asarray(gt.array[shifted(region)]).astype(np.int64)
    shape = (stop - start, *gt.shape[1:])
    files = getattr(gt.array, "shards", None) or gt.array.chunks
    unit = tuple(min(int(u), s) for u, s in zip(files, shape, strict=True))
    grid = block_grid(shape, unit, (0, 0, 0), unit)
    UnitStore.create(scratch, grid, gt.array.chunks, {})
    cells = UnitStore(scratch, grid)
    for block in grid:
        cells.label(block, cell_mask(np.asarray(gt.array[shifted(block.write)]), convention), structure, 0)
    numbering = cells.merge(structure, 0)
    return lambda region: cells.cells_in(region, numbering)


def evaluate_volume(
    segmentation: str | Path,
    truth: str | Path,
    out: str | Path,
    connectivity: int = defaults("evaluate")["connectivity"],
    name: str = "",
    volume_out: str | Path | None = None,
    tile: tuple[int, int, int] = TILE,
) -> pd.DataFrame:
    """Per-slice metrics into `out`; with `volume_out`, the volume's metrics from all its slices' counts pooled
    (each slice's cells are objects of their own; a 3D segmentation against cells connected in 3D) into a one-row
    CSV. Slices are read in tiles of `tile` and their counts added up (`unetflow.metrics.Counts`): equal to the
    whole-slice computation, in memory bounded by the tile."""
    check("evaluate", {"connectivity": connectivity})
    seg, gt = open_image(segmentation), open_image(truth)
    start, stop = seg.attrs.get("z_range") or (0, gt.shape[0])
    if seg.shape != (stop - start, *gt.shape[1:]):
        raise ValueError(
            f"{segmentation} has shape {seg.shape} but ground truth {truth} has {gt.shape} (slices {start}-{stop - 1})"
        )
    convention = recorded_convention(gt.attrs, truth)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".evaluate-cells-", dir=Path(out).parent) as scratch:
        per_slice = _true_cells(gt, convention, start, stop, structure_for(2, connectivity), Path(scratch) / "2d")
        # A 3D segmentation is judged against cells connected in 3D; a 2D one against each slice's cells.
        in_3d = None
        if seg.attrs.get("dims") == 3:
            in_3d = _true_cells(gt, convention, start, stop, structure_for(3, 6), Path(scratch) / "3d")
        rows, volume = _count(seg, gt, convention, start, tile, per_slice, in_3d, name)
    frame = pd.DataFrame(rows)
    inputs = {"segmentation": input_fingerprint(segmentation), "truth": input_fingerprint(truth)}
    record = make_record(inputs, {"connectivity": connectivity, "name": name}, stage_code("evaluate"))
    if volume_out is not None:
        row = pd.DataFrame([{"volume": name, "slices": len(rows), **volume.metrics()}])
        write_table(row, volume_out, record)
    write_table(frame, out, record)
    return frame


def _count(
    seg: Image,
    gt: Image,
    convention: str,
    start: int,
    tile: tuple[int, int, int],
    per_slice: Callable[[tuple[slice, ...]], np.ndarray],
    in_3d: Callable[[tuple[slice, ...]], np.ndarray] | None,
    name: str,
) -> tuple[list[dict], Counts]:
    """Per-slice rows and the volume's counts, tile by tile."""
    _, ty, tx = (int(t) for t in tile)
    rows, volume, offset = [], Counts(), 0
    for z in range(seg.shape[0]):
        counts, counts_3d, top = Counts(), Counts(), 0
        for y0 in range(0, seg.shape[1], ty):
            for x0 in range(0, seg.shape[2], tx):
                region = (slice(y0, min(y0 + ty, seg.shape[1])), slice(x0, min(x0 + tx, seg.shape[2])))
                segments = np.asarray(seg.array[(z, *region)])
                true_cell = cell_mask(np.asarray(gt.array[(start + z, *region)]), convention)
                cells = per_slice((slice(z, z + 1), *region))[0]
                counts.add(segments > 0, segments, true_cell, cells)
                top = max(top, int(cells.max(initial=0)))
                if in_3d is not None:
                    counts_3d.add(segments > 0, segments, true_cell, in_3d((slice(z, z + 1), *region))[0])
        rows.append({"volume": name, "slice": start + z, **counts.metrics()})
        if in_3d is not None:
            volume.merge(counts_3d)
            continue
        # Predicted ids are unique across the volume already; true ids of a slice are shifted past the previous
        # slices' (given instance ids repeat from slice to slice).
        volume.merge(counts, truth_offset=offset)
        offset += top
    return rows, volume
