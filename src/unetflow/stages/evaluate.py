"""Evaluate: per-slice metrics of a segmentation against ground truth, into a CSV (one row per slice).

A segmentation of part of a stack (a fold's held-out slices) records the slice range it covers; it is compared with
those slices of the truth, and rows carry the slices' numbers in the whole stack. The CSV's provenance record sits
beside it (`<csv>.provenance.json`, see `unetflow.store.write_table`).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd

from unetflow.components import label
from unetflow.labels import INSTANCES, cell_mask, connectivity_structure, instance_labels, recorded_convention
from unetflow.metrics import Counts
from unetflow.provenance import input_fingerprint, make_record, stage_code
from unetflow.settings import check, defaults
from unetflow.store import Image, open_image, write_table


def _cells_in_3d(gt: Image, convention: str, start: int, stop: int) -> da.Array:
    """Ground-truth cells connected in 3D (6-connected; given instance ids as they are), blockwise."""
    labels = da.from_array(gt.array, chunks=gt.array.chunks, asarray=True)[start:stop]
    if convention == INSTANCES:
        return labels.astype(np.int64)
    cell = labels.map_blocks(lambda b: cell_mask(b, convention), dtype=bool)
    return label(cell, connectivity_structure(3, 6))


def evaluate_volume(
    segmentation: str | Path,
    truth: str | Path,
    out: str | Path,
    connectivity: int = defaults("evaluate")["connectivity"],
    name: str = "",
    volume_out: str | Path | None = None,
) -> pd.DataFrame:
    """Per-slice metrics into `out`; with `volume_out`, the volume's metrics from all its slices' counts pooled
    (each slice's cells are objects of their own) into a one-row CSV."""
    check("evaluate", {"connectivity": connectivity})
    seg, gt = open_image(segmentation), open_image(truth)
    start, stop = seg.attrs.get("z_range") or (0, gt.shape[0])
    if seg.shape != (stop - start, *gt.shape[1:]):
        raise ValueError(
            f"{segmentation} has shape {seg.shape} but ground truth {truth} has {gt.shape} (slices {start}-{stop - 1})"
        )
    convention = recorded_convention(gt.attrs, truth)
    # A 3D segmentation is judged against cells connected in 3D; a 2D one against each slice's cells.
    cells_3d = _cells_in_3d(gt, convention, start, stop) if seg.attrs.get("dims") == 3 else None
    rows, volume, offset = [], Counts(), 0
    for z in range(seg.shape[0]):
        segments = np.asarray(seg.array[z])
        labels = np.asarray(gt.array[start + z])
        true_cell = cell_mask(labels, convention)
        true_cells = instance_labels(labels, convention, connectivity).astype(np.int64)
        counts = Counts().add(segments > 0, segments, true_cell, true_cells)
        rows.append({"volume": name, "slice": start + z, **counts.metrics()})
        if cells_3d is not None:
            volume.merge(Counts().add(segments > 0, segments, true_cell, np.asarray(cells_3d[z])))
            continue
        # Predicted ids are unique across the volume already; true cells are numbered per slice, so shift them.
        volume.merge(counts, truth_offset=offset)
        offset += int(true_cells.max(initial=0))
    frame = pd.DataFrame(rows)
    inputs = {"segmentation": input_fingerprint(segmentation), "truth": input_fingerprint(truth)}
    record = make_record(inputs, {"connectivity": connectivity, "name": name}, stage_code("evaluate"))
    if volume_out is not None:
        row = pd.DataFrame([{"volume": name, "slices": len(rows), **volume.metrics()}])
        write_table(row, volume_out, record)
    write_table(frame, out, record)
    return frame
