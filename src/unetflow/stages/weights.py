"""The paper's loss weight map, w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), into zarr.

Definitions (Ronneberger et al. 2015, eq. 2):
- cells: connected components of the cell mask (4-connected in 2D, 6 in 3D by default) or the given
  instance ids;
- d1, d2: Euclidean distance from a pixel to the nearest and the second-nearest cell (0 inside a cell),
  in units of the finest voxel axis, so anisotropic voxels are measured physically;
- the boundary term is added on membrane (non-cell) pixels only: it exists to make the thin gaps between
  touching cells expensive; with fewer than two cells d2 is infinite and the term is 0;
- w_c: inverse class frequency, w_k = N / (K * n_k), normalized so that w_c averages to 1, computed over the
  whole labelled dataset (`balance="dataset"`, default) or per slice (`balance="image"`); a class absent
  from the counted pixels gets weight 1.

The boundary term is below `tolerance * w_membrane` (at most that fraction of the weight of any pixel it
applies to) once d1 + d2 > R = sigma * sqrt(2 ln(w0 / (tolerance * w_membrane))); with the default
tolerance 5e-7 the result is within a relative 1e-6 of the exact definition. So each cell's distance
transform runs only on its bounding box grown by R (`unetflow.distance.two_nearest`): the cost grows with
pixels, not with cells times pixels, and R is also the halo a unit needs (see `halo`).

At scale the map is computed unit by unit (units: files of the label store), in resumable steps that any number
of jobs share: `label` labels each unit's cells on its own, `merge` (one job) joins them across units
(`unetflow.components`) and sums the class counts, `compute` gives each unit its weights from the unit grown by
the halo with globally consistent cell ids, `gather` moves the output into place. No step holds more than a unit
and its halo, and none builds a graph of the volume's chunks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetflow.blocks import (
    Block,
    BlockGrid,
    block_grid,
    count_done,
    file_grid,
    finish_partial,
    open_partial,
    require_record,
    run_units,
    units_path,
)
from unetflow.components import Numbering, UnitStore
from unetflow.distance import two_nearest
from unetflow.image import Image
from unetflow.labels import INSTANCES, cell_mask, instance_labels, recorded_convention, structure_for
from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.settings import check, defaults
from unetflow.store import create_image, exclusive, levels_in, open_image, partial_path, remove
from unetflow.unit_faces import summary_path as _summary_path

_D = defaults("weights")


@dataclass(frozen=True)
class WeightParams:
    """Weight-map settings (`weights` in the config schema, where their defaults and checks live); `dims` is
    resolved (the schema's null follows the model's dims)."""

    w0: float = _D["w0"]
    sigma: float = _D["sigma"]
    balance: str = _D["balance"]
    connectivity: int | None = _D["connectivity"]  # None: 4 in 2D, 6 in 3D
    tolerance: float = _D["tolerance"]
    dims: int = defaults("model")["dims"]

    def __post_init__(self) -> None:
        check("weights", asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> WeightParams:
        """From a `weights` config section; dims null follows the model's default dims."""
        values = check("weights", d)
        if values["dims"] is None:
            values["dims"] = defaults("model")["dims"]
        return cls(**{f: values[f] for f in cls.__dataclass_fields__})  # scheduling settings left out

    @property
    def structure_connectivity(self) -> int:
        return self.connectivity or (4 if self.dims == 2 else 6)


def class_weights(counts: Sequence[int]) -> np.ndarray:
    """Inverse-frequency weights (membrane, cell) that average to 1 over the counted pixels."""
    counts = np.asarray(counts, np.float64)
    total, k = counts.sum(), len(counts)
    present = counts > 0
    w = np.ones(k)
    w[present] = total / (present.sum() * counts[present])
    return w


def cutoff_distance(w0: float, sigma: float, tolerance: float, floor: float) -> float:
    """d1 + d2 beyond which the boundary term is below `tolerance * floor`."""
    if w0 <= 0:
        return 0.0
    ratio = w0 / (tolerance * floor)
    return float(sigma * np.sqrt(2 * np.log(ratio))) if ratio > 1 else 0.0


def halo(params: WeightParams, w_membrane: float, spacing: Sequence[float]) -> tuple[int, ...]:
    """Pixels of context per axis that make a chunk's weights equal the whole-array result (to `tolerance`).

    Every cell pixel that can change a chunk pixel's weight lies within R (the cutoff) of it, so the chunk grown
    by ceil(R / spacing) pixels per axis, with cells identified globally, sees all of them.
    """
    spacing = np.asarray(spacing, float) / min(spacing)
    reach = cutoff_distance(params.w0, params.sigma, params.tolerance, w_membrane)
    return tuple(int(np.ceil(reach / s)) for s in spacing)


def weights_from_cells(
    cells: np.ndarray, w_class: np.ndarray, params: WeightParams, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """w(x) from instance ids (0 = membrane) and class weights (membrane, cell)."""
    cell = cells > 0
    w = np.where(cell, w_class[1], w_class[0]).astype(np.float64)
    if params.w0 > 0 and not cell.all():
        spacing_rel = None if spacing is None else np.asarray(spacing, float) / min(spacing)
        # The term is added on membrane pixels only, whose weight is at least w_class[0].
        cutoff = cutoff_distance(params.w0, params.sigma, params.tolerance, float(w_class[0]))
        d1, d2 = two_nearest(cells, cutoff, spacing_rel)
        near = ~cell & np.isfinite(d2)
        s = d1[near] + d2[near]
        w[near] += params.w0 * np.exp(-np.square(s) / (2 * params.sigma**2))
    return w.astype(np.float32)


def weight_map(
    labels: np.ndarray,
    convention: str,
    params: WeightParams,
    w_class: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """w(x) for one slice (dims=2) or one volume (dims=3) of labels; float32, finite everywhere."""
    labels = np.asarray(labels)
    if labels.ndim != params.dims:
        raise ValueError(f"expected {params.dims}D labels, got shape {labels.shape}")
    cells = instance_labels(labels, convention, params.structure_connectivity)
    if w_class is None:
        w_class = (
            np.ones(2) if params.balance == "none" else class_weights([int((cells == 0).sum()), int((cells > 0).sum())])
        )
    return weights_from_cells(cells, np.asarray(w_class, float), params, spacing)


@dataclass(frozen=True)
class WeightsJob:
    """One weight map: the label store it is made from, where it goes, its settings and (optionally) its units."""

    labels: str
    out: str
    params: WeightParams
    units_shape: tuple[int, int, int] | None = None  # default: the label store's files

    @property
    def store(self) -> Path:
        return partial_path(self.out)

    @property
    def units(self) -> Path:
        """Where each unit's own cell labels, summaries and class counts are kept until the map is complete."""
        return units_path(self.out)


@dataclass(frozen=True)
class _Plan:
    image: Image
    convention: str
    grid: BlockGrid
    structure: np.ndarray
    record: dict[str, Any]


def _plan(job: WeightsJob) -> _Plan:
    image = open_image(job.labels)
    convention = recorded_convention(image.attrs, job.labels)
    if image.axes != "zyx":
        raise ValueError(f"{job.labels}: expected axes zyx, got {image.axes}")
    if job.units_shape is not None:
        unit = tuple(min(int(u), s) for u, s in zip(job.units_shape, image.shape, strict=True))
        grid = block_grid(image.shape, unit, (0, 0, 0), unit)
    else:
        grid = file_grid(Path(job.labels))
    structure = structure_for(job.params.dims, job.params.structure_connectivity)
    record = make_record({"labels": input_fingerprint(job.labels)}, asdict(job.params), stage_code("weights"))
    return _Plan(image, convention, grid, structure, record)


def _counts_path(root: Path, index: Sequence[int]) -> Path:
    return _summary_path(root / "counts", index).with_suffix(".json")


def label(job: WeightsJob, part: tuple[int, int] = (0, 1), limit: int | None = None) -> int:
    """Step 1 for the units of job `part` (i of n), at most `limit` of them: each unit's cells labelled on its own
    (binary labels) and its cell voxels counted per slice. Returns units done."""
    plan = _plan(job)

    def create(fresh: Path) -> None:
        UnitStore.create(fresh, plan.grid, plan.image.array.chunks, {RECORD_KEY: plan.record})

    open_partial(job.units, plan.record["fingerprint"], create)
    cells = UnitStore(job.units, plan.grid)

    def one(block: Block) -> None:
        cell = cell_mask(np.asarray(plan.image.array[block.write]), plan.convention)
        if plan.convention != INSTANCES:
            cells.label(block, cell, plan.structure, 0)
        path = _counts_path(job.units, block.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([int(n) for n in cell.sum(axis=(1, 2))]))

    return run_units(job.units, plan.grid, part, one, limit)


def _class_weights_per_slice(job: WeightsJob, plan: _Plan) -> np.ndarray:
    """(slices, 2) class weights (membrane, cell) from the units' counts, as `balance` asks."""
    z, y, x = plan.grid.shape
    cells = np.zeros(z, np.int64)
    for k in range(len(plan.grid)):
        block = plan.grid[k]
        cells[block.write[0]] += json.loads(_counts_path(job.units, block.index).read_text())
    if job.params.balance == "none":
        return np.ones((z, 2))
    if job.params.balance == "image" and job.params.dims == 2:
        return np.array([class_weights([y * x - n, n]) for n in cells])
    total = int(cells.sum())
    return np.tile(class_weights([z * y * x - total, total]), (z, 1))


def merge(job: WeightsJob) -> Numbering | None:
    """Step 2 (one job): join the cells across units, class weights from the summed counts, the output created."""
    plan = _plan(job)
    require_record(job.units, plan.record["fingerprint"], "weights --phase label")
    missing = len(plan.grid) - count_done(job.units)
    if missing:
        raise RuntimeError(f"{job.units}: {missing} units are not labelled yet; run every `--phase label` job first")
    numbering = None
    if plan.convention != INSTANCES:
        numbering = UnitStore(job.units, plan.grid).merge(plan.structure, 0)
    per_slice = _class_weights_per_slice(job, plan)
    np.save(job.units / "class_weights.npy", per_slice)
    spacing = _spacing(job, plan)
    attrs = {
        "kind": "weights",
        "w0": job.params.w0,
        "sigma": job.params.sigma,
        "tolerance": job.params.tolerance,
        "balance": job.params.balance,
        "class_weights": per_slice[0].tolist() if job.params.balance != "image" else None,
        "connectivity": job.params.structure_connectivity,
        "dims": job.params.dims,
        "halo": list(halo(job.params, float(per_slice[:, 0].min()), spacing)),
        RECORD_KEY: plan.record,
    }
    image, unit = plan.image, plan.grid.block_shape
    chunks = tuple(int(c) for c in image.array.chunks)
    chunks = tuple(c if u % c == 0 else u for c, u in zip(chunks, unit, strict=True))

    def create(fresh: Path) -> None:
        create_image(fresh, image.shape, np.float32, chunks, "zyx", image.voxel_size, image.unit, attrs, shards=unit)

    open_partial(job.store, plan.record["fingerprint"], create)
    return numbering


def _spacing(job: WeightsJob, plan: _Plan) -> tuple[float, ...]:
    return plan.image.voxel_size[1:] if job.params.dims == 2 else plan.image.voxel_size


def compute(job: WeightsJob, part: tuple[int, int] = (0, 1)) -> int:
    """Step 3 for the units of job `part`: each unit's weights from the unit grown by the halo. Returns units
    done."""
    plan = _plan(job)
    require_record(job.store, plan.record["fingerprint"], "weights --phase merge")
    per_slice = np.load(job.units / "class_weights.npy")
    store = UnitStore(job.units, plan.grid)
    numbering = store.numbering() if plan.convention != INSTANCES else None
    spacing = _spacing(job, plan)
    context = halo(job.params, float(per_slice[:, 0].min()), spacing)
    context = (0, *context) if job.params.dims == 2 else context
    (target,) = levels_in(job.store)

    def cells_in(region: tuple[slice, ...]) -> np.ndarray:
        """Cell ids of a region, the same for a cell wherever it is read (given ids, or joined across units)."""
        if numbering is None:
            return instance_labels(np.asarray(plan.image.array[region]), plan.convention)
        return store.cells_in(region, numbering)

    def one(block: Block) -> None:
        region = tuple(
            slice(max(0, w.start - c), min(s, w.stop + c))
            for w, c, s in zip(block.write, context, plan.grid.shape, strict=True)
        )
        cells = cells_in(region)
        if job.params.dims == 3:
            w = weights_from_cells(cells, per_slice[0], job.params, spacing)
        else:
            z0 = region[0].start
            w = np.stack([weights_from_cells(c, per_slice[z0 + k], job.params, spacing) for k, c in enumerate(cells)])
        crop = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(block.write, region, strict=True))
        target[block.write] = w[crop]

    return run_units(job.store, plan.grid, part, one)


def gather(job: WeightsJob) -> Path:
    """Check that every unit has its weights, move the map into place, drop the units' store."""
    out = finish_partial(job.out, grid=_plan(job).grid)
    remove(job.units)
    return out


def compute_weights(
    labels_path: str | Path, out: str | Path, params: WeightParams, chunks: Sequence[int] | None = None
) -> Path:
    """Every step in this process: `weights.ome.zarr` from a label OME-Zarr (zyx), unit by unit (`chunks`, or the
    label store's files), equal to the whole-array computation while memory stays bounded by a unit and its halo.
    """
    units = tuple(int(c) for c in chunks) if chunks is not None else None
    job = WeightsJob(str(labels_path), str(out), params, units)
    with exclusive(job.out):
        label(job)
        merge(job)
        compute(job)
        return gather(job)
