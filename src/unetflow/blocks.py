"""Block geometry for chunked processing, named as daisy does: each block has a write region (the output
it owns, exactly one output chunk so parallel writers never share a chunk) and a read region (the write
region grown by the model's context; may extend past the volume, where it is filled by mirroring).
"""

from __future__ import annotations

import itertools
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
DONE_DIR = ".unetflow_blocks"  # inside a partial store: one empty file per finished block


@dataclass(frozen=True)
class Block:
    index: tuple[int, ...]
    write: Region
    read: Region


def block_grid(
    shape: Sequence[int],
    block_shape: Sequence[int],
    context_before: Sequence[int],
    read_shape: Sequence[int],
) -> list[Block]:
    """Blocks tiling `shape` with write regions of `block_shape` (clipped at the far border).

    Each read region starts `context_before` before its write region and spans `read_shape`, whatever the
    clipping, so every block runs the model on the same input size.
    """
    dims = len(shape)
    if not (len(block_shape) == len(context_before) == len(read_shape) == dims):
        raise ValueError("shape, block_shape, context_before and read_shape need one entry per axis")
    counts = [-(-int(s) // int(b)) for s, b in zip(shape, block_shape, strict=True)]
    blocks = []
    for index in itertools.product(*(range(c) for c in counts)):
        write, read = [], []
        for i, s, b, c, r in zip(index, shape, block_shape, context_before, read_shape, strict=True):
            start = i * b
            write.append(slice(start, min(start + b, s)))
            read.append(slice(start - c, start - c + r))
        blocks.append(Block(tuple(index), tuple(write), tuple(read)))
    return blocks


def shard(blocks: Sequence[Block], i: int, n: int) -> list[Block]:
    """The deterministic i-th of n interleaved subsets of `blocks` (0 <= i < n)."""
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
    return list(blocks[i::n])


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


# The record of finished blocks: one empty file per block inside the partial store, written after the block's
# chunk, so a block is recorded only once its data is on disk.
def block_key(index: Sequence[int]) -> str:
    return ".".join(map(str, index))


def start_records(store: str | Path) -> None:
    (Path(store) / DONE_DIR).mkdir()


def record_done(store: str | Path, index: Sequence[int]) -> None:
    (Path(store) / DONE_DIR / block_key(index)).touch()


def done_blocks(store: Path) -> set[str]:
    d = Path(store) / DONE_DIR
    return set(os.listdir(d)) if d.is_dir() else set()


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


def chunk_indices(store: Path, leading_axes: int = 0) -> list[tuple[int, ...]]:
    """All block indices of a store's array "0", from its chunk grid (after `leading_axes` such as channels)."""
    array = zarr.open_group(str(store), mode="r")["0"]
    shape, chunks = array.shape[leading_axes:], array.chunks[leading_axes:]
    counts = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*counts)]


def finish_partial(out: str | Path, leading_axes: int = 0) -> Path:
    """Check that every block of `<out>.partial` is recorded, mark it complete and move it to `out`."""
    out = Path(out)
    store = partial_path(out)
    if not store.is_dir():
        raise FileNotFoundError(f"{store}: no partial output to finish (run the jobs that compute its blocks first)")
    done = done_blocks(store)
    missing = [i for i in chunk_indices(store, leading_axes) if block_key(i) not in done]
    if missing:
        raise RuntimeError(
            f"{store}: {len(missing)} blocks are not done yet (e.g. {block_key(missing[0])}); "
            "re-run the jobs (shards) that did not finish"
        )
    set_attrs(store, {"complete": True})
    remove_records(store)
    remove(out)
    store.rename(out)
    return out
