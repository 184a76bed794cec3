"""Overlap-tile inference (the paper's Fig. 2): each output block is computed from its input window grown by
the network's context and mirrored at the volume border. With valid convolutions and block offsets on the
pooling grid, the tiled result equals one whole-volume pass: there are no seams to blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unetflow.blocks import Block, block_grid, read_mirrored
from unetflow.intensity import IntensityStats
from unetflow.models.geometry import Geometry
from unetflow.runtime import autocast, memory_format, resolve_precision
from unetflow.tta import IDENTITY_TRANSFORM, test_time_transforms


class TileInferer:
    """Runs a model on batches of input tiles and returns class probabilities (softmax) as float32.

    With `tta`, the probabilities are averaged over the model's test-time transforms (`unetflow.tta`)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        batch_size: int = 4,
        precision: str = "auto",
        tta: bool = False,
    ):
        self.device = device
        self.dims = model.config.dims
        self.format = memory_format(device, self.dims)
        self.model = model.to(device).to(memory_format=self.format).eval()
        self.batch_size = max(1, batch_size)
        self.precision = resolve_precision(device, precision)
        self.transforms = test_time_transforms(model.geometries) if tta else (IDENTITY_TRANSFORM,)

    @property
    def geometries(self) -> tuple[Geometry, ...]:
        return self.model.geometries

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """tiles: (N, channels, *spatial) float32 -> (N, classes, *output spatial)."""
        outputs = []
        for start in range(0, len(tiles), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(tiles[start : start + self.batch_size]))
            x = x.to(self.device, non_blocking=True)
            total = None
            for transform in self.transforms:
                with autocast(self.device, self.precision):
                    logits = self.model(transform.apply(x).contiguous(memory_format=self.format))
                probs = transform.invert(logits.float().softmax(1))
                total = probs if total is None else total + probs
            outputs.append((total / len(self.transforms)).cpu().numpy())
        return np.concatenate(outputs)


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut for a model: blocks plus where each block's output sits in the model's output."""

    blocks: list[Block]
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


def infer_block(inferer: TileInferer, source, block: Block, plan: BlockPlan, stats: IntensityStats) -> np.ndarray:
    """Class probabilities (classes, *write region shape) of one block of a zyx `source`."""
    data = stats.normalize(read_mirrored(source, block.read))
    if plan.model_dims == 2:
        probs = inferer(slice_stacks(data, plan.slice_context))  # slices as a batch: (z, classes, y, x)
        probs = np.moveaxis(probs, 1, 0)
    else:
        probs = inferer(data[None, None])[0]
    write_shape = [s.stop - s.start for s in block.write]
    index = [slice(None), slice(0, write_shape[0]) if plan.model_dims == 2 else None]
    for k, axis in enumerate(range(3 - plan.model_dims, 3)):
        index_axis = slice(plan.crop[k], plan.crop[k] + write_shape[axis])
        if axis == 0:
            index[1] = index_axis
        else:
            index.append(index_axis)
    return probs[tuple(index)]


def predict_array(inferer: TileInferer, volume: np.ndarray, stats: IntensityStats, block_size: int = 256) -> np.ndarray:
    """Probabilities (classes, z, y, x) of an in-memory zyx volume, tiled like a large one."""
    sizes = [max(g.step, block_size // g.step * g.step) for g in inferer.geometries]
    block = (1, *sizes) if inferer.dims == 2 else tuple(sizes)
    plan = plan_blocks(volume.shape, block, inferer.geometries, inferer.dims, inferer.model.config.slice_context)
    out = np.zeros((inferer.model.config.classes, *volume.shape), np.float32)
    for b in plan.blocks:
        out[(slice(None), *b.write)] = infer_block(inferer, volume, b, plan, stats)
    return out
