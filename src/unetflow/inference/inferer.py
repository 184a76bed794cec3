"""A model on tiles: batches of input tiles to class probabilities (with test-time augmentation), one block of a
volume at a time (`infer_block`), or a whole in-memory volume tiled like a large one (`predict_array`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unetflow.blocks import Block, read_mirrored
from unetflow.inference.engines import Engine, build_engine
from unetflow.inference.tiling import BlockPlan, plan_blocks, slice_stacks
from unetflow.inference.tta import IDENTITY_TRANSFORM, test_time_transforms
from unetflow.intensity import IntensityStats
from unetflow.models.geometry import Geometry
from unetflow.runtime import resolve_precision


class TileInferer:
    """Runs a model on batches of input tiles and returns class probabilities (softmax) as float32.

    With `tta`, the probabilities are averaged over the model's test-time transforms (`unetflow.inference.tta`);
    `engine` runs the forward passes: a name (`unetflow.inference.engines`; not `auto`) or an engine already built
    for this model, device and precision (`checked_engine`)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        batch_size: int = 4,
        precision: str = "auto",
        tta: bool = False,
        engine: str | Engine = "eager",
    ):
        self.device = device
        self.dims = model.config.dims
        self.batch_size = max(1, batch_size)
        self.precision = resolve_precision(device, precision)
        self.engine = engine if not isinstance(engine, str) else build_engine(engine, model, device, self.precision)
        self.model = model.to(device).eval()
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
                probs = transform.invert(self.engine(transform.apply(x)).softmax(1))
                total = probs if total is None else total + probs
            outputs.append((total / len(self.transforms)).cpu().numpy())
        return np.concatenate(outputs)


def block_input(source, block: Block, stats: IntensityStats) -> np.ndarray:
    """The normalized, mirrored input window of one block of a zyx `source` (the part of a block that is I/O)."""
    data = stats.normalize(read_mirrored(source, block.read))
    if not np.isfinite(data).all():  # one NaN would spread through every probability the block's tiles make
        region = ", ".join(f"{r.start}:{r.stop}" for r in block.read)
        raise ValueError(f"input block {block.index} (read region [{region}]) holds NaN or infinite values")
    return data


def block_probabilities(inferer: TileInferer, data: np.ndarray, block: Block, plan: BlockPlan) -> np.ndarray:
    """Class probabilities (classes, *write region shape) of one block from its input window (`block_input`)."""
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


def infer_block(inferer: TileInferer, source, block: Block, plan: BlockPlan, stats: IntensityStats) -> np.ndarray:
    """Class probabilities (classes, *write region shape) of one block of a zyx `source`."""
    return block_probabilities(inferer, block_input(source, block, stats), block, plan)


def predict_array(inferer: TileInferer, volume: np.ndarray, stats: IntensityStats, block_size: int = 256) -> np.ndarray:
    """Probabilities (classes, z, y, x) of an in-memory zyx volume, tiled like a large one."""
    sizes = [max(g.step, block_size // g.step * g.step) for g in inferer.geometries]
    block = (1, *sizes) if inferer.dims == 2 else tuple(sizes)
    plan = plan_blocks(volume.shape, block, inferer.geometries, inferer.dims, inferer.model.config.slice_context)
    out = np.zeros((inferer.model.config.classes, *volume.shape), np.float32)
    for b in plan.blocks:
        out[(slice(None), *b.write)] = infer_block(inferer, volume, b, plan, stats)
    return out
