"""Ingest: TIFF stacks (one multi-page file, a folder or a glob of files) into OME-Zarr, slab by slab and across
jobs; zarr stores (OME-Zarr 0.4/0.5 or plain zarr, local or a URL) used in place, through a reference store.

A copy is cut into z-slabs of `chunks[0]` slices, each written by one task into whole files of the store (zarr
shards of about 64 MB spanning the slab in y and x) and recorded with what the end needs of it: its intensity sums
or label survey, and the digest of its voxels. Any number of jobs copy slabs (`copy_slabs`); `finish` merges the
slabs' records in order (exact intensity statistics, the label convention, the store's content fingerprint) and
moves the store into place. Pages are read one at a time (`unetflow.tiff`). Labels are checked: their convention
(binary 0/255, 0/1 or instance ids) is recorded with the store, and anything else fails naming the file and the
values found.

A store used in place is never copied: `reference` writes a small OME-Zarr group that names it and records its
fingerprint (metadata by content, chunks by name, size and modification time; for a URL its metadata) and its
intensity statistics from a sample of chunks (`unetflow.intensity`), so that the jobs that read it do not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from unetflow.blocks import (
    Block,
    BlockGrid,
    block_grid,
    count_done,
    finish_partial,
    group_shape,
    open_partial,
    require_record,
    run_units,
)
from unetflow.image import as_zyx, z_window
from unetflow.intensity import RunningStats, sample_stats
from unetflow.labels import LabelSurvey
from unetflow.provenance import RECORD_KEY, digest, input_fingerprint, make_record, stage_code
from unetflow.pyramid import level_count
from unetflow.settings import default, defaults
from unetflow.store import (
    atomic_output,
    create_image,
    exclusive,
    is_remote,
    is_zarr_source,
    label_metadata,
    levels_in,
    open_image,
    partial_path,
    remove,
    set_attrs,
    set_ome,
    write_levels,
)
from unetflow.tiff import iter_slabs, page_shapes, resolve_sources

FILE_BYTES = 64 * 2**20  # an output file (a zarr shard) holds about this much of one slab
SLABS_DIR = ".unetflow_slabs"  # inside a partial store: what each finished slab contributes to the whole


@dataclass(frozen=True)
class IngestJob:
    """One copy of a source into OME-Zarr and the settings that change it."""

    source: str
    out: str
    kind: str = "image"
    voxel_size: tuple[float, ...] = tuple(default("dataset", "voxel_size"))
    chunks: tuple[int, ...] = tuple(defaults("ingest")["chunks"])
    unit: str = default("dataset", "unit")
    z_range: tuple[int, int] | None = None
    label_convention: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "labels"):
            raise ValueError(f"kind must be 'image' or 'labels', got {self.kind!r}")

    @property
    def store(self) -> Path:
        return partial_path(self.out)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chunks": [int(c) for c in self.chunks],
            "voxel_size": [float(v) for v in self.voxel_size],
            "unit": self.unit,
            "z_range": list(self.z_range) if self.z_range else None,
            "label_convention": self.label_convention,
        }


@dataclass(frozen=True)
class _Plan:
    files: list[Path]
    shape: tuple[int, int, int]  # as stored (after z_range)
    dtype: np.dtype
    start: int  # the first source slice
    slabs: BlockGrid
    volume: Any  # a zarr source's lazy image, else None


def _plan(job: IngestJob) -> _Plan:
    if is_zarr_source(job.source):
        volume = _zarr_volume(job.source)
        files, (depth, *plane), dtype = [Path(str(job.source))], volume.shape, volume.dtype
    else:
        volume = None
        files = resolve_sources(job.source)
        depth, plane, dtype = page_shapes(files)
    start, stop = _checked_z_range(job.source, job.z_range, depth) if job.z_range else (0, depth)
    shape = (stop - start, *(int(s) for s in plane))
    slab = (max(1, int(job.chunks[0])), *shape[1:])
    return _Plan(files, shape, np.dtype(dtype), start, block_grid(shape, slab, (0, 0, 0), slab), volume)


def _identity(job: IngestJob, plan: _Plan) -> str:
    """Which copy a partial store belongs to, cheaply: the settings and the sources' names, sizes and times."""
    sources = []
    for f in plan.files:
        st = os.stat(f) if not is_remote(f) else None
        sources.append([str(f), st.st_size if st else None, st.st_mtime_ns if st else None])
    return digest({"settings": job.settings, "sources": sources, "code": stage_code("ingest")})


def _slab_record(store: Path, index: Sequence[int]) -> Path:
    return store / SLABS_DIR / f"{int(index[0])}.json"


def _read_slab(job: IngestJob, plan: _Plan, z0: int, z1: int) -> np.ndarray:
    if plan.volume is not None:
        return np.asarray(plan.volume.array[plan.start + z0 : plan.start + z1])
    (slab,) = iter_slabs(plan.files, z1 - z0, (plan.start + z0, plan.start + z1))
    return slab


def copy_slabs(job: IngestJob, part: tuple[int, int] = (0, 1), limit: int | None = None) -> int:
    """Copy the slabs of job `part` (i of n), at most `limit` of them, into the partial store, each recorded;
    returns the slabs copied."""
    plan = _plan(job)
    chunks = tuple(min(int(c), s) for c, s in zip(job.chunks, plan.shape, strict=True))
    files = group_shape(chunks, plan.slabs.block_shape, plan.dtype.itemsize, FILE_BYTES)

    identity = _identity(job, plan)

    def create(fresh: Path) -> None:
        # Until `finish` records the content, the partial store is named by what it is a copy of.
        attrs = {RECORD_KEY: {"fingerprint": identity}}
        levels = level_count(plan.shape[-2:], files[-2:])
        create_image(
            fresh,
            plan.shape,
            plan.dtype,
            chunks,
            "zyx",
            job.voxel_size,
            job.unit,
            attrs,
            shards=files,
            levels=levels,
            ome_extra=label_metadata() if job.kind == "labels" else None,
        )
        (fresh / SLABS_DIR).mkdir()

    open_partial(job.store, identity, create)
    levels = levels_in(job.store)

    def one(block: Block) -> None:
        z0, z1 = block.write[0].start, block.write[0].stop
        slab = _read_slab(job, plan, z0, z1)
        if np.issubdtype(slab.dtype, np.floating) and not np.isfinite(slab).all():
            bad = z0 + int(np.flatnonzero(~np.isfinite(slab).reshape(len(slab), -1).all(axis=1))[0])
            raise ValueError(
                f"{job.source}: slice {plan.start + bad} holds NaN or infinite values; they would spread through "
                "every prediction, so they are refused (replace them in the source first)"
            )
        whole = (slice(z0, z1), slice(0, plan.shape[1]), slice(0, plan.shape[2]))
        write_levels(levels, whole, slab, labels=job.kind == "labels")
        summary: dict[str, Any] = {"digest": _digest(slab)}
        if job.kind == "labels":
            survey = LabelSurvey()
            survey.add(slab)
            summary["labels"] = survey.to_dict()
        else:
            stats = RunningStats()
            stats.add(slab)
            summary["intensity"] = stats.to_dict()
        path = _slab_record(job.store, block.index)
        path.with_suffix(".tmp").write_text(json.dumps(summary))
        path.with_suffix(".tmp").replace(path)

    return run_units(job.store, plan.slabs, part, one, limit)


def _digest(slab: np.ndarray) -> str:
    from unetflow.provenance import ContentDigest

    content = ContentDigest()
    content.update(slab)
    return content.hexdigest()


def finish(job: IngestJob) -> Path:
    """Merge the slabs' records in order, record what the store holds, and move it into place."""
    plan = _plan(job)
    require_record(job.store, _identity(job, plan), "ingest --shard I/N (every slab)")
    missing = len(plan.slabs) - count_done(job.store)
    if missing:
        raise RuntimeError(f"{job.store}: {missing} slabs are not copied yet; re-run the jobs that did not finish")
    digests, survey, stats = [], LabelSurvey(), RunningStats()
    for k in range(len(plan.slabs)):
        summary = json.loads(_slab_record(job.store, plan.slabs.index(k)).read_text())
        digests.append(summary["digest"])
        if job.kind == "labels":
            survey.merge(LabelSurvey.from_dict(summary["labels"]))
        else:
            stats.merge(RunningStats.from_dict(summary["intensity"]))
    attrs: dict[str, Any] = {
        "kind": job.kind,
        "source": [str(f) for f in plan.files],
        "z_range": job.settings["z_range"],
        RECORD_KEY: make_record({"data": digest(digests)}, job.settings, stage_code("ingest")),
    }
    if job.kind == "labels":
        try:
            attrs["label_convention"] = survey.convention(str(job.source), job.label_convention)
        except ValueError:
            remove(job.store)  # the source is wrong: copying it again cannot help
            raise
        cell = {"binary255": 255, "binary01": 1}.get(attrs["label_convention"])
        set_ome(job.store, label_metadata([{"label-value": cell, "class": "cell"}] if cell else ()))
    else:
        attrs["intensity"] = stats.result().to_dict()
    set_attrs(job.store, attrs)
    remove(job.store / SLABS_DIR)
    return finish_partial(job.out, grid=plan.slabs)


def ingest(
    source: str | Path,
    out: str | Path,
    kind: str = "image",
    voxel_size: Sequence[float] = tuple(default("dataset", "voxel_size")),
    chunks: Sequence[int] = tuple(defaults("ingest")["chunks"]),
    unit: str = default("dataset", "unit"),
    z_range: Sequence[int] | None = None,
    label_convention: str | None = None,
) -> Path:
    """Convert `source` into the OME-Zarr image `out` (axes zyx) in this process, or use a zarr source of images
    in place (`reference`); returns `out`. Labels are checked against `label_convention` when it is declared,
    recognized when binary, refused otherwise (`LabelSurvey.convention`). A failure leaves no partial store."""
    if kind == "image" and is_zarr_source(source):
        return reference(source, out, voxel_size, unit, z_range)
    job = IngestJob(
        str(source),
        str(out),
        kind,
        tuple(float(v) for v in voxel_size),
        tuple(int(c) for c in chunks),
        unit,
        tuple(int(v) for v in z_range) if z_range is not None else None,
        label_convention,
    )
    with exclusive(job.out):
        try:
            copy_slabs(job)
            return finish(job)
        except BaseException:
            remove(job.store)
            raise


def source_shape(source: str | Path) -> tuple[int, int, int]:
    """(z, y, x) of a source from its metadata alone (no pixel is read): the shape ingest gives its store."""
    if is_zarr_source(source):
        return tuple(_zarr_volume(source).shape)  # type: ignore[return-value]
    depth, shape, _ = page_shapes(resolve_sources(source))
    return (depth, *shape)


def _zarr_volume(source: str | Path):
    image = as_zyx(open_image(source))
    if image.axes != "zyx":
        raise ValueError(
            f"{source}: expected a grayscale zyx volume (or a yx slice; t and c axes of length 1 are dropped), "
            f"got axes {image.axes!r} of shape {image.shape}"
        )
    return image


def _checked_z_range(source: str | Path, z_range: Sequence[int], depth: int) -> tuple[int, int]:
    start, stop = int(z_range[0]), int(z_range[1])
    if not 0 <= start < stop <= depth:
        raise ValueError(f"{source}: z_range [{start}, {stop}) outside its {depth} slices")
    return start, stop


def _zarr_slabs(image, depth: int, z_range: tuple[int, int]) -> Iterator[np.ndarray]:
    for z in range(z_range[0], z_range[1], depth):
        yield np.asarray(image.array[z : min(z + depth, z_range[1])])


def reference(
    source: str | Path,
    out: str | Path,
    voxel_size: Sequence[float] = tuple(default("dataset", "voxel_size")),
    unit: str = default("dataset", "unit"),
    z_range: Sequence[int] | None = None,
) -> Path:
    """Use a zarr store in place: write `out`, a reference store that names it (module doc). An OME-Zarr keeps
    its own voxel size and unit; a plain zarr array gets `voxel_size` and `unit`. With `z_range`, only those
    slices are the dataset."""
    image = _zarr_volume(source)
    if z_range is not None:
        z_range = _checked_z_range(source, z_range, image.shape[0])
        image = z_window(image, z_range)
    if not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{source}: expected numeric voxels, got dtype {image.dtype}")
    node = zarr.open(store=str(source), mode="r")
    own_scale = not isinstance(node, zarr.Array)  # an OME-Zarr group carries its scale
    voxel = tuple(float(v) for v in (image.voxel_size if own_scale else voxel_size))
    unit = image.unit if own_scale else unit
    fingerprint = _metadata_digest(node) if is_remote(source) else input_fingerprint(source)
    z_range = list(z_range) if z_range is not None else None
    settings = {"kind": "image", "reference": str(source), "voxel_size": list(voxel), "unit": unit, "z_range": z_range}
    attrs = {
        "kind": "image",
        "reference": str(source),
        "z_range": z_range,
        "voxel_size": list(voxel),
        "unit": unit,
        "shape": list(image.shape),
        "intensity": sample_stats(image).to_dict(),
        RECORD_KEY: make_record({"data": fingerprint}, settings, stage_code("ingest")),
    }
    with atomic_output(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.attrs["unetflow"] = attrs  # no OME metadata: a record of the image read in place, not an image
    return Path(out)


def _metadata_digest(node) -> str:
    """A remote store, named by its metadata (a URL cannot be listed): the node's and its arrays'."""
    parts = [node.metadata.to_dict()]
    if isinstance(node, zarr.Group):  # the arrays its multiscales name (a URL cannot be listed)
        ome = node.attrs.get("ome") or dict(node.attrs)
        paths = [d["path"] for ms in ome.get("multiscales", []) for d in ms["datasets"]]
        parts += [node[path].metadata.to_dict() for path in paths]
    return digest(parts)
