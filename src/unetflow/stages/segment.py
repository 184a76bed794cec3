"""Segment: threshold the cell probability and label connected components into an instance OME-Zarr, unit by unit.

The units are the probability store's files (zarr shards, or chunks where it has none), labelled in three
resumable steps (`unetflow.components`): `label` (any number of jobs), `merge` (one job), `relabel` (any number
of jobs), then `gather` moves the output into place. `segment_volume` runs them all in one process. Cells are
labelled per slice (dims 2, the paper's 2D network) or connected in 3D (dims 3), equal to labelling the whole volume
at once up to the numbering; cells smaller than `min_size` voxels are dropped. Ids are 1..n (0 = membrane),
stored as uint32, or uint64 beyond 2^32 - 1 cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetflow.blocks import (
    Block,
    BlockGrid,
    count_done,
    file_grid,
    finish_partial,
    open_partial,
    require_record,
    run_units,
    units_path,
)
from unetflow.components import Numbering, UnitStore
from unetflow.image import Image
from unetflow.labels import structure_for
from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.pyramid import level_count
from unetflow.settings import check, defaults, result_settings
from unetflow.store import (
    create_image,
    decode_probabilities,
    exclusive,
    label_metadata,
    levels_in,
    open_image,
    partial_path,
    remove,
    write_levels,
)
from unetflow.watershed import seeded_watershed

_D = defaults("segment")
_RESULT = tuple(result_settings("segment", _D, "segment"))  # the settings that change a segmentation


@dataclass(frozen=True)
class SegmentJob:
    """One segmentation: its input, its output and the settings that change it (checked against the schema)."""

    probabilities: str
    out: str
    threshold: float = _D["threshold"]
    connectivity: int = _D["connectivity"]
    dims: int | None = _D["dims"]
    min_size: int = _D["min_size"]
    method: str = _D["method"]
    seeds: str = _D["seeds"]
    seed_threshold: float = _D["seed_threshold"]
    seed_distance: int = _D["seed_distance"]
    cell_class: int = 1

    def __post_init__(self) -> None:
        check("segment", self.settings)

    @classmethod
    def from_settings(cls, probabilities: str | Path, out: str | Path, settings: dict[str, Any]) -> SegmentJob:
        """A job from a `segment` config section (checked, defaults filled in; scheduling settings left out)."""
        s = check("segment", settings)
        return cls(str(probabilities), str(out), **{k: s[k] for k in _RESULT})

    @property
    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _RESULT}

    @property
    def store(self) -> Path:
        """Where the output is built."""
        return partial_path(self.out)

    @property
    def units(self) -> Path:
        """Where each unit's own labels and summary are kept until the output is complete."""
        return units_path(self.out)


@dataclass(frozen=True)
class _Plan:
    probs: Image
    grid: BlockGrid
    dims: int
    structure: np.ndarray
    record: dict[str, Any]


def _plan(job: SegmentJob) -> _Plan:
    probs = open_image(job.probabilities)
    if probs.attrs.get("complete") is not True:
        raise ValueError(
            f"{job.probabilities}: not a finished prediction (no 'complete' mark); run or finish predict first"
        )
    if probs.axes != "czyx":
        raise ValueError(f"{job.probabilities}: expected class probabilities with axes czyx, got {probs.axes!r}")
    if not 0 <= job.cell_class < probs.shape[0]:
        raise ValueError(f"{job.probabilities}: cell class {job.cell_class} not among its {probs.shape[0]} classes")
    dims = job.dims or int(probs.attrs.get("model_dims", 2))
    record = make_record(
        {"probabilities": input_fingerprint(job.probabilities)},
        {**job.settings, "dims": dims, "cell_class": job.cell_class},
        stage_code("segment"),
    )
    grid = file_grid(Path(job.probabilities), leading_axes=1)
    if job.method == "watershed" and (dims != 2 or tuple(grid.block_shape[1:]) != tuple(grid.shape[1:])):
        raise ValueError(
            f"{job.probabilities}: segment.method watershed runs per whole slice: it needs segment.dims 2 (got "
            f"{dims}) and probability files of whole slices (got {tuple(grid.block_shape)} of {tuple(grid.shape)}; "
            "slices up to about 4096 x 4096 at predict.file_mb 64); use segment.method components"
        )
    return _Plan(probs, grid, dims, structure_for(dims, job.connectivity), record)


def label(job: SegmentJob, part: tuple[int, int] = (0, 1), limit: int | None = None) -> int:
    """Step 1 for the units of job `part` (i of n): threshold and label each on its own, at most `limit` of them
    (a time-boxed run; the next run resumes). Returns units done."""
    plan = _plan(job)
    chunks = tuple(int(c) for c in plan.probs.array.chunks[1:])

    def create(fresh: Path) -> None:
        UnitStore.create(fresh, plan.grid, chunks, {RECORD_KEY: plan.record})

    open_partial(job.units, plan.record["fingerprint"], create)
    cells = UnitStore(job.units, plan.grid)

    def one(block: Block) -> None:
        cell = decode_probabilities(plan.probs.array[(job.cell_class, *block.write)])
        found = None
        if job.method == "watershed":
            found, offset = np.zeros(cell.shape, np.int64), 0
            for z in range(cell.shape[0]):  # ids unique within the unit: each slice's after the previous'
                ids = seeded_watershed(
                    cell[z], job.threshold, job.seeds, job.seed_threshold, job.seed_distance, job.connectivity
                )
                found[z] = np.where(ids > 0, ids + offset, 0)
                offset += int(ids.max(initial=0))
        cells.label(block, cell > job.threshold, plan.structure, job.min_size, found)

    return run_units(job.units, plan.grid, part, one, limit)


def merge(job: SegmentJob) -> Numbering:
    """Step 2 (one job): join the units' face cells, number every cell, and create the output to relabel into."""
    plan = _plan(job)
    require_record(job.units, plan.record["fingerprint"], "segment --phase label")
    missing = len(plan.grid) - count_done(job.units)
    if missing:
        raise RuntimeError(f"{job.units}: {missing} units are not labelled yet; run every `--phase label` job first")
    numbering = UnitStore(job.units, plan.grid).merge(plan.structure, job.min_size)
    dtype = np.uint32 if numbering.count < 2**32 else np.uint64
    attrs = {
        "kind": "segmentation",
        **job.settings,
        "dims": plan.dims,
        "segments": numbering.count,
        "z_range": plan.probs.attrs.get("z_range"),
        RECORD_KEY: plan.record,
    }
    chunks = tuple(int(c) for c in plan.probs.array.chunks[1:])
    probs = plan.probs

    def create(fresh: Path) -> None:
        create_image(
            fresh,
            plan.grid.shape,
            dtype,
            chunks,
            "zyx",
            probs.voxel_size,
            probs.unit,
            attrs,
            shards=plan.grid.block_shape,
            levels=level_count(plan.grid.shape[-2:], plan.grid.block_shape[-2:]),
            ome_extra=label_metadata(),
        )

    open_partial(job.store, plan.record["fingerprint"], create)
    return numbering


def relabel(job: SegmentJob, part: tuple[int, int] = (0, 1)) -> int:
    """Step 3 for the units of job `part`: write each unit's final ids. Returns units done."""
    plan = _plan(job)
    require_record(job.store, plan.record["fingerprint"], "segment --phase merge")
    cells = UnitStore(job.units, plan.grid)
    numbering = cells.numbering()
    levels = levels_in(job.store)

    def one(block: Block) -> None:
        write_levels(levels, block.write, cells.relabel(block, numbering).astype(levels[0].dtype), labels=True)

    return run_units(job.store, plan.grid, part, one)


def gather(job: SegmentJob) -> Path:
    """Check that every unit is relabelled, move the output into place, drop the units' store."""
    out = finish_partial(job.out)
    remove(job.units)
    return out


def segment_volume(
    probabilities: str | Path,
    out: str | Path,
    threshold: float = _D["threshold"],
    connectivity: int = _D["connectivity"],
    dims: int | None = _D["dims"],
    min_size: int = _D["min_size"],
    cell_class: int = 1,
    **watershed: Any,
) -> Path:
    """Every step in this process: the whole segmentation of one probability store (resumable); `watershed`:
    `method` and the seeds' settings (see `SegmentJob`)."""
    job = SegmentJob(
        str(probabilities), str(out), threshold, connectivity, dims, min_size, cell_class=cell_class, **watershed
    )
    with exclusive(job.out):
        label(job)
        merge(job)
        relabel(job)
        return gather(job)
