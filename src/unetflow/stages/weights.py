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
pixels, not with cells times pixels, and R is also the halo a chunk needs (see `halo`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import dask.array as da
import numpy as np
from dask.array import overlap

from unetflow.components import label as label_chunked
from unetflow.distance import two_nearest
from unetflow.labels import INSTANCES, cell_mask, connectivity_structure, instance_labels, recorded_convention
from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.settings import check, defaults
from unetflow.store import atomic_output, create_image, open_image, set_attrs

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
        return cls(**values)

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


def global_cells(labels: da.Array, convention: str, params: WeightParams) -> da.Array:
    """Instance ids over the whole volume, chunk by chunk: given ids, or connected components that are
    consistent across chunk borders (per slice in 2D, in 3D otherwise)."""
    if convention == INSTANCES:
        return labels
    mask = labels.map_blocks(lambda b: cell_mask(b, convention), dtype=bool)
    if params.dims == 2:
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = connectivity_structure(2, params.structure_connectivity)
    else:
        structure = connectivity_structure(3, params.structure_connectivity)
    return label_chunked(mask, structure)


def compute_weights(
    labels_path: str | Path, out: str | Path, params: WeightParams, chunks: Sequence[int] | None = None
) -> Path:
    """Stream a label OME-Zarr (zyx) chunk by chunk and write `weights.ome.zarr` with the same chunks.

    Each chunk is computed with a halo (see `halo`) from globally consistent cell ids, so the result equals
    the whole-array computation while memory stays bounded by the chunk size.
    """
    image = open_image(labels_path)
    convention = recorded_convention(image.attrs, labels_path)
    if image.axes != "zyx":
        raise ValueError(f"{labels_path}: expected axes zyx, got {image.axes}")
    labels = da.from_array(image.array, chunks=image.array.chunks, asarray=True)
    if chunks is not None:
        labels = labels.rechunk(tuple(chunks))
    cells = global_cells(labels, convention, params)
    cell = labels.map_blocks(lambda b: cell_mask(b, convention), dtype=bool)
    if params.balance == "dataset":
        n_cell = int(cell.sum().compute())
        per_slice = np.tile(class_weights([labels.size - n_cell, n_cell]), (labels.shape[0], 1))
    elif params.balance == "image" and params.dims == 2:
        n_cell = cell.sum(axis=(1, 2)).compute()
        plane = labels.shape[1] * labels.shape[2]
        per_slice = np.array([class_weights([plane - n, n]) for n in n_cell])
    elif params.balance == "image":
        n_cell = int(cell.sum().compute())
        per_slice = np.tile(class_weights([labels.size - n_cell, n_cell]), (labels.shape[0], 1))
    else:
        per_slice = np.ones((labels.shape[0], 2))
    spacing = image.voxel_size[1:] if params.dims == 2 else image.voxel_size
    context = halo(params, float(per_slice[:, 0].min()), spacing)
    depth = {0: 0, 1: context[0], 2: context[1]} if params.dims == 2 else dict(enumerate(context))
    # An axis held in one chunk needs no halo; a halo never needs to exceed the axis.
    depth = {a: 0 if len(cells.chunks[a]) == 1 else min(d, cells.shape[a]) for a, d in depth.items()}

    def one_block(block: np.ndarray, block_info=None) -> np.ndarray:
        z0, z1 = block_info[0]["array-location"][0]
        if params.dims == 3:
            return weights_from_cells(block, per_slice[0], params, spacing)
        return np.stack([weights_from_cells(block[k], per_slice[z0 + k], params, spacing) for k in range(z1 - z0)])

    # Chunks thinner than the halo are merged with a neighbour first (dask needs depth <= chunk size);
    # the result is cut back to the store's chunks so that every write covers whole chunks.
    grown = cells.rechunk(
        tuple(
            overlap.ensure_minimum_chunksize(depth[axis], c) if depth[axis] else c
            for axis, c in enumerate(cells.chunks)
        )
    )
    weights = da.map_overlap(one_block, grown, depth=depth, boundary="none", dtype=np.float32)
    weights = weights.rechunk(labels.chunks)
    with atomic_output(out) as tmp:
        target = create_image(tmp, image.shape, np.float32, labels.chunksize, "zyx", image.voxel_size, image.unit)
        da.store(weights, target, lock=False)
        set_attrs(
            tmp,
            {
                "kind": "weights",
                "w0": params.w0,
                "sigma": params.sigma,
                "tolerance": params.tolerance,
                "balance": params.balance,
                "class_weights": per_slice[0].tolist() if params.balance != "image" else None,
                "connectivity": params.structure_connectivity,
                "dims": params.dims,
                "halo": list(context),
                RECORD_KEY: make_record(
                    {"labels": input_fingerprint(labels_path)}, asdict(params), stage_code("weights")
                ),
            },
        )
    return Path(out)
