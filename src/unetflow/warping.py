"""The warping error (Jain et al. 2010, "Boundary learning by optimization with topological constraints"): how many
pixels of a binary prediction differ from the binary truth after the truth is warped toward the prediction by
flipping only simple points, pixels whose flip changes no object's topology (no object made, removed, split or
merged, no hole made or filled; in 3D also no tunnel made or closed). What remains are the topological errors:
merges, splits, holes, objects missing or extra.

Connectivity pair: the foreground (cells) is `foreground`-connected and the background (membranes) has the other
connectivity of its pair: 4 and 8 in 2D, 6 and 26 in 3D. The default, 4 in 2D and 6 in 3D, separates cells by
membranes connected through corners, as the segmentation labels cells (4-connected per slice, 6-connected in 3D).
Outside the image counts as background.

Simple points: in 2D a lookup table over the 512 patterns of a 3 x 3 neighbourhood. In 3D by the topological
numbers of Bertrand and Malandain (1994): for a (26, 6) pair, the point is simple when the foreground among its 26
neighbours is one 26-component and the background among its 18 face and edge neighbours has exactly one
6-component that touches a face neighbour (for (6, 26) the roles of foreground and background swap). The 2^26
patterns are too many for a table; those met are decided in batches and cached.

Order of flips: sweeps over the 3^d sub-lattices (every coordinate mod 3) of the mismatched pixels until none is
left that is simple. Pixels of one sub-lattice lie outside each other's 3 x 3 (x 3) neighbourhood, so flipping all
of those that are simple at once equals flipping them one after another. The warped truth is not unique (another
order can warp it differently, as in the paper's greedy descent); a boundary shifted or thickened by a few pixels
costs nothing (tested).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy import ndimage

PAIRS = {2: {4: 8, 8: 4}, 3: {6: 26, 26: 6}}  # per dimension: foreground connectivity -> background connectivity

_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
_EIGHT = np.ones((3, 3), bool)
_CENTRE = np.zeros((3, 3), bool)
_CENTRE[1, 1] = True


def _check(ndim: int, foreground: int) -> None:
    if ndim not in PAIRS or foreground not in PAIRS[ndim]:
        expected = " or ".join(f"{' or '.join(map(str, p))} in {d}D" for d, p in PAIRS.items())
        raise ValueError(f"foreground connectivity must be {expected}, not {foreground} in {ndim}D")


@lru_cache(maxsize=2)
def simple_points(foreground: int) -> np.ndarray:
    """Lookup table over the 512 patterns of a 3 x 3 neighbourhood (bit 3 * row + column): is the centre a simple
    point? It is when the foreground among its 8 neighbours forms exactly one component adjacent to it (in the
    foreground's connectivity) and so does the background (in the other); the centre's own value does not matter."""
    _check(2, foreground)
    near = {4: _FOUR & ~_CENTRE, 8: ~_CENTRE}
    structure = {4: _FOUR, 8: _EIGHT}
    background = PAIRS[2][foreground]
    table = np.zeros(512, bool)
    for code in range(512):
        patch = ((code >> np.arange(9)) & 1).astype(bool).reshape(3, 3)
        adjacent = []
        for region, connectivity in ((patch, foreground), (~patch, background)):
            labels, _ = ndimage.label(region & ~_CENTRE, structure=structure[connectivity])
            adjacent.append(len(np.unique(labels[near[connectivity] & (labels > 0)])))
        table[code] = adjacent == [1, 1]
    return table


# The 27 positions of a 3 x 3 x 3 neighbourhood, bit 9 * z + 3 * y + x; the centre is bit 13.
_OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
_STEPS = np.abs(_OFFSETS).sum(axis=1)  # 0 centre, 1 face, 2 edge, 3 corner neighbour
_CLOSE = np.abs(_OFFSETS[:, None] - _OFFSETS[None]).max(axis=2) == 1  # 26-adjacent positions
_FACE = np.abs(_OFFSETS[:, None] - _OFFSETS[None]).sum(axis=2) == 1  # 6-adjacent positions


def _neighbour_lists(adjacent: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per position, the positions adjacent to it within `inside`, padded with 27 (a position never set)."""
    lists = [np.flatnonzero(adjacent[p] & inside) if inside[p] else np.array([], int) for p in range(27)]
    width = max(len(neighbours) for neighbours in lists)
    return np.array([np.pad(n, (0, width - len(n)), constant_values=27) for n in lists])


_N26 = _STEPS > 0
_N18 = (_STEPS > 0) & (_STEPS < 3)
_TOPOLOGY = {  # connectivity -> (neighbourhood, its adjacency lists, the positions a counted component must touch)
    26: (_N26, _neighbour_lists(_CLOSE, _N26), _N26),
    6: (_N18, _neighbour_lists(_FACE, _N18), _STEPS == 1),
}


def _components_touching(present: np.ndarray, connectivity: int) -> np.ndarray:
    """Per row of `present` (patterns x 27 bools), the number of `connectivity`-components of the set positions in
    the neighbourhood the topological number counts (26 or 18 neighbours), counting those that touch the centre."""
    inside, neighbours, touch = _TOPOLOGY[connectivity]
    present = present & inside
    never = 27
    label = np.where(present, np.arange(27), never)
    while True:  # each set position takes the smallest label among its set neighbours until nothing changes
        padded = np.concatenate([label, np.full((len(label), 1), never)], axis=1)
        spread = np.where(present, np.minimum(label, padded[:, neighbours].min(axis=2)), never)
        if np.array_equal(spread, label):
            break
        label = spread
    touching = np.sort(np.where(touch, label, never), axis=1)
    distinct = np.diff(touching, axis=1, prepend=-1) != 0
    return (distinct & (touching != never)).sum(axis=1)


def simple_in_3d(codes: np.ndarray, foreground: int) -> np.ndarray:
    """Are the centres of these 3 x 3 x 3 patterns (27-bit codes) simple for the pair (`foreground`, other)?"""
    _check(3, foreground)
    patterns = ((np.asarray(codes, np.int64)[:, None] >> np.arange(27)) & 1).astype(bool)
    background = PAIRS[3][foreground]
    return (_components_touching(patterns, foreground) == 1) & (_components_touching(~patterns, background) == 1)


class _Cached3d:
    """`simple_in_3d` with the patterns already decided kept (sorted codes and answers), per foreground."""

    def __init__(self, foreground: int) -> None:
        _check(3, foreground)
        self.foreground = foreground
        self.codes, self.simple = np.zeros(0, np.int64), np.zeros(0, bool)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(codes, return_inverse=True)
        where = np.searchsorted(self.codes, unique).clip(max=max(len(self.codes) - 1, 0))
        known = (where < len(self.codes)) & (self.codes[where] == unique) if len(self.codes) else unique < 0
        answers = np.empty(len(unique), bool)
        answers[known] = self.simple[where[known]]
        if (~known).any():
            answers[~known] = simple_in_3d(unique[~known], self.foreground)
            self.codes = np.concatenate([self.codes, unique[~known]])
            self.simple = np.concatenate([self.simple, answers[~known]])
            order = np.argsort(self.codes)
            self.codes, self.simple = self.codes[order], self.simple[order]
        return answers[inverse.ravel()]


@lru_cache(maxsize=2)
def _decider(ndim: int, foreground: int) -> Callable[[np.ndarray], np.ndarray]:
    if ndim == 2:
        table = simple_points(foreground)
        return lambda codes: table[codes]
    return _Cached3d(foreground)


def default_foreground(ndim: int) -> int:
    """Cells 4-connected in 2D and 6-connected in 3D, as the segmentation labels them."""
    return {2: 4, 3: 6}[ndim]


def warp(truth: np.ndarray, prediction: np.ndarray, foreground: int | None = None) -> np.ndarray:
    """The truth warped toward the prediction by simple-point flips (see the module doc); 2D or 3D."""
    truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
    if truth.shape != prediction.shape or truth.ndim not in PAIRS:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} must be the same 2D or 3D shape")
    ndim = truth.ndim
    foreground = default_foreground(ndim) if foreground is None else foreground
    _check(ndim, foreground)
    simple = _decider(ndim, foreground)
    warped = np.pad(truth, 1).astype(np.uint8)  # outside the image: background, never flipped
    target = np.pad(prediction, 1).astype(np.uint8)
    flat, goal = warped.ravel(), target.ravel()
    strides = np.cumprod((1, *warped.shape[:0:-1]))[::-1]  # elements per step along each axis
    steps = list(itertools.product((-1, 0, 1), repeat=ndim))
    offsets = np.array([int(np.dot(step, strides)) for step in steps])
    lattice = np.full(warped.shape, -1, np.int8)  # sub-lattice of each pixel; -1 on the padding
    lattice[(slice(1, -1),) * ndim] = sum(
        (np.arange(1, n + 1) % 3 * 3 ** (ndim - 1 - k))
        .reshape([-1 if a == k else 1 for a in range(ndim)])
        .astype(np.int8)
        for k, n in enumerate(truth.shape)
    )
    lattice = lattice.ravel()
    bits = np.arange(len(steps))
    while True:
        flipped = False
        wrong = np.flatnonzero(flat != goal)
        for part in range(3**ndim):
            candidates = wrong[lattice[wrong] == part]
            if not len(candidates):
                continue
            codes = (flat[candidates[:, None] + offsets].astype(np.int64) << bits).sum(axis=1)
            chosen = candidates[simple(codes)]
            if len(chosen):
                flat[chosen] ^= 1
                flipped = True
        if not flipped:
            return warped[(slice(1, -1),) * ndim].astype(bool)


def warping_error(truth: np.ndarray, prediction: np.ndarray, foreground: int | None = None) -> float:
    """Fraction of pixels (voxels in 3D) where the warped truth and the prediction still differ."""
    prediction = np.asarray(prediction, bool)
    return float(np.mean(warp(truth, prediction, foreground) != prediction)) if prediction.size else 0.0
