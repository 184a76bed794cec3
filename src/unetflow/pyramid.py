"""Multiscale pyramids, built by the tasks that write full resolution: no pass over the volume of its own.

Level k halves y and x k times (z is kept: EM sections are thicker than their pixels). A task that writes a region
of level 0 whose start is a multiple of 2^k in y and x (a whole output file) also writes that region's share of
every level, so each level's files have one writer too. Intensities and probabilities are averaged over each
2 x 2 window (edge windows over the pixels they hold); labels take the window's top-left voxel, so that every id
of a level is an id of full resolution and no new ones appear (the nearest-neighbour rule of neuroglancer and
napari for labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SIDE = 256  # levels stop once y or x would be smaller than this


def level_count(shape_yx: Sequence[int], file_yx: Sequence[int]) -> int:
    """Levels beyond full resolution: while the plane stays at least MIN_SIDE and a file still halves evenly."""
    k = 0
    while all(s // 2 ** (k + 1) >= MIN_SIDE for s in shape_yx) and all(f % 2 ** (k + 1) == 0 for f in file_yx):
        k += 1
    return k


def level_shape(shape: Sequence[int], k: int) -> tuple[int, ...]:
    """The shape of level k: the last two axes halved k times (rounded up)."""
    return (*shape[:-2], *(-(-int(s) // 2**k) for s in shape[-2:]))


def downsample(data: np.ndarray, labels: bool) -> np.ndarray:
    """One level down in the last two axes: 2 x 2 means (edge windows over what they hold), or top-left voxels.
    The four corners of each window are summed in float32 without a float copy of `data` (3.5x faster than a
    reshaped mean on a file of float16 probabilities: the pyramid is written beside every prediction)."""
    if labels:
        return data[..., ::2, ::2]
    y, x = data.shape[-2:]
    if y % 2 or x % 2:
        data = np.pad(data, [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)], mode="edge")
    mean = np.add(data[..., 0::2, 0::2], data[..., 1::2, 0::2], dtype=np.float32)
    mean += data[..., 0::2, 1::2]
    mean += data[..., 1::2, 1::2]
    mean *= 0.25
    if np.issubdtype(data.dtype, np.integer):
        return np.round(mean).astype(data.dtype)
    return mean.astype(data.dtype)


def levels_of(data: np.ndarray, count: int, labels: bool, strip: int = 1024) -> list[np.ndarray]:
    """Levels 1..count of a region (each from the one above), computed about `strip` rows at a time (a multiple
    of 2^count): memory for a float copy of one strip, not of the region (a 22400^2 slice would need 4 GB more)."""
    if labels:
        return [data[..., :: 2**k, :: 2**k] for k in range(1, count + 1)]
    step = 2**count * max(1, -(-strip // 2**count))
    out = [np.empty(level_shape(data.shape, k), data.dtype) for k in range(1, count + 1)]
    for y0 in range(0, data.shape[-2], step):
        current = data[..., y0 : y0 + step, :]
        for k in range(1, count + 1):
            current = downsample(current, labels=False)
            start = y0 // 2**k
            out[k - 1][..., start : start + current.shape[-2], :] = current
    return out
