"""Block geometry for chunked processing, named as daisy does: each block has a write region (the output
it owns, exactly one output chunk so parallel writers never share a chunk) and a read region (the write
region grown by the model's context; may extend past the volume, where it is filled by mirroring).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Region = tuple[slice, ...]


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
