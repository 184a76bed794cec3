"""Evaluate: the ISBI metrics of a segmentation against ground truth (`unetflow.metrics`, `unetflow.warping`) into
a CSV, one row per slice, and the volume's metrics into a one-row CSV, with the best of each over the challenge's
threshold sweep.

A segmentation of part of a stack (a fold's held-out slices) records the slice range it covers; it is compared with
those slices of the truth, and rows carry the slices' numbers in the whole stack. The CSV's provenance record sits
beside it (`<csv>.provenance.json`, see `unetflow.store.write_table`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
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
from unetflow.stages.segment import segment_volume
from unetflow.store import open_image, write_table
from unetflow.warping import warping_error

TILE = (1, 2048, 2048)  # what a slice is read in: memory per tile, whatever the slice's size
# The warping error needs a whole slice (topology is not additive over tiles): about 30 bytes per pixel, so slices
# up to 4096^2 (about 0.5 GB); larger slices get no warping error (NaN). The 3D warping error of a 3D segmentation
# needs the whole volume: up to 2^27 voxels (512 x 512 x 512, about 16 bytes per voxel); larger volumes get NaN.
WARPING_MAX_PIXELS = 4096 * 4096
WARPING_3D_MAX_VOXELS = 2**27


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


# volume metrics whose best over the sweep is kept
SWEPT = ("pixel_error", "rand_error", "info_error", "warping_error", "warping_error_3d")


def evaluate_volume(
    segmentation: str | Path,
    truth: str | Path,
    out: str | Path,
    connectivity: int = defaults("evaluate")["connectivity"],
    name: str = "",
    volume_out: str | Path | None = None,
    tile: tuple[int, int, int] = TILE,
    probabilities: str | Path | None = None,
    thresholds: Sequence[float] = (),
    segment_settings: dict | None = None,
    sweep_out: str | Path | None = None,
) -> pd.DataFrame:
    """Per-slice metrics into `out`; with `volume_out`, the volume's metrics from all its slices' counts pooled
    (each slice's cells are objects of their own; a 3D segmentation against cells connected in 3D) into a one-row
    CSV. Slices are read in tiles of `tile` and their counts added up (`unetflow.metrics.Counts`): equal to the
    whole-slice computation, in memory bounded by the tile.

    With `probabilities` and `thresholds` (the challenge's sweep), the volume is segmented again at each threshold
    with `segment_settings` and the volume row gets, for each metric of `SWEPT`, its best value over the sweep
    (`<metric>_best`) and the threshold that gave it (`<metric>_best_threshold`); with `sweep_out`, the volume's
    metrics at every threshold of the sweep, one row each (what the report chooses a threshold from across folds)."""
    check("evaluate", {"connectivity": connectivity, "thresholds": list(thresholds)})
    seg, gt = open_image(segmentation), open_image(truth)
    start, stop = seg.attrs.get("z_range") or (0, gt.shape[0])
    if seg.shape != (stop - start, *gt.shape[1:]):
        raise ValueError(
            f"{segmentation} has shape {seg.shape} but ground truth {truth} has {gt.shape} (slices {start}-{stop - 1})"
        )
    if thresholds and probabilities is None:
        raise ValueError("evaluate: a threshold sweep needs the probabilities the segmentation was made from")
    convention = recorded_convention(gt.attrs, truth)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".evaluate-cells-", dir=Path(out).parent) as scratch:
        per_slice = _true_cells(gt, convention, start, stop, structure_for(2, connectivity), Path(scratch) / "2d")
        # A 3D segmentation is judged against cells connected in 3D; a 2D one against each slice's cells.
        in_3d = None
        if seg.attrs.get("dims") == 3:
            in_3d = _true_cells(gt, convention, start, stop, structure_for(3, 6), Path(scratch) / "3d")

        def scores(labels: Image) -> tuple[list[dict], dict]:
            rows, volume = _count(labels, gt, convention, start, tile, per_slice, in_3d, name)
            warped = [_warping(labels, gt, convention, start, z, connectivity) for z in range(labels.shape[0])]
            for row, (wrong, pixels) in zip(rows, warped, strict=True):
                row["warping_error"] = wrong / pixels if pixels else np.nan
            pixels = sum(p for _, p in warped)
            warping = sum(w for w, _ in warped) / pixels if pixels and all(p for _, p in warped) else np.nan
            in_3d_warping = _warping_3d(labels, gt, convention, start) if labels.attrs.get("dims") == 3 else np.nan
            volume_row = {"volume": name, "slices": len(rows), **volume.metrics(), "warping_error": warping}
            return rows, {**volume_row, "warping_error_3d": in_3d_warping}

        rows, volume_row = scores(seg)
        swept = []
        for threshold in thresholds if volume_out is not None else ():  # the sweep only feeds the volume row
            settings = {**(segment_settings or {}), "threshold": float(threshold)}
            at = segment_volume(probabilities, Path(scratch) / f"sweep-{threshold}.ome.zarr", **settings)
            swept.append((float(threshold), scores(open_image(at))[1]))
    for metric in SWEPT if swept else ():
        found = [(row[metric], t) for t, row in swept if np.isfinite(row[metric])]
        value, threshold = min(found) if found else (np.nan, np.nan)
        volume_row[f"{metric}_best"], volume_row[f"{metric}_best_threshold"] = value, threshold
    frame = pd.DataFrame(rows)
    inputs = {"segmentation": input_fingerprint(segmentation), "truth": input_fingerprint(truth)}
    settings = {"connectivity": connectivity, "name": name, "thresholds": list(thresholds)}
    if swept:
        inputs["probabilities"] = input_fingerprint(probabilities)
        settings["segment"] = segment_settings or {}
    record = make_record(inputs, settings, stage_code("evaluate"))
    if volume_out is not None:
        write_table(pd.DataFrame([volume_row]), volume_out, record)
    if sweep_out is not None:
        if volume_out is None:
            raise ValueError("evaluate: the sweep's table needs the volume's metrics (volume_out)")
        columns = ["threshold", *volume_row]  # the volume row's columns, so that an empty sweep is a table too
        rows_at = [{"threshold": t, **row} for t, row in swept]
        write_table(pd.DataFrame(rows_at, columns=columns), sweep_out, record)
    write_table(frame, out, record)
    return frame


def _warping(seg: Image, gt: Image, convention: str, start: int, z: int, connectivity: int) -> tuple[int, int]:
    """(pixels still wrong after warping, pixels) of slice z, 2D; (0, 0) for a slice too large to warp whole."""
    pixels = int(np.prod(seg.shape[1:]))
    if pixels > WARPING_MAX_PIXELS:
        return 0, 0
    predicted = np.asarray(seg.array[z]) > 0
    truth = cell_mask(np.asarray(gt.array[start + z]), convention)
    return round(warping_error(truth, predicted, foreground=connectivity) * pixels), pixels


def _warping_3d(seg: Image, gt: Image, convention: str, start: int) -> float:
    """The warping error of the whole volume in 3D (cells 6-connected, membranes 26-connected, as a 3D segmentation
    labels cells); NaN for a volume too large to warp whole."""
    if int(np.prod(seg.shape)) > WARPING_3D_MAX_VOXELS:
        return np.nan
    predicted = np.asarray(seg.array[:]) > 0
    truth = cell_mask(np.asarray(gt.array[start : start + seg.shape[0]]), convention)
    return warping_error(truth, predicted, foreground=6)


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
