"""Ingest: TIFF stacks (one multi-page file, a folder or a glob of files) into OME-Zarr, one slab at a time;
zarr stores (OME-Zarr 0.4/0.5 or plain zarr, local or a URL) used in place, through a reference store.

Pages are streamed with tifffile, so memory holds one chunk-deep slab of slices, never the whole stack.
Labels are checked while they stream: their convention (binary 0/255, 0/1 or instance ids) is recorded
with the store, and anything else fails naming the file and the values found.

A store used in place is never copied: `reference` writes a small OME-Zarr group that names it and records its
fingerprint (metadata by content, chunks by name, size and modification time; for a URL its metadata) and its
intensity statistics from a sample of chunks (`unetflow.intensity`), so that the jobs that read it do not.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile
import zarr

from unetflow.intensity import RunningStats, sample_stats
from unetflow.labels import LabelSurvey
from unetflow.provenance import RECORD_KEY, ContentDigest, digest, input_fingerprint, make_record, stage_code
from unetflow.settings import default, defaults
from unetflow.store import (
    TIFF_SUFFIXES,
    as_zyx,
    atomic_output,
    create_image,
    is_remote,
    is_zarr_source,
    ome_attributes,
    open_image,
    set_attrs,
    z_window,
)


def resolve_sources(source: str | Path) -> list[Path]:
    """The TIFF files a source names: one file, every TIFF in a folder, or a glob, in sorted order."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text))
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
    else:
        files = [Path(text)]
    files = [f for f in files if f.suffix.lower() in TIFF_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"{source}: no TIFF files found (expected a .tif file, a folder or a glob)")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such TIFF file")
    return files


def _page_shapes(files: Sequence[Path]) -> tuple[int, tuple[int, int], np.dtype]:
    """Number of slices, slice shape and dtype across all files, from metadata only."""
    count, shape, dtype = 0, None, None
    for f in files:
        try:
            with tifffile.TiffFile(f) as tif:
                series = tif.series[0]
                s = tuple(series.shape)
                d = np.dtype(series.dtype)
                axes = series.axes
                pages = len(series.pages)
        except Exception as exc:  # tifffile raises many types on a damaged header (IndexError among them)
            raise ValueError(f"{f}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
        if "S" in axes:
            raise ValueError(
                f"{f}: stored as color/multi-sample image (axes {axes}, shape {s}); "
                "expected grayscale slices (write with photometric='minisblack')"
            )
        if len(s) == 2:
            s = (1, *s)
        if len(s) != 3:
            raise ValueError(f"{f}: expected a 2D slice or a 3D (z, y, x) grayscale stack, got shape {s}")
        if s[0] == 0 or 0 in s[1:]:
            raise ValueError(f"{f}: holds no slices (shape {s})")
        if pages not in (1, s[0]) or (pages == 1 and s[0] > 1 and not _contiguous(f)):
            raise ValueError(
                f"{f}: truncated or damaged: its header announces {s[0]} slices but {pages} pages are readable"
            )
        if shape is None:
            shape, dtype = s[1:], d
        elif s[1:] != shape or d != dtype:
            raise ValueError(f"{f}: slices are {s[1:]} {d}, but earlier files have {shape} {dtype}")
        count += s[0]
    assert shape is not None and dtype is not None
    return count, shape, dtype


def source_shape(source: str | Path) -> tuple[int, int, int]:
    """(z, y, x) of a source from its metadata alone (no pixel is read): the shape ingest gives its store."""
    if is_zarr_source(source):
        return tuple(_zarr_volume(source).shape)  # type: ignore[return-value]
    depth, shape, _ = _page_shapes(resolve_sources(source))
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
        group.attrs["ome"] = ome_attributes("zyx", voxel, unit, name=Path(str(out)).name)
        group.attrs["unetflow"] = attrs
    return Path(out)


def _metadata_digest(node) -> str:
    """A remote store, named by its metadata (a URL cannot be listed): the node's and its arrays'."""
    parts = [node.metadata.to_dict()]
    if isinstance(node, zarr.Group):  # the arrays its multiscales name (a URL cannot be listed)
        ome = node.attrs.get("ome") or dict(node.attrs)
        paths = [d["path"] for ms in ome.get("multiscales", []) for d in ms["datasets"]]
        parts += [node[path].metadata.to_dict() for path in paths]
    return digest(parts)


def _contiguous(f: Path) -> bool:
    """Whether a one-page series of several slices is a contiguous block (tifffile's shaped files) that lies
    wholly inside the file."""
    with tifffile.TiffFile(f) as tif:
        series = tif.series[0]
        offset = series.dataoffset
        return offset is not None and offset + series.nbytes <= f.stat().st_size


def _check_page(f: Path, page, index: int) -> None:
    """Refuse a page whose data lie (partly) beyond the end of the file: tifffile would return zeros."""
    size = f.stat().st_size
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        if offset + count > size:
            raise ValueError(
                f"{f}: page {index} is truncated (its data end at byte {offset + count}, the file at {size})"
            )


def iter_slabs(files: Sequence[Path], depth: int, z_range: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive (<= depth, y, x) slabs of slices across all files, reading one page at a time.

    With `z_range = (start, stop)` only slices start..stop-1 (counted across all files) are read.
    """
    buffer: list[np.ndarray] = []
    z = 0
    for f in files:
        with tifffile.TiffFile(f) as tif:
            series = tif.series[0]
            for k in range(len(series.pages)):
                z += 1
                if z_range is not None and not z_range[0] <= z - 1 < z_range[1]:
                    continue
                try:
                    page = series.pages[k]
                except Exception as exc:  # tifffile's many errors on a damaged page
                    raise ValueError(f"{f}: page {k} is damaged ({type(exc).__name__}: {exc})") from exc
                _check_page(f, page, k)
                try:
                    buffer.append(page.asarray())
                except Exception as exc:
                    raise ValueError(f"{f}: page {k} is damaged ({type(exc).__name__}: {exc})") from exc
                if len(buffer) == depth:
                    yield np.stack(buffer)
                    buffer = []
    if buffer:
        yield np.stack(buffer)


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
    """Convert `source` into the OME-Zarr image `out` (axes zyx); returns `out`. Labels are checked against
    `label_convention` when it is declared, recognized when binary, refused otherwise (`LabelSurvey.convention`)."""
    if kind not in ("image", "labels"):
        raise ValueError(f"kind must be 'image' or 'labels', got {kind!r}")
    if is_zarr_source(source):
        if kind == "image":  # used in place
            return reference(source, out, voxel_size, unit, z_range)
        volume = _zarr_volume(source)  # labels are copied: they are checked as they stream
        files, (depth, *shape), dtype = [Path(str(source))], volume.shape, volume.dtype
    else:
        files = resolve_sources(source)
        depth, shape, dtype = _page_shapes(files)
    if z_range is not None:
        z_range = _checked_z_range(source, z_range, depth)
        depth = z_range[1] - z_range[0]
    if is_zarr_source(source):
        slabs = _zarr_slabs(volume, max(1, int(chunks[0])), z_range or (0, depth))
    else:
        slabs = iter_slabs(files, max(1, int(chunks[0])), z_range)
    full = (depth, *shape)
    survey = LabelSurvey()
    stats = RunningStats()
    content = ContentDigest()
    with atomic_output(out) as tmp:
        array = create_image(tmp, full, dtype, chunks, "zyx", voxel_size, unit)
        z = 0
        for slab in slabs:
            if np.issubdtype(slab.dtype, np.floating) and not np.isfinite(slab).all():
                bad = z + int(np.flatnonzero(~np.isfinite(slab).reshape(len(slab), -1).all(axis=1))[0])
                raise ValueError(
                    f"{source}: slice {bad} holds NaN or infinite values; they would spread through every "
                    "prediction, so they are refused (replace them in the source first)"
                )
            array[z : z + len(slab)] = slab
            content.update(slab)
            if kind == "labels":
                survey.add(slab)
            else:
                stats.add(slab)
            z += len(slab)
        settings = {
            "kind": kind,
            "chunks": [int(c) for c in chunks],
            "voxel_size": [float(v) for v in voxel_size],
            "unit": unit,
            "z_range": list(z_range) if z_range else None,
            "label_convention": label_convention,
        }
        attrs = {
            "kind": kind,
            "source": [str(f) for f in files],
            "z_range": settings["z_range"],
            RECORD_KEY: make_record({"data": content.hexdigest()}, settings, stage_code("ingest")),
        }
        if kind == "labels":
            attrs["label_convention"] = survey.convention(str(source), label_convention)
        else:
            attrs["intensity"] = stats.result().to_dict()
        set_attrs(tmp, attrs)
    return Path(out)
