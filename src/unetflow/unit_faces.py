"""The faces of separately labelled units: what each unit keeps of its labelling for the merge (`UnitSummary`:
its complete cells' count, its face cells' sizes, its face planes), and the pairs of cells joined across a face
between two units (edges and corners included for diagonal connectivity). `unetflow.cell_merge` joins them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetflow.blocks import Block, BlockGrid, block_key

LOCAL_BITS = 32  # a face cell is named by its key: unit << 32 | its id in the unit
Index = tuple[int, ...]


@dataclass(frozen=True)
class UnitSummary:
    """What the merge needs of a labelled unit: its complete cells' count, its face cells' sizes, its faces
    (`low{axis}` / `high{axis}`: the first and last plane along each connecting axis, kept 3D)."""

    complete: int
    face_sizes: np.ndarray
    faces: dict[str, np.ndarray]


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


def connecting_axes(structure: np.ndarray) -> tuple[int, ...]:
    """Axes along which the structure joins neighbours (a per-slice structure never joins along z)."""
    center = np.array(structure.shape) // 2
    axes = []
    for axis in range(structure.ndim):
        ahead = [slice(c + 1, None) if k == axis else slice(None) for k, c in enumerate(center)]
        if structure[tuple(ahead)].any():
            axes.append(axis)
    return tuple(axes)


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


def neighbourhood(grid: BlockGrid, index: Index, axis: int) -> Iterator[Index]:
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


def _keys(plane: np.ndarray, unit: int, complete: int) -> np.ndarray:
    """A face plane's ids as keys (unit << 32 | id); complete cells never lie on a face, 0 stays 0."""
    out = plane.astype(np.int64)
    inside = out > complete
    out[inside] += np.int64(unit) << LOCAL_BITS
    out[~inside] = 0
    return out


def pairs_across(
    grid: BlockGrid,
    unit: Block,
    axis: int,
    structure: np.ndarray,
    face_of: Callable[[Index, str], tuple[int, np.ndarray]],
    neighbours: Sequence[Index],
) -> np.ndarray:
    """Distinct key pairs joined across `unit`'s high face along `axis` with the given units of its neighbourhood;
    `face_of(index, name)` gives a unit's complete cells' count and one face plane."""
    linear = lambda index: int(np.ravel_multi_index(index, grid.counts))  # noqa: E731
    complete, plane = face_of(unit.index, f"high{axis}")
    # The face region: the unit's extent grown by one voxel across the axis, one plane thick on either side.
    region = [(w.start - 1, w.stop + 1) if k != axis else (0, 1) for k, w in enumerate(unit.write)]
    shape = [hi - lo for lo, hi in region]
    before = np.zeros(shape, np.int64)
    after = np.zeros(shape, np.int64)
    inner = tuple(slice(1, -1) if k != axis else slice(None) for k in range(len(shape)))
    before[inner] = _keys(plane, linear(unit.index), complete)
    for other in neighbours:
        block = grid.block(other)
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
            other_complete, other_plane = face_of(other, f"low{axis}")
            after[tuple(target)] = _keys(other_plane[tuple(source)], linear(other), other_complete)
    return distinct_rows(face_pairs(before, after, axis, structure))  # one pair per two cells, not per voxel


def distinct_rows(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an (n, 2) array (a lexsort: much faster than np.unique(axis=0))."""
    if len(pairs) < 2:
        return pairs
    ordered = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    new = np.ones(len(ordered), bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[new]
