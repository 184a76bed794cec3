"""Predict: class probabilities of a volume (OME-Zarr, zarr or TIFF, read lazily) into OME-Zarr, block by block.

The dask graph has one task per output block: it reads its mirrored input window straight from the source,
runs the model on the block's slices (2D model) or volume (3D model), and writes exactly its own output chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dask
import numpy as np
from tqdm import tqdm

from unetflow.inference import TileInferer, infer_block, plan_blocks
from unetflow.intensity import image_stats
from unetflow.models.checkpoint import load_model
from unetflow.runtime import select_device, set_threads
from unetflow.store import as_zyx, atomic_output, create_image, open_image, set_attrs

OUTPUT_DTYPES = ("float16", "float32", "uint8")


def encode(probs: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as stored: floats as they are, uint8 scaled to 0..255."""
    if dtype == "uint8":
        return np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8)
    return probs.astype(dtype)


def decode(stored: np.ndarray) -> np.ndarray:
    stored = np.asarray(stored)
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255
    return stored.astype(np.float32)


def predict_volume(
    model_path: str | Path,
    source: str | Path,
    out: str | Path,
    block: Sequence[int] = (1, 512, 512),
    dtype: str = "float16",
    device_name: str = "auto",
    workers: int = 1,
    batch_size: int = 4,
    threads: int | None = None,
) -> Path:
    """Write `out` (axes czyx, one chunk per block) with the probabilities of every class."""
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"predict.dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    set_threads(threads)
    image = as_zyx(open_image(source))
    if image.axes != "zyx":
        raise ValueError(f"{source}: expected a zyx volume (or a yx slice), got axes {image.axes!r}")
    device = select_device(device_name)
    model, _ = load_model(model_path, device)
    inferer = TileInferer(model, device, batch_size=batch_size)
    geometries, dims = model.geometries, model.config.dims
    block = tuple(
        min(int(b), s) if a < 3 - dims else int(b) for a, (b, s) in enumerate(zip(block, image.shape, strict=True))
    )
    plan = plan_blocks(image.shape, block, geometries, dims)
    stats = image_stats(image)
    classes = model.config.classes
    with atomic_output(out) as tmp:
        target = create_image(
            tmp,
            (classes, *image.shape),
            dtype,
            (classes, *block),
            "czyx",
            image.voxel_size,
            image.unit,
        )
        bar = tqdm(total=len(plan.blocks), desc="predict blocks", unit="block", mininterval=2)

        def run(b):
            target[(slice(None), *b.write)] = encode(infer_block(inferer, image.array, b, plan, stats), dtype)
            bar.update(1)

        tasks = [dask.delayed(run)(b) for b in plan.blocks]
        dask.compute(*tasks, scheduler="threads", num_workers=max(1, workers))
        bar.close()
        set_attrs(
            tmp,
            {
                "kind": "probabilities",
                "classes": ["membrane", "cell"][:classes] if classes == 2 else [f"class{i}" for i in range(classes)],
                "model": str(model_path),
                "source": str(source),
                "context": [g.context for g in geometries],
            },
        )
    return Path(out)
