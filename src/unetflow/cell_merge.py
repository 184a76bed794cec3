"""Joining the cells of separately labelled units across their faces, as a tree of groups of units, in memory
bounded by one group rather than the volume.

Each labelled unit leaves a summary (`unetflow.unit_faces`): its complete cells' count, its face cells' sizes and its
face planes. The merge joins the face cells that touch across unit faces (edges and corners included for diagonal
connectivity) level by level: a level-1 group is up to 2 units along each connecting axis, a level-k group up to 2
level-(k-1) groups along each, until one group spans the volume along every connecting axis (per-slice cells never
join along z, so each z row of units is its own tree). A group joins only the pairs across the faces between its
children and hands up only the cells on its own outer faces; a cell that no pair can reach any more is closed there,
kept if it has `min_size` voxels in all. One group's work holds the face cells on its children's outer faces: at
most those on the volume's middle planes, never those on every face.

A pass down the tree then gives every face cell its final id, one table per level-1 group (`Numbering`). Complete
cells are numbered first (unit by unit, C order), then closed cells level by level, group by group, each group's in
the order of their smallest key: the same numbering whatever the number of jobs.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from unetflow.blocks import Block, BlockGrid, block_grid
from unetflow.unit_faces import (
    LOCAL_BITS,
    Index,
    connecting_axes,
    distinct_rows,
    neighbourhood,
    pairs_across,
    summary_path,
)


@dataclass(frozen=True)
class MergeTree:
    """The levels of the merge over a grid of units: level k's groups span 2^k units along each connecting axis
    (clipped to the grid), one unit along the others; level 0 is the units themselves."""

    counts: Index  # units per axis
    axes: Index  # connecting axes

    @cached_property
    def depth(self) -> int:
        """The level at which a group spans the grid along every connecting axis (at least 1)."""
        return max([1] + [(self.counts[a] - 1).bit_length() for a in self.axes])

    def groups(self, level: int) -> BlockGrid:
        """The groups of a level as blocks of the unit grid (their write regions are unit index ranges)."""
        shape = tuple(min(2**level, c) if a in self.axes else 1 for a, c in enumerate(self.counts))
        return block_grid(self.counts, shape, (0,) * len(shape), shape)

    def group_of(self, level: int, unit: Index) -> Index:
        return tuple(i // s for i, s in zip(unit, self.groups(level).block_shape, strict=True))


def _units(box: Block) -> Iterator[Index]:
    return itertools.product(*(range(w.start, w.stop) for w in box.write))


def _sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]


@dataclass
class _Step:
    """One group's part of the merge, kept in the work folder: its nodes (the children's open cells, by their
    smallest key) and the cell each joined into (`joined`), its closed cells kept by `min_size`, and what it hands
    up: the keys on its outer faces with their cells, and its open cells' ids and sizes."""

    nodes: np.ndarray
    joined: np.ndarray
    kept: np.ndarray
    keys: np.ndarray
    cells: np.ndarray
    open_ids: np.ndarray
    open_sizes: np.ndarray

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **self.__dict__)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> _Step:
        with np.load(path) as f:
            return cls(**{k: f[k] for k in f.files})


@dataclass
class _Edges:
    """What the tree needs of one unit, found once before it: its complete cells' count, its face cells' sizes,
    the distinct keys on each face, and every pair joined across its high faces with the level that joins it."""

    complete: int
    sizes: np.ndarray
    faces: dict[str, np.ndarray]
    pairs: np.ndarray
    level: np.ndarray

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, complete=self.complete, sizes=self.sizes, pairs=self.pairs, level=self.level, **self.faces)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> _Edges:
        with np.load(path) as f:
            faces = {k: f[k] for k in f.files if k.startswith(("low", "high"))}
            return cls(int(f["complete"]), f["sizes"], faces, f["pairs"], f["level"])


class _Merge:
    """The merge of one grid of unit summaries into a work folder (see the module doc)."""

    def __init__(self, grid: BlockGrid, root: Path, structure: np.ndarray, min_size: int, work: Path, budget: int):
        self.grid, self.root, self.structure, self.min_size, self.work = grid, root, structure, min_size, work
        self.tree = MergeTree(grid.counts, connecting_axes(structure))
        unit = grid.block_shape
        face_bytes = max([4 * int(np.prod(unit)) // unit[a] for a in self.tree.axes] + [1])
        self.face_of = lru_cache(maxsize=min(1024, max(16, budget // face_bytes)))(self._face_of)
        self.edges_of = lru_cache(maxsize=64)(lambda index: _Edges.load(self.edges_path(index)))

    def _face_of(self, index: Index, name: str) -> tuple[int, np.ndarray]:
        with np.load(summary_path(self.root, index)) as f:  # one member of the summary, not all its faces
            return int(f["complete"]), f[name]

    def linear(self, index: Index) -> int:
        return int(np.ravel_multi_index(index, self.grid.counts))

    def edges_path(self, index: Index) -> Path:
        return summary_path(self.work / "edges", index)

    def step_path(self, level: int, group: int) -> Path:
        return self.work / str(level) / f"{group}.npz"

    def join_level(self, u: Index, v: Index) -> int:
        """The lowest level whose group holds both units."""
        return next(k for k in range(1, self.tree.depth + 1) if self.tree.group_of(k, u) == self.tree.group_of(k, v))

    def find_edges(self, u: Index) -> None:
        """Before the tree: one unit's face keys and the pairs across its high faces, each with its level."""
        with np.load(summary_path(self.root, u)) as f:
            complete, sizes, names = int(f["complete"]), f["face_sizes"], [k for k in f.files if k[0] in "lh"]
        unit = np.int64(self.linear(u)) << LOCAL_BITS
        faces = {}
        for name in names:
            ids = np.unique(self.face_of(u, name)[1]).astype(np.int64)
            faces[name] = ids[ids > complete] + unit
        pairs = [np.zeros((0, 2), np.int64)]
        for axis in self.tree.axes:
            neighbours = list(neighbourhood(self.grid, u, axis))
            if neighbours:
                pairs.append(
                    pairs_across(self.grid, self.grid.block(u), axis, self.structure, self.face_of, neighbours)
                )
        joined = distinct_rows(np.concatenate(pairs))
        other = joined[:, 1] >> LOCAL_BITS
        level = np.zeros(len(joined), np.uint8)
        for v in np.unique(other):
            level[other == v] = self.join_level(u, tuple(int(i) for i in np.unravel_index(v, self.grid.counts)))
        order = np.argsort(level, kind="stable")
        _Edges(complete, sizes.astype(np.int64), faces, joined[order], level[order]).save(self.edges_path(u))

    def inputs(self, level: int, box: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(map keys, their cells, nodes, node sizes) of a group: at level 1 the face cells of its units, above
        the cells its children hand up; keys and nodes sorted."""
        keys, cells, sizes = [], [], []
        if level == 1:
            for index in _units(box):
                e = self.edges_of(index)
                local = np.arange(e.complete + 1, e.complete + 1 + len(e.sizes), dtype=np.int64)
                keys.append((np.int64(self.linear(index)) << LOCAL_BITS) + local)
                sizes.append(e.sizes)
            cells, ids = keys, keys
        else:
            children = self.tree.groups(level - 1)
            ids = []
            for child in itertools.product(
                *(range(w.start // s, -(-w.stop // s)) for w, s in zip(box.write, children.block_shape, strict=True))
            ):
                step = _Step.load(self.step_path(level - 1, self.linear_group(level - 1, child)))
                keys.append(step.keys)
                cells.append(step.cells)
                ids.append(step.open_ids)
                sizes.append(step.open_sizes)
        empty = np.zeros(0, np.int64)
        map_keys, map_cells = _sorted(np.concatenate([empty, *keys]), np.concatenate([empty, *cells]))
        nodes, node_sizes = _sorted(np.concatenate([empty, *ids]), np.concatenate([empty, *sizes]))
        return map_keys, map_cells, nodes, node_sizes

    def linear_group(self, level: int, group: Index) -> int:
        return int(np.ravel_multi_index(group, self.tree.groups(level).counts))

    def pairs(self, level: int, box: Block) -> np.ndarray:
        """Key pairs across the faces between the group's children: those its units found for this level."""
        shape = self.tree.groups(level - 1).block_shape
        out = [np.zeros((0, 2), np.int64)]
        for u in _units(box):
            if level > 1 and not any(u[a] % shape[a] in (0, shape[a] - 1) for a in self.tree.axes):
                continue  # inside a child: its pairs were joined below
            e = self.edges_of(u)
            out.append(e.pairs[np.searchsorted(e.level, level) : np.searchsorted(e.level, level, side="right")])
        return np.concatenate(out)

    def outer_keys(self, box: Block) -> np.ndarray:
        """The keys on the group's outer faces that face another unit (diagonal pairs too lie on such a face)."""
        found = [np.zeros(0, np.int64)]
        for u in _units(box):
            for axis in self.tree.axes:
                w = box.write[axis]
                if u[axis] == w.start and w.start > 0:
                    found.append(self.edges_of(u).faces[f"low{axis}"])
                if u[axis] == w.stop - 1 and w.stop < self.grid.counts[axis]:
                    found.append(self.edges_of(u).faces[f"high{axis}"])
        return np.unique(np.concatenate(found))

    def join(self, level: int, group: Index) -> int:
        """One group's step: join its children's cells, close those no pair can reach any more. Returns the
        number of closed cells kept."""
        box = self.tree.groups(level).block(group)
        map_keys, map_cells, nodes, sizes = self.inputs(level, box)
        node_of = lambda keys: np.searchsorted(nodes, map_cells[np.searchsorted(map_keys, keys)])  # noqa: E731
        pairs = self.pairs(level, box)
        n = len(nodes)
        graph = coo_matrix((np.ones(len(pairs), bool), (node_of(pairs[:, 0]), node_of(pairs[:, 1]))), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        labels, first = np.unique(component, return_index=True)
        ids = nodes[first]  # a cell's id: its smallest key (nodes are sorted)
        joined = ids[component]
        cell_sizes = np.bincount(component, weights=sizes, minlength=len(labels)).astype(np.int64)  # < 2^53
        keys = self.outer_keys(box)
        cells = joined[node_of(keys)]
        still_open = np.zeros(len(labels), bool)
        still_open[component[node_of(keys)]] = True
        order = np.argsort(ids)
        ids, still_open, cell_sizes = ids[order], still_open[order], cell_sizes[order]
        kept = ids[~still_open & (cell_sizes >= self.min_size)]
        _Step(nodes, joined, kept, keys, cells, ids[still_open], cell_sizes[still_open]).save(
            self.step_path(level, self.linear_group(level, group))
        )
        return len(kept)

    def resolve(self, level: int, group: Index, base: int, parent: Callable[[Index], tuple]) -> np.ndarray:
        """The final id of each node of a group (0: dropped by min_size), from its closed cells numbered after
        `base` and its open ones through its parent's resolution; kept for its children."""
        step = _Step.load(self.step_path(level, self.linear_group(level, group)))
        ids = np.unique(step.joined)
        final = np.zeros(len(ids), np.int64)
        final[np.searchsorted(ids, step.kept)] = base + np.arange(1, len(step.kept) + 1)
        if len(step.open_ids):
            first_unit = tuple(w.start for w in self.tree.groups(level).block(group).write)
            parent_nodes, parent_final = parent(self.tree.group_of(level + 1, first_unit))
            final[np.searchsorted(ids, step.open_ids)] = parent_final[np.searchsorted(parent_nodes, step.open_ids)]
        node_final = final[np.searchsorted(ids, step.joined)]
        tmp = self.work / f"r{level}" / f"{self.linear_group(level, group)}.npy"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, node_final)
        return node_final

    def resolved(self, level: int, group: Index) -> tuple[np.ndarray, np.ndarray]:
        linear = self.linear_group(level, group)
        return _Step.load(self.step_path(level, linear)).nodes, np.load(self.work / f"r{level}" / f"{linear}.npy")


@dataclass
class Numbering:
    """The merge's result: per unit the offset of its complete cells, and per level-1 group of units a table of
    the final ids of its face cells, kept in `root` and loaded by group as the units that need it are relabelled."""

    offsets: np.ndarray  # int64, one per unit (C order)
    count: int  # cells in the volume
    face_cells: int  # keys in all the tables
    counts: Index  # units per axis
    group_shape: Index  # units per table along each axis
    root: Path

    def table(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, ids) of a group: keys sorted (unit << 32 | id in unit), ids final (0: dropped by min_size)."""
        path = self.root / f"{group}.npz"
        stat = path.stat()  # a table rewritten by a later merge is read afresh
        return _load_table(path, stat.st_mtime_ns, stat.st_size)

    def group_of(self, unit: int) -> int:
        index = np.unravel_index(unit, self.counts)
        groups = [-(-c // s) for c, s in zip(self.counts, self.group_shape, strict=True)]
        return int(np.ravel_multi_index([i // s for i, s in zip(index, self.group_shape, strict=True)], groups))

    def ids(self, unit: int, keys: np.ndarray) -> np.ndarray:
        table_keys, table_ids = self.table(self.group_of(unit))
        return table_ids[np.searchsorted(table_keys, keys)]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        fields = {k: v for k, v in self.__dict__.items() if k != "root"}
        np.savez(tmp, **fields)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Numbering:
        with np.load(path) as f:
            return cls(
                f["offsets"],
                int(f["count"]),
                int(f["face_cells"]),
                tuple(int(v) for v in f["counts"]),
                tuple(int(v) for v in f["group_shape"]),
                path.parent / "tables",
            )


@lru_cache(maxsize=8)
def _load_table(path: Path, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ARG001 - cache key
    with np.load(path) as f:
        return f["keys"], f["ids"]


def merge_units(
    grid: BlockGrid, root: Path, structure: np.ndarray, min_size: int, out: Path, budget: int = 64 * 2**20
) -> Numbering:
    """Number every cell of the units of `grid` from their summaries in `root` (see the module doc); the tables
    go to `out`, the tree's work to a folder beside it, removed at the end."""
    work = out.with_name(out.name + ".tree")
    for folder in (work, out):
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True)
    merge = _Merge(grid, root, structure, min_size, work, budget)
    tree = merge.tree
    offsets = np.zeros(len(grid), np.int64)
    total = face_cells = 0
    for u in range(len(grid)):
        index = grid.index(u)
        merge.find_edges(index)
        e = merge.edges_of(index)
        offsets[u] = total
        total += e.complete
        face_cells += len(e.sizes)
    bases: dict[tuple[int, Index], int] = {}
    for level in range(1, tree.depth + 1):
        groups = tree.groups(level)
        for k in range(len(groups)):
            group = groups.index(k)
            bases[level, group] = total
            total += merge.join(level, group)
    parent = lru_cache(maxsize=2)(lambda index, level: merge.resolved(level, index))
    for level in range(tree.depth, 0, -1):
        groups = tree.groups(level)
        for k in range(len(groups)):
            group = groups.index(k)
            final = merge.resolve(level, group, bases[level, group], lambda q, lv=level: parent(q, lv + 1))
            if level == 1:
                tmp = out / f"{k}.tmp.npz"
                np.savez(tmp, keys=_Step.load(merge.step_path(1, k)).nodes, ids=final)
                os.replace(tmp, out / f"{k}.npz")
    shutil.rmtree(work)
    return Numbering(offsets, total, face_cells, tuple(grid.counts), tree.groups(1).block_shape, out)
