"""Connected components of a mask larger than memory, unit by unit and across cluster jobs.

A volume is cut into units (whole files of the input store). Three steps, each resumable, the first and last
split over any number of jobs:

1. **label** each unit on its own (`label_unit`): cells that touch none of the unit's faces are complete, so those
   smaller than `min_size` are dropped at once and the rest are numbered 1..m; cells on a face are numbered m+1..k.
   The unit's face planes, m and the face cells' sizes are kept in a small summary file.
2. **merge** (one job, `unetflow.cell_merge`): join the face cells across every face as a tree of groups of
   units, sum their sizes, drop those below `min_size`, and number everything; memory follows one group of the
   tree, not the volume.
3. **relabel** each unit through its offset and the table of joined cells (`relabel_unit`).

The result equals labelling the whole mask at once, up to the numbering, min_size included (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetflow.blocks import Block, BlockGrid
from unetflow.cell_merge import Numbering, merge_units
from unetflow.unit_faces import LOCAL_BITS, UnitSummary, connecting_axes, load_summary, save_summary, summary_path

__all__ = ["Numbering", "UnitStore", "connecting_axes", "label_unit", "relabel_unit", "summary_path"]


def _faces(labels: np.ndarray, axes: Sequence[int]) -> dict[str, np.ndarray]:
    """The first and last plane of a unit along each connecting axis, kept 3D (length 1 along the axis)."""
    out = {}
    for axis in axes:
        n = labels.shape[axis]
        for side, index in (("low", 0), ("high", n - 1)):
            out[f"{side}{axis}"] = np.take(labels, [index], axis=axis)
    return out


def label_unit(
    mask: np.ndarray, structure: np.ndarray, min_size: int, cells: np.ndarray | None = None
) -> tuple[np.ndarray, UnitSummary]:
    """Label one unit (step 1): uint32 ids, complete cells first, then the cells on a face. With `cells` (ids
    found otherwise, 0 outside cells) those are the unit's cells instead of the mask's components."""
    if mask.size >= 2**32:
        raise ValueError(f"a unit of {mask.shape} voxels is too large to label on its own (2^32 voxels at most)")
    if cells is None:
        local, count = ndimage.label(mask, structure=structure)
    else:
        ids, inverse = np.unique(cells, return_inverse=True)
        local = inverse.reshape(cells.shape) + (0 if ids[0] == 0 else 1)
        count = int(local.max())
    axes = connecting_axes(structure)
    on_face = np.zeros(count + 1, bool)
    for plane in _faces(local, axes).values():
        on_face[np.unique(plane)] = True
    on_face[0] = False
    sizes = np.bincount(local.ravel(), minlength=count + 1)
    ids = np.arange(count + 1)
    complete = (ids > 0) & ~on_face & (sizes >= min_size)
    table = np.zeros(count + 1, np.uint32)
    m = int(complete.sum())
    table[complete] = np.arange(1, m + 1, dtype=np.uint32)
    table[on_face] = np.arange(m + 1, m + 1 + int(on_face.sum()), dtype=np.uint32)
    labels = table[local]
    return labels, UnitSummary(m, sizes[on_face].astype(np.int64), _faces(labels, axes))


def relabel_unit(labels: np.ndarray, unit: int, complete: int, numbering: Numbering) -> np.ndarray:
    """Step 3: a unit's final ids (int64) from its local ones."""
    local = labels.astype(np.int64)
    out = np.zeros(local.shape, np.int64)
    own = (local > 0) & (local <= complete)
    out[own] = local[own] + numbering.offsets[unit]
    face = local > complete
    if face.any():
        out[face] = numbering.ids(unit, local[face] + (np.int64(unit) << LOCAL_BITS))
    return out


class UnitStore:
    """A folder holding what the three steps share: each unit's own labels (array "0", uint32), their summaries,
    and once merged the numbering. Made by `create` inside a store that `unetflow.blocks.open_partial` names."""

    def __init__(self, root: str | Path, grid: BlockGrid) -> None:
        self.root, self.grid = Path(root), grid

    @staticmethod
    def create(root: Path, grid: BlockGrid, chunks: Sequence[int], attrs: dict) -> None:
        """Lay out a fresh store at `root` for `grid`'s units, in files of one unit (chunks dividing it)."""
        import zarr

        group = zarr.open_group(str(root), mode="w", zarr_format=3)
        group.attrs["unetflow"] = attrs
        unit = tuple(grid.block_shape)
        chunks = tuple(int(c) if u % int(c) == 0 else u for c, u in zip(chunks, unit, strict=True))
        shards = None if chunks == unit else unit
        group.create_array("0", shape=grid.shape, chunks=chunks, shards=shards, dtype=np.uint32, fill_value=0)

    @cached_property
    def _array(self):
        """The units' labels, opened once per store (not once per unit)."""
        import zarr

        return zarr.open_group(str(self.root), mode="r+")["0"]

    def label(
        self, block: Block, mask: np.ndarray, structure: np.ndarray, min_size: int, cells: np.ndarray | None = None
    ) -> None:
        """Step 1 for one unit: label it (or take `cells`, see `label_unit`) and keep its labels and summary."""
        labels, summary = label_unit(mask, structure, min_size, cells)
        self._array[block.write] = labels
        save_summary(summary_path(self.root / "summaries", block.index), summary)

    def merge(self, structure: np.ndarray, min_size: int) -> Numbering:
        """Step 2: the numbering of every unit's cells, kept in the store."""
        numbering = merge_units(self.grid, self.root / "summaries", structure, min_size, self.root / "tables")
        numbering.save(self.root / "numbering.npz")
        return numbering

    def numbering(self) -> Numbering:
        return Numbering.load(self.root / "numbering.npz")

    @lru_cache(maxsize=256)  # noqa: B019 - one store per job, a few hundred small summaries
    def _complete(self, index: tuple[int, ...]) -> int:
        return load_summary(summary_path(self.root / "summaries", index)).complete

    def relabel(self, block: Block, numbering: Numbering) -> np.ndarray:
        """Step 3 for one unit: its final ids."""
        linear = int(np.ravel_multi_index(block.index, self.grid.counts))
        return relabel_unit(self._array[block.write], linear, self._complete(block.index), numbering)

    def cells_in(self, region: tuple[slice, ...], numbering: Numbering) -> np.ndarray:
        """Final ids of any region (int64): the same for a cell wherever it is read."""
        local = self._array
        out = np.zeros([r.stop - r.start for r in region], np.int64)
        first = [r.start // b for r, b in zip(region, self.grid.block_shape, strict=True)]
        last = [(r.stop - 1) // b for r, b in zip(region, self.grid.block_shape, strict=True)]
        for offset in np.ndindex(*[b - a + 1 for a, b in zip(first, last, strict=True)]):
            index = tuple(a + i for a, i in zip(first, offset, strict=True))
            unit = self.grid.block(index)
            cut = tuple(
                slice(max(r.start, w.start), min(r.stop, w.stop)) for r, w in zip(region, unit.write, strict=True)
            )
            inside = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(cut, unit.write, strict=True))
            at = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(cut, region, strict=True))
            linear = int(np.ravel_multi_index(index, self.grid.counts))
            out[at] = relabel_unit(local[inside_of(unit, inside)], linear, self._complete(index), numbering)
        return out


def inside_of(unit: Block, inside: tuple[slice, ...]) -> tuple[slice, ...]:
    """A sub-region of a unit in volume coordinates."""
    return tuple(slice(w.start + i.start, w.start + i.stop) for w, i in zip(unit.write, inside, strict=True))
