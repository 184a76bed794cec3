"""Connected components of a chunked (dask) mask, consistent across chunk borders, in bounded memory.

1. label every chunk on its own, ids made unique by the chunk's position;
2. read the two pixel planes on each side of every internal chunk face and pair the ids the structure
   connects across it;
3. join the pairs with a sparse-graph connected-components pass (memory grows with the number of cells
   touching a face, not with the volume);
4. relabel every chunk lazily through that table (ids: 1..n, consecutive).
"""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def _chunk_labels(mask: da.Array, structure: np.ndarray) -> da.Array:
    stride = int(np.prod(mask.chunksize)) + 1  # more than any chunk can hold

    def label(block: np.ndarray, block_info=None) -> np.ndarray:
        index = np.ravel_multi_index(block_info[0]["chunk-location"], block_info[0]["num-chunks"])
        local, _ = ndimage.label(block, structure=structure)
        return np.where(local > 0, local.astype(np.int64) + index * stride, 0)

    return mask.map_blocks(label, dtype=np.int64)


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


def label(mask: da.Array, structure: np.ndarray) -> da.Array:
    """Connected components of `mask` (0 = background), ids 1..n, identical to labelling it whole."""
    return label_counted(mask, structure)[0]


def label_counted(mask: da.Array, structure: np.ndarray) -> tuple[da.Array, int]:
    """`label` and the number n of components (known once the faces are joined, before any block is relabelled)."""
    structure = np.asarray(structure, bool)
    local = _chunk_labels(mask, structure)
    faces = []
    for axis, chunks in enumerate(mask.chunks):
        for edge in np.cumsum(chunks)[:-1]:
            before = local[tuple(slice(edge - 1, edge) if k == axis else slice(None) for k in range(mask.ndim))]
            after = local[tuple(slice(edge, edge + 1) if k == axis else slice(None) for k in range(mask.ndim))]
            faces.append(dask.delayed(face_pairs)(before, after, axis, structure))
    ids = [dask.delayed(lambda b: np.unique(b[b > 0]))(blk) for blk in local.to_delayed().ravel()]
    ids_found, pairs_found = dask.compute(ids, faces)
    keys = np.unique(np.concatenate([np.zeros(0, np.int64), *ids_found]))
    pairs = np.concatenate([np.zeros((0, 2), np.int64), *pairs_found])
    n = len(keys)
    if n == 0:
        return da.zeros(mask.shape, chunks=mask.chunks, dtype=np.int64), 0
    i, j = np.searchsorted(keys, pairs[:, 0]), np.searchsorted(keys, pairs[:, 1])
    graph = coo_matrix((np.ones(len(i), bool), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Number components in order of their first id, so ids follow chunk order like ndimage.label's raster order.
    _, first = np.unique(component, return_index=True)
    order = np.empty(len(first), np.int64)
    order[np.argsort(first)] = np.arange(1, len(first) + 1)
    new_ids = order[component]

    def relabel(block: np.ndarray) -> np.ndarray:
        out = np.zeros(block.shape, np.int64)
        inside = block > 0
        out[inside] = new_ids[np.searchsorted(keys, block[inside])]
        return out

    return local.map_blocks(relabel, dtype=np.int64), len(first)
