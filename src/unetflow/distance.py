"""Exact Euclidean distance transform (Felzenszwalb & Huttenlocher 2012), compiled with numba.

One separable lower-envelope pass per axis, float64 throughout, physical spacing per axis. It returns the
same distances as `scipy.ndimage.distance_transform_edt` but skips the feature transform scipy always
computes, which makes it several times faster on the many small windows of the weight map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _envelope_lines(f: np.ndarray, spacing: float) -> None:  # pragma: no cover - compiled
    """In place, per row of `f` (m, n): f[i, p] <- min_q (spacing * (p - q))^2 + f[i, q]."""
    m, n = f.shape
    v = np.empty(n, np.int64)
    z = np.empty(n + 1, np.float64)
    out = np.empty(n, np.float64)
    for i in range(m):
        row = f[i]
        k = -1
        for q in range(n):
            fq = row[q]
            if fq == np.inf:
                continue
            xq = q * spacing
            s = -np.inf
            while k >= 0:
                p = v[k]
                xp = p * spacing
                s = ((fq + xq * xq) - (row[p] + xp * xp)) / (2.0 * (xq - xp))
                if s <= z[k]:
                    k -= 1
                else:
                    break
            k += 1
            v[k] = q
            z[k] = s if k > 0 else -np.inf
            z[k + 1] = np.inf
        if k < 0:
            continue  # no finite value on this line: stays inf
        j = 0
        for q in range(n):
            xq = q * spacing
            while z[j + 1] < xq:
                j += 1
            d = xq - v[j] * spacing
            out[q] = d * d + row[v[j]]
        for q in range(n):
            row[q] = out[q]


def squared_distance_to(sources: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Squared Euclidean distance from every pixel to the nearest True pixel of `sources` (inf if none)."""
    sources = np.asarray(sources, bool)
    spacing = (1.0,) * sources.ndim if spacing is None else tuple(float(s) for s in spacing)
    f = np.where(sources, 0.0, np.inf)
    for axis in range(sources.ndim):
        moved = np.ascontiguousarray(np.moveaxis(f, axis, -1))
        lines = moved.reshape(-1, moved.shape[-1])
        _envelope_lines(lines, spacing[axis])
        f = np.moveaxis(lines.reshape(moved.shape), -1, axis)
    return np.ascontiguousarray(f)


def distance_to(sources: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Euclidean distance from every pixel to the nearest True pixel of `sources` (inf if none)."""
    return np.sqrt(squared_distance_to(sources, spacing))


@njit(cache=True, nogil=True)
def _two_nearest_2d(cells, boxes, grow_y, grow_x, sy, sx, d1, d2):  # pragma: no cover - compiled
    """Squared distances to the nearest and second-nearest cell, one window per cell (see two_nearest)."""
    h_img, w_img = cells.shape
    for c in range(boxes.shape[0]):
        y0, y1, x0, x1 = boxes[c, 0], boxes[c, 1], boxes[c, 2], boxes[c, 3]
        if y1 <= y0:
            continue
        wy0, wy1 = max(0, y0 - grow_y), min(h_img, y1 + grow_y)
        wx0, wx1 = max(0, x0 - grow_x), min(w_img, x1 + grow_x)
        h, w = wy1 - wy0, wx1 - wx0
        f = np.empty((h, w), np.float64)
        for i in range(h):
            for j in range(w):
                f[i, j] = 0.0 if cells[wy0 + i, wx0 + j] == c + 1 else np.inf
        _envelope_lines(f, sx)
        ft = np.ascontiguousarray(f.T)
        _envelope_lines(ft, sy)
        for i in range(h):
            for j in range(w):
                d = ft[j, i]
                y, x = wy0 + i, wx0 + j
                if d < d1[y, x]:
                    d2[y, x] = d1[y, x]
                    d1[y, x] = d
                elif d < d2[y, x]:
                    d2[y, x] = d


def two_nearest(
    cells: np.ndarray, reach: float, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every pixel to the nearest and second-nearest cell of an instance image (0 = no cell).

    Exact wherever the distance is at most `reach`; larger distances may be reported as inf. Each cell's
    transform runs only on its bounding box grown by `reach`, so the cost grows with pixels, not cells x pixels.
    """
    from scipy import ndimage

    cells = np.asarray(cells)
    spacing = np.ones(cells.ndim) if spacing is None else np.asarray(spacing, float)
    grow = np.ceil(reach / spacing).astype(np.int64) if np.isfinite(reach) else np.array(cells.shape)
    d1 = np.full(cells.shape, np.inf)
    d2 = np.full(cells.shape, np.inf)
    objects = ndimage.find_objects(cells)
    if cells.ndim == 2:
        boxes = np.zeros((len(objects), 4), np.int64)
        for i, box in enumerate(objects):
            if box is not None:
                boxes[i] = (box[0].start, box[0].stop, box[1].start, box[1].stop)
        _two_nearest_2d(cells.astype(np.int64, copy=False), boxes, grow[0], grow[1], spacing[0], spacing[1], d1, d2)
        return np.sqrt(d1), np.sqrt(d2)
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(box, grow, cells.shape, strict=True)
        )
        d = squared_distance_to(cells[window] == index, spacing)
        a1, a2 = d1[window], d2[window]
        closer = d < a1
        a2[:] = np.where(closer, a1, np.minimum(a2, d))
        a1[:] = np.where(closer, d, a1)
    return np.sqrt(d1), np.sqrt(d2)
