"""Block geometry for chunked processing, named as daisy does: each block has a write region (the output
it owns, exactly one output chunk) and a read region (the write region grown by the model's context; may extend
past the volume, where it is filled by mirroring).

Blocks are written in groups, one group per file of the output (a zarr v3 shard): a task computes a group's
blocks, writes the group in one step and records it, so parallel writers never share a file and a terabyte is
thousands of files, not millions.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from unetflow.provenance import recorded
from unetflow.store import partial_path, remove, set_attrs

Region = tuple[slice, ...]
log = logging.getLogger(__name__)
DONE_DIR = ".unetflow_blocks"  # inside a partial store: one empty file per finished group of blocks


@dataclass(frozen=True)
class Block:
    index: tuple[int, ...]
    write: Region
    read: Region


@dataclass(frozen=True)
class BlockGrid(Sequence):
    """The blocks tiling `shape` with write regions of `block_shape` (clipped at the far border), computed from
    their number by index arithmetic: planning a job costs what the job costs, not what the volume costs (a
    terabyte's millions of blocks are never listed).

    Each read region starts `context_before` before its write region and spans `read_shape`, whatever the
    clipping, so every block runs the model on the same input size."""

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    context_before: tuple[int, ...]
    read_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        dims = len(self.shape)
        if not (len(self.block_shape) == len(self.context_before) == len(self.read_shape) == dims):
            raise ValueError("shape, block_shape, context_before and read_shape need one entry per axis")

    @property
    def counts(self) -> tuple[int, ...]:
        """Blocks per axis."""
        return tuple(-(-int(s) // int(b)) for s, b in zip(self.shape, self.block_shape, strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    def index(self, k: int) -> tuple[int, ...]:
        """The grid index of the k-th block (C order)."""
        if not 0 <= k < len(self):
            raise IndexError(f"block {k} of {len(self)}")
        out = []
        for c in reversed(self.counts):
            k, i = divmod(k, c)
            out.append(i)
        return tuple(reversed(out))

    def block(self, index: Sequence[int]) -> Block:
        """The block at a grid index."""
        write, read = [], []
        for i, s, b, c, r in zip(
            index, self.shape, self.block_shape, self.context_before, self.read_shape, strict=True
        ):
            start = int(i) * int(b)
            write.append(slice(start, min(start + int(b), int(s))))
            read.append(slice(start - int(c), start - int(c) + int(r)))
        return Block(tuple(int(i) for i in index), tuple(write), tuple(read))

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self.block(self.index(int(k) + len(self) if k < 0 else int(k)))


def block_grid(
    shape: Sequence[int],
    block_shape: Sequence[int],
    context_before: Sequence[int],
    read_shape: Sequence[int],
) -> BlockGrid:
    """The `BlockGrid` of a volume (see there)."""
    return BlockGrid(*(tuple(int(v) for v in a) for a in (shape, block_shape, context_before, read_shape)))


def group_shape(
    block: Sequence[int], extent: Sequence[int], voxel_bytes: float, target_bytes: float
) -> tuple[int, ...]:
    """The shape of a group of whole blocks that is written as one file: y and x doubled in turn, then z, while
    the group holds at most `target_bytes` (at `voxel_bytes` per voxel) and does not outgrow the volume's
    `extent` (rounded up to whole blocks). At least one block."""
    block = tuple(int(b) for b in block)
    limit = tuple(-(-int(e) // b) for e, b in zip(extent, block, strict=True))  # blocks per axis
    counts = [1] * len(block)

    def grown(axis: int) -> list[int] | None:
        trial = list(counts)
        trial[axis] = min(2 * counts[axis], limit[axis])
        voxels = np.prod([n * b for n, b in zip(trial, block, strict=True)], dtype=np.float64)
        return trial if trial[axis] > counts[axis] and voxels * voxel_bytes <= target_bytes else None

    while True:
        # The narrower of y and x first (x on a tie), the leading axis only once neither can grow.
        candidates = [a for a in range(1, len(block)) if grown(a)] or [a for a in (0,) if grown(a)]
        if not candidates:
            break
        axis = min(candidates, key=lambda a: (counts[a] * block[a], -a))
        counts = grown(axis) or counts
    return tuple(n * b for n, b in zip(counts, block, strict=True))


def blocks_of_group(blocks: BlockGrid, group: Block) -> list[tuple[int, ...]]:
    """Grid indices of the blocks inside a group's write region (groups are whole multiples of blocks)."""
    import itertools

    ranges = []
    for w, b, c in zip(group.write, blocks.block_shape, blocks.counts, strict=True):
        ranges.append(range(w.start // b, min(-(-w.stop // b), c)))
    return list(itertools.product(*ranges))


def shard(blocks: Sequence[Block], i: int, n: int) -> Sequence[Block]:
    """The deterministic i-th of n interleaved subsets of `blocks` (0 <= i < n), lazily: the k-th block of the
    subset is computed when it is asked for."""
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
    return _Every(blocks, i, n)


@dataclass(frozen=True)
class _Every(Sequence):
    """Every n-th item of a sequence from item i on, without listing it."""

    items: Sequence[Block]
    first: int
    step: int

    def __len__(self) -> int:
        return max(0, -(-(len(self.items) - self.first) // self.step))

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        return self.items[self.first + (k % len(self)) * self.step]


def run_units(
    store: str | Path,
    grid: BlockGrid,
    part: tuple[int, int],
    work: Callable[[Block], object],
    limit: int | None = None,
) -> int:
    """`work(block)` for each block of job `part` (i of n) of `grid` not yet recorded in `store`, each recorded once
    done, at most `limit` of them (a time-boxed run; the next one resumes). Returns how many ran."""
    done = 0
    for block in shard(grid, *part):
        if limit is not None and done >= limit:
            break
        if is_done(store, block.index):
            continue
        work(block)
        record_done(store, block.index)
        done += 1
    return done


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices [start, stop) folded into [0, size) by mirroring at the borders (edge pixel not repeated)."""
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def read_mirrored(array, region: Region) -> np.ndarray:
    """Read `region` of `array`, mirroring wherever it extends past the array: one contiguous read."""
    spans, folds = [], []
    for sl, size in zip(region, array.shape, strict=True):
        idx = mirror_indices(sl.start, sl.stop, size)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        spans.append(slice(lo, hi))
        folds.append(idx - lo)
    data = np.asarray(array[tuple(spans)])
    return data[np.ix_(*folds)]


# The record of finished work: one empty file per group of blocks (per output file) inside the partial store,
# written after the group's data, so a group is recorded only once its data is on disk.
def block_key(index: Sequence[int]) -> str:
    return ".".join(map(str, index))


def _record(store: str | Path, index: Sequence[int]) -> Path:
    """One folder per leading grid index (a z slab of blocks), so that no folder holds millions of records."""
    return Path(store) / DONE_DIR / str(int(index[0])) / block_key(index)


def start_records(store: str | Path) -> None:
    (Path(store) / DONE_DIR).mkdir()


def record_done(store: str | Path, index: Sequence[int]) -> None:
    path = _record(store, index)
    path.parent.mkdir(exist_ok=True)
    path.touch()


def is_done(store: str | Path, index: Sequence[int]) -> bool:
    return _record(store, index).exists()


def count_done(store: str | Path) -> int:
    """Blocks recorded as finished, counted folder by folder (memory independent of their number)."""
    root = Path(store) / DONE_DIR
    if not root.is_dir():
        return 0
    total = 0
    with os.scandir(root) as folders:
        for folder in folders:
            with os.scandir(folder.path) as records:
                total += sum(1 for _ in records)
    return total


def remove_records(store: str | Path) -> None:
    shutil.rmtree(Path(store) / DONE_DIR, ignore_errors=True)


# A store built block by block: `<out>.partial` while blocks are outstanding, `<out>` once every block is recorded.


def open_partial(store: Path, fingerprint: str, create: Callable[[Path], None]) -> bool:
    """Make `store` a partial output of `fingerprint` (see `unetflow.provenance`): reuse it when its recorded
    fingerprint matches (True), else discard it and `create(path)` a fresh one with that record inside (False).

    Safe when several shards start at once: a stale store is renamed away before removal, and a new one is built
    under a unique name and renamed into place, so exactly one attempt wins and the others reuse it."""
    for _ in range(10):
        record = recorded(store)
        found = record["fingerprint"] if record else None
        if found == fingerprint:
            return True
        if store.exists():
            stale = store.with_name(f"{store.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                store.rename(stale)
                log.info("discarding %s: it was made from other inputs or settings (fingerprint %s)", store, found)
                remove(stale)
            except FileNotFoundError:
                pass
            continue
        fresh = store.with_name(f"{store.name}.new-{uuid.uuid4().hex[:8]}")
        create(fresh)
        start_records(fresh)
        try:
            fresh.rename(store)
            return False
        except OSError:  # another shard won the race
            remove(fresh)
    raise RuntimeError(f"{store}: could not create or reuse the partial output")


def units_path(out: str | Path) -> Path:
    """Where a stage split into steps keeps each unit's own work until its output is complete: beside
    `<out>.partial`, named like it (so that no reader takes it for an output)."""
    store = partial_path(out)
    return store.with_name(store.name + "-units")


def require_record(store: Path, fingerprint: str, step: str) -> None:
    """Refuse to go on from a store that an earlier step did not make for this fingerprint, naming the step."""
    found = recorded(store)
    if found is None or found["fingerprint"] != fingerprint:
        raise RuntimeError(f"{store}: missing or made from other inputs or settings; run `{step}` first")


def file_grid(store: Path, leading_axes: int = 0) -> BlockGrid:
    """The grid of a store's array "0" files (after `leading_axes` such as channels): its zarr shards, or its
    chunks where it is not sharded. Records of finished work are kept per file."""
    array = zarr.open_group(str(store), mode="r")["0"]
    unit = array.shards or array.chunks
    shape, unit = array.shape[leading_axes:], unit[leading_axes:]
    return block_grid(shape, unit, (0,) * len(shape), unit)


def first_missing(store: Path, grid: BlockGrid) -> tuple[int, ...] | None:
    """The first block of `grid` without a record, looked for folder by folder (one folder in memory at once)."""
    per_folder = len(grid) // grid.counts[0]
    root = Path(store) / DONE_DIR
    for z in range(grid.counts[0]):
        folder = root / str(z)
        names = set(os.listdir(folder)) if folder.is_dir() else set()
        if len(names) == per_folder:
            continue
        for k in range(z * per_folder, (z + 1) * per_folder):
            index = grid.index(k)
            if block_key(index) not in names:
                return index
    return None


def finish_partial(out: str | Path, leading_axes: int = 0, grid: BlockGrid | None = None) -> Path:
    """Check that every file (group of blocks) of `<out>.partial` is recorded, or every unit of `grid` where work
    is recorded per unit, mark it complete and move it to `out`: the gather step reads one folder of records at a
    time, whatever the volume's size."""
    out = Path(out)
    store = partial_path(out)
    if not store.is_dir():
        raise FileNotFoundError(f"{store}: no partial output to finish (run the jobs that compute its blocks first)")
    grid = grid or file_grid(store, leading_axes)
    missing = len(grid) - count_done(store)
    if missing:
        example = first_missing(store, grid)
        raise RuntimeError(
            f"{store}: {missing} files are not done yet (e.g. {block_key(example or ())}); "
            "re-run the jobs (shards) that did not finish"
        )
    set_attrs(store, {"complete": True})
    remove_records(store)
    remove(out)
    store.rename(out)
    return out
