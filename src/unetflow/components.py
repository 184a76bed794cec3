"""Connected components of a mask larger than memory, unit by unit and across cluster jobs.

A volume is cut into units (whole files of the input store). Three steps, each resumable, the first and last
split over any number of jobs:

1. **label** each unit on its own (`label_unit`): cells that touch none of the unit's faces are complete, so those
   smaller than `min_size` are dropped at once and the rest are numbered 1..m; cells on a face are numbered m+1..k.
   The unit's face planes, m and the face cells' sizes are kept in a small summary file.
2. **merge** (`merge_units`, one job): join the face cells across every face (edges and corners included for
   diagonal connectivity) with a sparse-graph connected-components pass, sum their sizes, drop those below
   `min_size`, and number everything: the complete cells of unit u get ids offset[u] + 1..m_u, joined cells follow
   those of their group. Memory grows with the cells that touch a face of one group: a z row of units for
   per-slice cells, the whole volume in 3D.
3. **relabel** each unit through its offset and the table of joined cells (`relabel_unit`).

The result equals labelling the whole mask at once, up to the numbering, min_size included (tested).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from unetflow.blocks import Block, BlockGrid, block_key

LOCAL_BITS = 32  # a face cell is named unit << 32 | its id in the unit


def face_pairs(before: np.ndarray, after: np.ndarray, axis: int, structure: np.ndarray) -> np.ndarray:
    """(id, id) pairs joined across a face: `before` is the last plane of one chunk, `after` the next's first."""
    pairs = []
    center = np.array(structure.shape) // 2
    for offset in itertools.product(*(range(-c, c + 1) for c in center)):
        if offset[axis] != 1 or not structure[tuple(np.array(offset) + center)]:
            continue
        a, b = before, after
        for ax, o in enumerate(offset):
            if ax == axis or o == 0:
                continue
            n = a.shape[ax]
            a = a[tuple(slice(max(0, -o), n - max(0, o)) if k == ax else slice(None) for k in range(a.ndim))]
            b = b[tuple(slice(max(0, o), n - max(0, -o)) if k == ax else slice(None) for k in range(b.ndim))]
        both = (a > 0) & (b > 0)
        pairs.append(np.stack([a[both], b[both]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def connecting_axes(structure: np.ndarray) -> tuple[int, ...]:
    """Axes along which the structure joins neighbours (a per-slice structure never joins along z)."""
    center = np.array(structure.shape) // 2
    axes = []
    for axis in range(structure.ndim):
        ahead = [slice(c + 1, None) if k == axis else slice(None) for k, c in enumerate(center)]
        if structure[tuple(ahead)].any():
            axes.append(axis)
    return tuple(axes)


def _faces(labels: np.ndarray, axes: Sequence[int]) -> dict[str, np.ndarray]:
    """The first and last plane of a unit along each connecting axis, kept 3D (length 1 along the axis)."""
    out = {}
    for axis in axes:
        n = labels.shape[axis]
        for side, index in (("low", 0), ("high", n - 1)):
            out[f"{side}{axis}"] = np.take(labels, [index], axis=axis)
    return out


@dataclass(frozen=True)
class UnitSummary:
    """What the merge needs of a labelled unit: its complete cells' count, its face cells' sizes, its faces."""

    complete: int
    face_sizes: np.ndarray
    faces: dict[str, np.ndarray]


def label_unit(mask: np.ndarray, structure: np.ndarray, min_size: int) -> tuple[np.ndarray, UnitSummary]:
    """Label one unit (step 1): uint32 ids, complete cells first, then the cells on a face."""
    if mask.size >= 2**32:
        raise ValueError(f"a unit of {mask.shape} voxels is too large to label on its own (2^32 voxels at most)")
    local, count = ndimage.label(mask, structure=structure)
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


def save_summary(path: Path, summary: UnitSummary) -> None:
    """Write a unit's summary atomically (a summary present is complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, complete=summary.complete, face_sizes=summary.face_sizes, **summary.faces)
    os.replace(tmp, path)


def load_summary(path: Path) -> UnitSummary:
    with np.load(path) as f:
        faces = {k: f[k] for k in f.files if k.startswith(("low", "high"))}
        return UnitSummary(int(f["complete"]), f["face_sizes"], faces)


def summary_path(root: Path, index: Sequence[int]) -> Path:
    """One folder per leading unit index, like the records of finished work."""
    return Path(root) / str(int(index[0])) / f"{block_key(index)}.npz"


@dataclass
class Numbering:
    """The merge's result: per unit the offset of its complete cells, and per group of units (a z row of units
    where cells cannot cross slices, else the whole volume) a table of the final ids of its face cells, kept in
    `root` and loaded by group as the units that need it are relabelled."""

    offsets: np.ndarray  # int64, one per unit (C order)
    count: int  # cells in the volume
    face_cells: int  # keys in all the tables
    per_group: int  # units per group
    root: Path

    def table(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, ids) of a group: keys sorted (unit << 32 | id in unit), ids final (0: dropped by min_size)."""
        path = self.root / f"{group}.npz"
        stat = path.stat()  # a table rewritten by a later merge is read afresh
        return _load_table(path, stat.st_mtime_ns, stat.st_size)

    def ids(self, unit: int, keys: np.ndarray) -> np.ndarray:
        table_keys, table_ids = self.table(unit // self.per_group)
        return table_ids[np.searchsorted(table_keys, keys)]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, offsets=self.offsets, count=self.count, face_cells=self.face_cells, per_group=self.per_group)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Numbering:
        with np.load(path) as f:
            return cls(f["offsets"], int(f["count"]), int(f["face_cells"]), int(f["per_group"]), path.parent / "tables")


@lru_cache(maxsize=8)
def _load_table(path: Path, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ARG001 - cache key
    with np.load(path) as f:
        return f["keys"], f["ids"]


def _neighbourhood(grid: BlockGrid, index: tuple[int, ...], axis: int) -> Iterator[tuple[int, ...]]:
    """The units that touch `index`'s high face along `axis`: the next one along it, and its neighbours across."""
    ranges = []
    for k, (i, n) in enumerate(zip(index, grid.counts, strict=True)):
        if k == axis:
            if i + 1 >= n:
                return
            ranges.append([i + 1])
        else:
            ranges.append([j for j in (i - 1, i, i + 1) if 0 <= j < n])
    yield from itertools.product(*ranges)


def _global(plane: np.ndarray, unit: int, complete: int) -> np.ndarray:
    """A face plane's ids as keys (unit << 32 | id); complete cells never lie on a face, 0 stays 0."""
    out = plane.astype(np.int64)
    inside = out > complete
    out[inside] += np.int64(unit) << LOCAL_BITS
    out[~inside] = 0
    return out


def _pairs_across(
    grid: BlockGrid, unit: Block, axis: int, structure: np.ndarray, summary_of: Callable[[tuple], UnitSummary]
) -> np.ndarray:
    """Key pairs joined across `unit`'s high face along `axis`, with every unit the structure reaches there."""
    linear = lambda index: int(np.ravel_multi_index(index, grid.counts))  # noqa: E731
    own = summary_of(unit.index)
    # The face region: the unit's extent grown by one voxel across the axis, one plane thick on either side.
    region = [(w.start - 1, w.stop + 1) if k != axis else (0, 1) for k, w in enumerate(unit.write)]
    shape = [hi - lo for lo, hi in region]
    before = np.zeros(shape, np.int64)
    after = np.zeros(shape, np.int64)
    inner = tuple(slice(1, -1) if k != axis else slice(None) for k in range(len(shape)))
    before[inner] = _global(own.faces[f"high{axis}"], linear(unit.index), own.complete)
    for other in _neighbourhood(grid, unit.index, axis):
        block = grid.block(other)
        s = summary_of(other)
        target, source = [], []
        for k, (w, (lo, hi)) in enumerate(zip(block.write, region, strict=True)):
            if k == axis:
                target.append(slice(None))
                source.append(slice(None))
                continue
            a, b = max(w.start, lo), min(w.stop, hi)
            if a >= b:
                break
            target.append(slice(a - lo, b - lo))
            source.append(slice(a - w.start, b - w.start))
        else:
            after[tuple(target)] = _global(s.faces[f"low{axis}"], linear(other), s.complete)[tuple(source)]
    return _distinct_rows(face_pairs(before, after, axis, structure))  # one pair per two cells, not per voxel


def _distinct_rows(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an (n, 2) array (a lexsort: much faster than np.unique(axis=0))."""
    if len(pairs) < 2:
        return pairs
    ordered = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    new = np.ones(len(ordered), bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[new]


def merge_units(
    grid: BlockGrid, root: Path, structure: np.ndarray, min_size: int, out: Path, cache: int = 64
) -> Numbering:
    """Step 2 over the summaries in `root` of every unit of `grid` (see the module doc), its tables into `out`.

    Where the structure never joins slices (per-slice cells), each z row of units is merged on its own, so memory
    follows the face cells of one row, not of the volume; in 3D the whole volume is one group."""
    summary_of = lru_cache(maxsize=cache)(lambda index: load_summary(summary_path(root, index)))
    axes = connecting_axes(structure)
    per_group = len(grid) if 0 in axes else len(grid) // grid.counts[0]
    out.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(grid), np.int64)
    total = face_cells = 0
    for group, first in enumerate(range(0, len(grid), per_group)):
        keys, sizes, pairs = [], [], []
        for u in range(first, first + per_group):
            unit = grid[u]
            s = summary_of(unit.index)
            offsets[u] = total
            total += s.complete
            local = np.arange(s.complete + 1, s.complete + 1 + len(s.face_sizes), dtype=np.int64)
            keys.append((np.int64(u) << LOCAL_BITS) + local)
            sizes.append(s.face_sizes)
            for axis in axes:
                pairs.append(_pairs_across(grid, unit, axis, structure, summary_of))
        keys_all = np.concatenate([np.zeros(0, np.int64), *keys])  # sorted: by unit, then by id
        ids, joined = _join(
            keys_all,
            np.concatenate([np.zeros(0, np.int64), *sizes]),
            np.concatenate([np.zeros((0, 2), np.int64), *pairs]),
            min_size,
            total,
        )
        total += joined
        face_cells += len(keys_all)
        tmp = out / f"{group}.tmp.npz"
        np.savez(tmp, keys=keys_all, ids=ids)
        os.replace(tmp, out / f"{group}.npz")
    return Numbering(offsets, total, face_cells, per_group, out)


def _join(keys: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, min_size: int, before: int) -> tuple[np.ndarray, int]:
    """Final ids of face cells joined by `pairs` (numbered after `before` cells, in order of their first key, those
    below `min_size` voxels in all dropped to 0), and how many cells they make."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64), 0
    i, j = np.searchsorted(keys, pairs[:, 0]), np.searchsorted(keys, pairs[:, 1])
    graph = coo_matrix((np.ones(len(i), bool), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    kept = np.bincount(component, weights=sizes) >= min_size
    _, first = np.unique(component, return_index=True)
    order = np.argsort(first)
    number = np.zeros(len(first), np.int64)
    kept_in_order = order[kept[order]]
    number[kept_in_order] = before + np.arange(1, len(kept_in_order) + 1)
    return number[component], len(kept_in_order)


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

    def label(self, block: Block, mask: np.ndarray, structure: np.ndarray, min_size: int) -> None:
        """Step 1 for one unit: label it and keep its labels and summary."""
        labels, summary = label_unit(mask, structure, min_size)
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
