"""Tile size from a memory budget: the larger the tile, the smaller the share of compute spent on context
(a valid-convolution tile of output n costs (n + context)^d for n^d voxels), so blocks are made as large as
the device memory for one batch of tiles allows, then evened out so the last block is not mostly padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


def activation_bytes(model: nn.Module, input_sizes: Sequence[int], batch: int, bytes_per_value: int) -> int:
    """Estimated peak memory of one inference pass over `batch` tiles of `input_sizes` (model axes)."""
    cfg = model.config
    values = 0
    for level in range(cfg.levels):
        voxels = math.prod(-(-n // f**level) for n, f in zip(input_sizes, cfg.pool_factors, strict=True))
        values += cfg.live_channels(level) * voxels
    values += (cfg.input_channels + 3 * cfg.classes) * math.prod(input_sizes)  # input, logits, probabilities, sum
    return batch * values * bytes_per_value


def _even(extent: int, largest: int, step: int) -> int:
    """The smallest multiple of `step` that covers `extent` in as few blocks as blocks of `largest` would."""
    count = -(-extent // largest)
    return -(-extent // (count * step)) * step


def _batch(model: nn.Module, shape: Sequence[int], batch_size: int) -> int:
    return min(batch_size, int(shape[0])) if model.config.dims == 2 else 1


def _outputs(model: nn.Module, shape: Sequence[int], n: int) -> list[int]:
    """Per-axis output sizes for side length n: on the pooling grid, at most the (rounded-up) volume."""
    steps = [g.step for g in model.geometries]
    caps = [-(-e // s) * s for e, s in zip(shape[3 - model.config.dims :], steps, strict=True)]
    return [min(n - n % s or s, cap) for s, cap in zip(steps, caps, strict=True)]


def largest_side(
    model: nn.Module, shape: Sequence[int], budget_bytes: float, batch_size: int, precision: str = "fp32"
) -> int:
    """The largest output side length (model axes) whose batch of tiles fits `budget_bytes`."""
    geometries = model.geometries
    bytes_per_value = 2 if precision == "bf16" else 4
    batch = _batch(model, shape, batch_size)
    steps = [g.step for g in geometries]
    caps = [-(-e // s) * s for e, s in zip(shape[3 - model.config.dims :], steps, strict=True)]

    def fits(n: int) -> bool:
        inputs = [g.window(o)[0] for g, o in zip(geometries, _outputs(model, shape, n), strict=True)]
        return activation_bytes(model, inputs, batch, bytes_per_value) <= budget_bytes

    if not fits(max(steps)):
        smallest = [g.window(s)[0] for g, s in zip(geometries, steps, strict=True)]
        need = activation_bytes(model, smallest, batch, bytes_per_value) / 2**20
        raise ValueError(
            f"predict.memory_budget_mb (--memory-mb) is too small for this model: even the smallest tile needs "
            f"about {need:.0f} MB"
        )
    lo, hi = max(steps), max(caps)
    while lo < hi:  # largest side length that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def unbounded_largest_side(model: nn.Module, budget_bytes: float, batch_size: int, precision: str = "fp32") -> int:
    """`largest_side` on a volume larger than any tile: what the budget allows, whatever the volume."""
    shape = (batch_size, *(10**6,) * model.config.dims)[-3:]
    return largest_side(model, shape, budget_bytes, batch_size, precision)


def block_for_side(model: nn.Module, shape: Sequence[int], side: int, batch_size: int) -> tuple[int, int, int]:
    """The zyx block of output side length `side` on a volume of `shape`, evened out so that the last block
    is not mostly padding; 2D models get `batch_size` slices per block."""
    extents = list(shape[3 - model.config.dims :])
    steps = [g.step for g in model.geometries]
    sizes = [_even(e, o, s) for e, o, s in zip(extents, _outputs(model, shape, side), steps, strict=True)]
    return (_batch(model, shape, batch_size), *sizes) if model.config.dims == 2 else tuple(sizes)  # type: ignore


def auto_block(
    model: nn.Module,
    shape: Sequence[int],
    budget_bytes: float,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[int, int, int]:
    """A zyx block shape whose tiles fit `budget_bytes`, as large as they allow; 2D models get `batch_size`
    slices per block.

    Test-time transforms run one after another, so TTA needs no more than one pass (the probability sum is counted)."""
    side = largest_side(model, shape, budget_bytes, batch_size, precision)
    return block_for_side(model, shape, side, batch_size)
