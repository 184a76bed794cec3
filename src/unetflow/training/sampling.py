"""Hard-tile sampling: a share of training tiles placed where the training loss has recently been high.

Online hard-example mining at the scale of tiles. Uniform sampling (the paper's) visits a rare, hard structure,
a faint or broken membrane, as seldom as its area says; here the loop records each tile's loss on a coarse grid
of tile centres, and a share of later tiles is centred in the cells where that running loss is highest.
Positions are chosen in the main process, in the order the DataLoader asks for them, and the grid is
checkpointed: with `workers: 0` a run is deterministic and resumes exactly; with workers, prefetching draws a few
tiles from a grid a few steps old.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from unetflow.settings import check
from unetflow.training.data import TileSampler


class TileDifficulty:
    """Running training loss per grid cell of each training item (slice or volume). A cell holds an exponential
    average of the losses of tiles whose output window covered it; cells not yet covered count as the hardest,
    so that they are explored first."""

    def __init__(self, shapes: Sequence[Sequence[int]], cell: Sequence[int], momentum: float = 0.9) -> None:
        if any(c < 1 for c in cell) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"cell sides must be >= 1 and momentum in [0, 1), got {tuple(cell)} and {momentum}")
        self.shapes = [tuple(int(s) for s in shape) for shape in shapes]
        self.cell, self.momentum = tuple(int(c) for c in cell), momentum
        self.grids = [np.full([-(-s // c) for s, c in zip(shape, self.cell, strict=True)], np.nan) for shape in shapes]

    def record(self, item: int, centre: Sequence[int], window: Sequence[int], loss: float) -> None:
        """Fold a tile's loss into every cell its output window (size `window`, centred at `centre`) covers."""
        if not np.isfinite(loss):
            return
        grid = self.grids[item]
        region = tuple(
            slice(max(0, (c - w // 2) // k), min(g, (c - w // 2 + w - 1) // k + 1))
            for c, w, k, g in zip(centre, window, self.cell, grid.shape, strict=True)
        )
        old = grid[region]
        grid[region] = np.where(np.isnan(old), loss, self.momentum * old + (1 - self.momentum) * loss)

    def draw(self, rng: np.random.Generator, top: float) -> tuple[int, tuple[int, ...]]:
        """An (item, centre) in a cell drawn uniformly from the hardest `top` share of cells (unseen cells first)."""
        check("train", {"hard_tile_top": top})
        flat = np.concatenate([g.ravel() for g in self.grids])
        hardest = max(1, int(np.ceil(top * flat.size)))
        unseen = np.flatnonzero(np.isnan(flat))
        if unseen.size >= hardest:
            pool = unseen
        else:
            seen = np.flatnonzero(~np.isnan(flat))
            pool = np.concatenate([unseen, seen[np.argsort(-flat[seen], kind="stable")[: hardest - unseen.size]]])
        j = int(pool[rng.integers(pool.size)])
        sizes = np.cumsum([g.size for g in self.grids])
        item = int(np.searchsorted(sizes, j, side="right"))
        index = np.unravel_index(j - (sizes[item - 1] if item else 0), self.grids[item].shape)
        centre = tuple(
            min(int(i) * side + int(rng.integers(side)), size - 1)
            for i, side, size in zip(index, self.cell, self.shapes[item], strict=True)
        )
        return item, centre

    def state_dict(self) -> dict:
        # Tensors, not numpy arrays: checkpoints load with torch.load(weights_only=True), which runs no pickled code.
        return {"grids": [torch.from_numpy(g.copy()) for g in self.grids], "cell": self.cell, "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["cell"]) != self.cell or [g.shape for g in state["grids"]] != [g.shape for g in self.grids]:
            raise ValueError("the checkpoint's tile-difficulty grid does not match this training data")
        self.grids = [torch.as_tensor(g).numpy().astype(float) for g in state["grids"]]


class HardTileOrder(Sampler):
    """Sample indices start..stop-1 for a `TileSampler`: with probability `share` a sample is centred in one of
    the hardest `top` share of `difficulty`'s cells, otherwise where the tile sampler would put it anyway. Each
    index is yielded as (i, item, centre), and its position is kept in `positions` until the training loop
    records its loss."""

    def __init__(
        self,
        tiles: TileSampler,
        difficulty: TileDifficulty,
        share: float,
        top: float,
        seed: int,
        start: int,
        stop: int,
    ) -> None:
        check("train", {"hard_tile_share": share, "hard_tile_top": top})
        self.tiles, self.difficulty, self.share, self.top, self.seed = tiles, difficulty, share, top, seed
        self.start, self.stop = start, stop
        self.positions: dict[int, tuple[int, tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        for i in range(self.start, self.stop):
            rng = np.random.default_rng([self.seed, i, 1])
            placed = rng.random() < self.share
            item, centre = self.difficulty.draw(rng, self.top) if placed else self.tiles.uniform_position(i)
            self.positions[i] = (item, centre)
            yield i, item, centre

    def record(self, i: int, window: Sequence[int], loss: float) -> None:
        """Sample i was trained on with this loss: fold it into the difficulty grid."""
        item, centre = self.positions.pop(i)
        self.difficulty.record(item, centre, window, loss)
