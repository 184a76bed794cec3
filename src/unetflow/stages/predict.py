"""Predict: class probabilities of a volume (OME-Zarr, zarr or TIFF, read lazily) into OME-Zarr, block by block.

One dask task per output file (a zarr v3 shard holding a group of blocks, `predict.file_mb`): for each of its
blocks it reads the mirrored input window straight from the source and runs the model on the block's slices
(2D model) or volume (3D model); then it writes the group in one step and records it as done. Reading and
writing run beside the model (`unetflow.overlap`): the next block is read while the model computes the current
one, and a group is written while the next is computed (at most one input block and one group in flight per
worker), so a run takes about as long as its forward passes. The output is
built in `<out>.partial`, which carries a fingerprint of everything that changes the result: a killed run (or
another shard of the same run) picks up the groups not yet recorded, and the store moves to `<out>` only once
every group is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from unetflow.blocks import (
    BlockGrid,
    block_grid,
    blocks_of_group,
    finish_partial,
    group_shape,
    is_done,
    open_partial,
    record_done,
)
from unetflow.blocks import shard as shard_blocks
from unetflow.executor import SchedulerSpec, run_tasks
from unetflow.folds import Fold
from unetflow.image import Image, as_zyx, z_window
from unetflow.inference.budget import block_for_side, largest_side
from unetflow.inference.calibration import engine_and_side
from unetflow.inference.engines import Engine, checked_engine, wants_freed_memory_kept
from unetflow.inference.inferer import TileInferer, block_input, block_probabilities
from unetflow.inference.tiling import BlockPlan, plan_blocks
from unetflow.intensity import image_stats
from unetflow.models.checkpoint import load_model
from unetflow.overlap import WriteBehind, read_ahead
from unetflow.provenance import RECORD_KEY, input_fingerprint, make_record, stage_code
from unetflow.pyramid import level_count
from unetflow.runtime import (
    KEEP_FREED_ENV,
    keep_freed_memory,
    release_free_memory,
    resolve_precision,
    select_device,
    set_threads,
)
from unetflow.settings import check, defaults
from unetflow.store import (
    channel_metadata,
    create_image,
    encode_probabilities,
    exclusive,
    levels_in,
    open_image,
    partial_path,
    write_levels,
)

log = logging.getLogger(__name__)


_D = defaults("predict")


@dataclass(frozen=True)
class PredictJob:
    """Everything a worker needs to compute and store one block; small and picklable for dask.distributed."""

    model: str
    source: str
    out: str
    block: tuple[int, int, int]
    dtype: str = _D["dtype"]
    file_mb: float = _D["file_mb"]
    tta: bool = _D["tta"]
    batch_size: int = _D["batch_size"]
    device: str = _D["device"]
    threads: int | None = None
    precision: str = _D["precision"]
    engine: str = _D["engine"]
    # Only slices [start, stop) of the source, predicted as a stack of their own (a fold's held-out slices).
    z_range: tuple[int, int] | None = None
    # The output's fingerprint, once known: a worker built for other inputs is never reused.
    fingerprint: str = ""
    # The group of blocks written as one file, once resolved (whole blocks per axis).
    group: tuple[int, int, int] | None = None
    # With zeros in `block`: cut blocks at the tile side found fastest (`unetflow.inference.calibration`), not
    # the budget's largest; with `tiles`, the side in that calibration file (measured and written first where the
    # file is missing), which every job of a run shares.
    calibrate: bool = _D["calibrate"]
    tiles: str | None = None

    @property
    def store(self) -> Path:
        return partial_path(self.out)

    @classmethod
    def from_settings(
        cls,
        model: str,
        source: str,
        out: str,
        settings: dict[str, Any],
        fold: tuple[int, int] | None = None,
        batch_size: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        tiles: str | None = None,
    ) -> PredictJob:
        """A job from a `predict` config section (checked against the schema, defaults filled in); with `fold`
        (index, count) only that fold's held-out slices of the source are predicted; `tiles`: see the field."""
        p = check("predict", settings)
        z_range = None
        if fold is not None:
            z_range = Fold(*fold).held_out(as_zyx(open_image(source)).shape[0])
        block = tuple(int(b) for b in p["block"])
        batch = batch_size or p["batch_size"]
        return cls(
            model,
            source,
            out,
            block,
            p["dtype"],
            p["file_mb"],
            p["tta"],
            batch,
            device,
            threads,
            p["precision"],
            p["engine"],
            z_range,
            calibrate=p["calibrate"] or tiles is not None,
            tiles=tiles,
        )


@dataclass
class _Worker:
    """Per-process state of a job, built once: the model on its device, the source, the block plan, the output."""

    inferer: TileInferer
    image: Image
    plan: BlockPlan
    groups: BlockGrid
    stats: Any
    levels: list[zarr.Array]  # the output's arrays, full resolution first
    writer: WriteBehind  # writes each finished group while the next one is computed


_workers: dict[PredictJob, _Worker] = {}
_workers_lock = threading.Lock()
# Engines built and checked while planning (`resolve_job`), taken by this process's worker instead of building
# (converting, compiling) the same engine again.
_checked: dict[tuple, Engine] = {}


def worker_device(requested: str, worker_name: object, gpus: int) -> str:
    """The device of one dask.distributed worker: a bare `cuda`/`auto` request on a machine with several GPUs
    spreads LocalCluster workers (named 0, 1, ...) over them; anything else is used as asked."""
    if requested in ("auto", "cuda") and gpus > 1 and isinstance(worker_name, int):
        return f"cuda:{worker_name % gpus}"
    return requested


def _device_name(job: PredictJob) -> str:
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not inside a dask.distributed worker
        return job.device
    return worker_device(job.device, name, torch.cuda.device_count())


def _worker(job: PredictJob) -> _Worker:
    with _workers_lock:
        if job not in _workers:
            set_threads(job.threads)
            device = select_device(_device_name(job))
            model, _ = load_model(job.model, device)
            image = _source(job)
            plan = plan_blocks(image.shape, job.block, model.geometries, model.config.dims, model.config.slice_context)
            levels = levels_in(job.store)
            engine = _checked.pop(_engine_key(job, device), None) or job.engine
            _workers[job] = _Worker(
                TileInferer(model, device, job.batch_size, job.precision, job.tta, engine),
                image,
                plan,
                file_groups(image.shape, job),
                image_stats(image),
                levels,
                WriteBehind(depth=1),
            )
        return _workers[job]


def _engine_key(job: PredictJob, device: torch.device) -> tuple:
    return (job.model, str(device), job.precision, job.engine, job.threads)


def file_groups(shape: Sequence[int], job: PredictJob) -> BlockGrid:
    """The groups of blocks of a resolved job, one per output file."""
    assert job.group is not None, "resolve the job first (resolve_job)"
    return block_grid(shape, job.group, (0, 0, 0), job.group)


def process_group(job: PredictJob, index: tuple[int, ...]) -> int:
    """Compute the blocks of one group and hand it to the worker's writer, which writes it as one file and then
    records it (`finish_worker` waits for that); returns its number of voxels."""
    w = _worker(job)
    group = w.groups.block(index)
    origin = [r.start for r in group.write]
    out = np.empty((w.levels[0].shape[0], *(r.stop - r.start for r in group.write)), dtype=job.dtype)
    blocks = [w.plan.blocks.block(i) for i in blocks_of_group(w.plan.blocks, group)]

    def read(block):
        with _naming_source(job):
            return block_input(w.image.array, block, w.stats)

    for block, data in read_ahead(blocks, read):
        with _naming_source(job):
            probs = block_probabilities(w.inferer, data, block, w.plan)
        inside = tuple(slice(r.start - o, r.stop - o) for r, o in zip(block.write, origin, strict=True))
        out[(slice(None), *inside)] = encode_probabilities(probs, job.dtype)
        del data, probs
    # Once per file, not per block: a trim hands the forward passes' freed pages back, and the next pass faults
    # them in again (eager fp32 on 20 x 2048^2 in blocks of 1024^2: 5-6 s, 6%, with a trim after every block).
    release_free_memory()
    w.writer.submit(_write_group, w, job, index, group.write, out)
    return int(np.prod(out.shape[1:]))


def _write_group(w: _Worker, job: PredictJob, index: tuple[int, ...], region: tuple[slice, ...], out) -> None:
    write_levels(w.levels, (slice(None), *region), out, labels=False)
    record_done(job.store, index)


def finish_worker(job: PredictJob) -> None:
    """Wait for this process's outstanding writes of `job` (raising the first error) and drop its worker state;
    run once per worker process after its last group."""
    with _workers_lock:
        worker = _workers.pop(job, None)
    if worker is not None:
        worker.writer.close()


@contextlib.contextmanager
def _naming_source(job: PredictJob):
    """Errors about the input name the source (the reader names it already for a missing or corrupt chunk)."""
    try:
        yield
    except ValueError as exc:
        if str(job.source) in str(exc):
            raise
        raise ValueError(f"{job.source}: {exc}") from exc


def _source(job: PredictJob) -> Image:
    image = as_zyx(open_image(job.source))
    if image.axes != "zyx":
        raise ValueError(f"{job.source}: expected a zyx volume (or a yx slice), got axes {image.axes!r}")
    return z_window(image, job.z_range) if job.z_range is not None else image


def provenance(job: PredictJob, shape: Sequence[int]) -> dict[str, Any]:
    """What makes the output: the model's bytes, the source's content, and every setting that changes a value."""
    inputs = {"model": input_fingerprint(job.model), "images": input_fingerprint(job.source)}
    settings = {
        "shape": list(shape),
        "block": list(job.block),
        "group": list(job.group or ()),
        "dtype": job.dtype,
        "tta": job.tta,
        "precision": job.precision,
        "engine": job.engine,
        "z_range": list(job.z_range) if job.z_range is not None else None,
    }
    return make_record(inputs, settings, stage_code("predict"))


def prepare_store(job: PredictJob, shape: tuple[int, ...], image: Image, attrs: dict) -> bool:
    """Make `job.store` hold an output for the provenance record in `attrs`; True if an existing one is resumed."""

    def create(fresh: Path) -> None:
        chunks, files = (shape[0], *job.block), (shape[0], *(job.group or job.block))
        levels = level_count(shape[-2:], files[-2:])
        create_image(
            fresh,
            shape,
            job.dtype,
            chunks,
            "czyx",
            image.voxel_size,
            image.unit,
            attrs,
            shards=files,
            levels=levels,
            ome_extra=channel_metadata(attrs["classes"], job.dtype),
        )

    return open_partial(job.store, attrs[RECORD_KEY]["fingerprint"], create)


def finalize(out: str | Path) -> Path:
    """Check that every file of `<out>.partial` is done, then move it to `out` (the gather step of shards)."""
    return finish_partial(out, leading_axes=1)


def resolve_job(
    job: PredictJob, memory_mb: float | None = None
) -> tuple[PredictJob, Image, torch.nn.Module, BlockPlan, torch.device]:
    """Validate the job against its source and model; fill in an automatic block size (zeros in `block`), the
    group of blocks per output file, and the precision and engine `auto` stands for on this device (so that a
    resumed output never mixes them)."""
    check(
        "predict", {"dtype": job.dtype, "precision": job.precision, "batch_size": job.batch_size, "engine": job.engine}
    )
    image = _source(job)
    device = select_device(job.device)
    precision = resolve_precision(device, job.precision)
    model, _ = load_model(job.model, "cpu")
    dims = model.config.dims
    block = tuple(int(b) for b in job.block)
    if len(block) != 3:
        raise ValueError(f"predict.block needs 3 entries (z, y, x), got {list(job.block)}")
    set_threads(job.threads)  # an engine is built, checked and timed with the threads its run gets
    engine = None
    if any(b <= 0 for b in block):
        budget = (memory_mb or _D["memory_budget_mb"]) * 2**20
        largest = largest_side(model, image.shape, budget, job.batch_size, precision)
        calibrate = bool(job.calibrate or job.tiles)
        engine, side = engine_and_side(
            job.engine, model, device, precision, budget, job.batch_size, largest, calibrate, job.tiles
        )
        chosen = block_for_side(model, image.shape, side, job.batch_size)
        block = tuple(c if b <= 0 else b for b, c in zip(block, chosen, strict=True))
    # A 2D model's z block never needs to exceed the volume.
    block = tuple(min(b, s) if a < 3 - dims else b for a, (b, s) in enumerate(zip(block, image.shape, strict=True)))
    # refuses blocks off the pooling grid
    plan = plan_blocks(image.shape, block, model.geometries, dims, model.config.slice_context)
    voxel_bytes = model.config.classes * np.dtype(job.dtype).itemsize
    group = group_shape(block, image.shape, voxel_bytes, job.file_mb * 2**20)
    if engine is None:
        read = [r.stop - r.start for r in plan.blocks[0].read][3 - dims :]
        engine = checked_engine(job.engine, model, device, precision, (1, model.config.input_channels, *read))
    resolved = replace(job, block=block, group=group, precision=precision, engine=engine.name)
    with _workers_lock:
        _checked.clear()  # one planned job's engine at a time
        _checked[_engine_key(resolved, device)] = engine
    return resolved, image, model, plan, device


def predict_volume(
    job: PredictJob,
    scheduler: SchedulerSpec | None = None,
    shard: tuple[int, int] = (0, 1),
    memory_mb: float | None = None,
) -> Path:
    """Run the blocks of `job` (its `shard` i of N only) and, when this covers every block, move the finished
    output into place. Returns the output path (`<out>.partial` while other shards are outstanding)."""
    if shard[1] > 1:  # shards share the partial output by design, each writing its own blocks
        return _predict(job, scheduler, shard, memory_mb)
    with exclusive(job.out):  # two unsharded predictions of one output: the second refuses at once
        return _predict(job, scheduler, shard, memory_mb)


@dataclass(frozen=True)
class ShardPlan:
    """What one job (shard i of n) is to do: the resolved job, its groups of blocks (files) still to compute,
    their device."""

    job: PredictJob
    pending: list[tuple[int, ...]]
    groups: int  # the shard's groups, done or not
    device: torch.device


def plan_shard(job: PredictJob, shard: tuple[int, int] = (0, 1), memory_mb: float | None = None) -> ShardPlan:
    """Resolve the job, create or reuse its partial output, and find the shard's groups not yet recorded; costs
    what the shard costs, not what the volume does (groups are computed from their numbers)."""
    job, image, model, plan, device = resolve_job(job, memory_mb)
    classes = model.config.classes
    attrs = {
        "kind": "probabilities",
        "classes": model.config.class_names,
        "model": str(job.model),
        "source": str(job.source),
        "context": [g.context for g in model.geometries],
        "model_dims": model.config.dims,
        "block": list(job.block),
        "group": list(job.group or ()),
        "tta": job.tta,
        "precision": job.precision,
        "engine": job.engine,
        "z_range": list(job.z_range) if job.z_range is not None else None,
    }
    attrs[RECORD_KEY] = provenance(job, image.shape)
    job = replace(job, fingerprint=attrs[RECORD_KEY]["fingerprint"])
    resumed = prepare_store(job, (classes, *image.shape), image, attrs)
    mine = shard_blocks(file_groups(image.shape, job), *shard)
    pending = [g.index for g in mine if not is_done(job.store, g.index)]
    if resumed:
        log.info("resuming %s: %d of %d files already done", job.store, len(mine) - len(pending), len(mine))
    return ShardPlan(job, pending, len(mine), device)


def _predict(job: PredictJob, scheduler: SchedulerSpec | None, shard: tuple[int, int], memory_mb: float | None) -> Path:
    if wants_freed_memory_kept(job.engine, select_device(job.device)):
        keep_freed_memory()  # before this process starts any thread (zarr's included): later ones share one arena
    planning = time.perf_counter()
    planned = plan_shard(job, shard, memory_mb)
    job, pending = planned.job, planned.pending
    print(
        f"predict: {len(pending)} of {planned.groups} files to compute (block {list(job.block)}, "
        f"{list(job.group or ())} per file, engine {job.engine}, {job.precision}; planned in "
        f"{time.perf_counter() - planning:.1f} s)",
        flush=True,
    )
    started = time.perf_counter()
    try:
        gpu = planned.device.type == "cuda"
        spec = scheduler or SchedulerSpec()
        # a LocalCluster's worker processes keep freed memory where the engine planning chose allocates from the heap
        env = KEEP_FREED_ENV if wants_freed_memory_kept(job.engine, planned.device) else None
        voxels = run_tasks(process_group, job, pending, spec, gpu=gpu, finish=finish_worker, worker_env=env)
    finally:  # after an error: the groups already computed are still written; the first error is the one raised
        with contextlib.suppress(Exception):
            finish_worker(job)
    seconds = time.perf_counter() - started
    if pending:
        print(f"predict: {voxels / max(seconds, 1e-9):,.0f} voxels/s over {seconds:.1f} s", flush=True)
    if shard[1] > 1:  # shards never finalize: the gather step (`unetflow predict --gather`) checks and does it
        return job.store
    return finalize(job.out)
