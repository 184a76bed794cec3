"""The warping error (Jain et al. 2010, "Boundary learning by optimization with topological constraints"): how many
pixels of a binary prediction differ from the binary truth after the truth is warped toward the prediction by
flipping only simple points, pixels whose flip changes no object's topology (no object made, removed, split or
merged, no hole made or filled). What remains are the topological errors: merges, splits, holes, objects missing or
extra.

Connectivity pair: the foreground (cells) is `foreground`-connected (4 or 8) and the background (membranes) the
other one, so that 4-connected cells are separated by 8-connected membranes (the default, as the segmentation
labels cells with 4-connectivity in 2D). Outside the image counts as background. Per slice, in 2D.

Order of flips: sweeps over the nine sub-lattices (row mod 3, column mod 3) of the mismatched pixels until none is
left that is simple. Pixels of one sub-lattice lie outside each other's 3 x 3 neighbourhood, so flipping all of
those that are simple at once equals flipping them one after another. The warped truth is not unique (another
order can warp it differently, as in the paper's greedy descent); a boundary shifted or thickened by a few pixels
costs nothing (tested).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
_EIGHT = np.ones((3, 3), bool)
_CENTRE = np.zeros((3, 3), bool)
_CENTRE[1, 1] = True


@lru_cache(maxsize=2)
def simple_points(foreground: int) -> np.ndarray:
    """Lookup table over the 512 patterns of a 3 x 3 neighbourhood (bit 3 * row + column): is the centre a simple
    point? It is when the foreground among its 8 neighbours forms exactly one component adjacent to it (in the
    foreground's connectivity) and so does the background (in the other); the centre's own value does not matter."""
    if foreground not in (4, 8):
        raise ValueError(f"foreground connectivity must be 4 or 8, not {foreground}")
    near = {4: _FOUR & ~_CENTRE, 8: ~_CENTRE}
    structure = {4: _FOUR, 8: _EIGHT}
    background = 12 - foreground
    table = np.zeros(512, bool)
    for code in range(512):
        patch = ((code >> np.arange(9)) & 1).astype(bool).reshape(3, 3)
        adjacent = []
        for region, connectivity in ((patch, foreground), (~patch, background)):
            labels, _ = ndimage.label(region & ~_CENTRE, structure=structure[connectivity])
            adjacent.append(len(np.unique(labels[near[connectivity] & (labels > 0)])))
        table[code] = adjacent == [1, 1]
    return table


def warp(truth: np.ndarray, prediction: np.ndarray, foreground: int = 4) -> np.ndarray:
    """The truth warped toward the prediction by simple-point flips (see the module doc)."""
    truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
    if truth.shape != prediction.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} must be the same 2D shape")
    table = simple_points(foreground)
    h, w = truth.shape
    warped = np.pad(truth, 1).astype(np.uint8)  # outside the image: background, never flipped
    target = np.pad(prediction, 1).astype(np.uint8)
    flat, goal = warped.ravel(), target.ravel()
    offsets = np.array([(dy - 1) * (w + 2) + dx - 1 for dy in range(3) for dx in range(3)])
    rows, cols = np.divmod(np.arange(flat.size), w + 2)
    lattice = np.where((rows >= 1) & (rows <= h) & (cols >= 1) & (cols <= w), (rows % 3) * 3 + cols % 3, -1)
    while True:
        flipped = False
        wrong = np.flatnonzero(flat != goal)
        for part in range(9):
            candidates = wrong[lattice[wrong] == part]
            if not len(candidates):
                continue
            codes = (flat[candidates[:, None] + offsets].astype(np.int32) << np.arange(9)).sum(axis=1)
            simple = candidates[table[codes]]
            if len(simple):
                flat[simple] ^= 1
                flipped = True
        if not flipped:
            return warped[1:-1, 1:-1].astype(bool)


def warping_error(truth: np.ndarray, prediction: np.ndarray, foreground: int = 4) -> float:
    """Fraction of pixels where the warped truth and the prediction still differ."""
    prediction = np.asarray(prediction, bool)
    return float(np.mean(warp(truth, prediction, foreground) != prediction)) if prediction.size else 0.0
