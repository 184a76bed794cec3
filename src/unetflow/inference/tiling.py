"""Block plans for overlap-tile inference (the paper's Fig. 2): each output block is computed from its input
window grown by the network's context and mirrored at the volume border. With valid convolutions and block
offsets on the pooling grid, the tiled result equals one whole-volume pass: there are no seams to blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unetflow.blocks import BlockGrid, block_grid
from unetflow.models.geometry import Geometry


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut for a model: blocks plus where each block's output sits in the model's output."""

    blocks: BlockGrid
    crop: tuple[int, ...]  # per model axis: where the block's output starts in the model's output
    model_dims: int
    slice_context: int = 0  # 2D models: neighbouring slices on each side stacked as input channels


def plan_blocks(
    shape: Sequence[int],
    block_shape: Sequence[int],
    geometries: Sequence[Geometry],
    model_dims: int,
    slice_context: int = 0,
) -> BlockPlan:
    """Blocks over a zyx volume; a 2D model gets context in y and x (and `slice_context` slices on each side in
    z, for 2.5D input), a 3D model in all three axes.

    Block sizes along model axes must be multiples of the pooling step so that every tile sits on the same
    pooling grid as a whole-volume pass.
    """
    if len(shape) != 3 or len(block_shape) != 3:
        raise ValueError(f"expected zyx shape and block shape, got {tuple(shape)} and {tuple(block_shape)}")
    model_axes = range(3 - model_dims, 3)
    if len(geometries) != model_dims:
        raise ValueError(f"expected {model_dims} per-axis geometries, got {len(geometries)}")
    context, reads, crops = [], [], []
    for axis in range(3):
        b = int(block_shape[axis])
        if axis in model_axes:
            geometry = geometries[axis - (3 - model_dims)]
            if b % geometry.step:
                raise ValueError(
                    f"block size {b} along axis {'zyx'[axis]} must be a multiple of the model's pooling "
                    f"step {geometry.step}"
                )
            read, crop = geometry.window(b)
            context.append(geometry.margin[0])
            reads.append(read)
            crops.append(crop)
        else:
            context.append(slice_context)
            reads.append(b + 2 * slice_context)
    return BlockPlan(block_grid(shape, block_shape, context, reads), tuple(crops), model_dims, slice_context)


def slice_stacks(volume: np.ndarray, context: int) -> np.ndarray:
    """(z - 2 context, 2 context + 1, y, x): each slice between its `context` neighbours on either side."""
    if context == 0:
        return volume[:, None]
    windows = np.lib.stride_tricks.sliding_window_view(volume, 2 * context + 1, axis=0)  # (n, y, x, window)
    return np.moveaxis(windows, -1, 1).copy()  # a writable copy: the window view is read-only
