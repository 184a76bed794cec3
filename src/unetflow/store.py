"""OME-Zarr 0.5 (zarr v3) reading and writing, lazy TIFF access, and outputs that appear only when complete.

Every stage writes a multiscale image group with one full-resolution array at path "0"; axes are `zyx`, or
`czyx` with a leading channel axis. unetflow's own facts about a store (label convention, class names, ...)
live next to the OME metadata under the group attribute "unetflow".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from unetflow.image import Image, as_zyx, drop_singleton_axes, z_window
from unetflow.pyramid import level_shape, levels_of

OME_VERSION = "0.5"
TIFF_SUFFIXES = (".tif", ".tiff")
# Zstandard level of every array written: level 1 compresses a 64 MB file of float16 probabilities 3.3x faster
# than zarr's default (3) for files 1% larger (0.863 against 0.854 of the raw size; docs/benchmarks.md), and the
# compression runs beside every prediction.
ZSTD_LEVEL = 1


def _axis_entry(name: str, unit: str) -> dict[str, str]:
    if name == "c":
        return {"name": "c", "type": "channel"}
    return {"name": name, "type": "space", "unit": unit}


def ome_attributes(
    axes: str, voxel_size: Sequence[float], unit: str = "nanometer", name: str = "image", levels: int = 0
) -> dict[str, Any]:
    """The `ome` group attribute of an NGFF 0.5 multiscale image: full resolution at path "0", and `levels` more
    that halve y and x each (`unetflow.pyramid`)."""
    spatial = [a for a in axes if a != "c"]
    if len(voxel_size) != len(spatial):
        raise ValueError(f"voxel_size {list(voxel_size)} must have one entry per axis of {spatial}")
    scale, it = [], iter(voxel_size)
    for a in axes:
        scale.append(1.0 if a == "c" else float(next(it)))
    datasets = []
    for k in range(levels + 1):
        factors = [1.0] * (len(axes) - 2) + [2.0**k] * 2
        level = [s * f for s, f in zip(scale, factors, strict=True)]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": level}]})
    return {
        "version": OME_VERSION,
        "multiscales": [{"name": name, "axes": [_axis_entry(a, unit) for a in axes], "datasets": datasets}],
    }


CLASS_COLORS = ("FF0000", "00FF00", "0000FF", "FFFF00", "FF00FF", "00FFFF")  # membrane red, cell green, ...


def label_metadata(properties: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """NGFF 0.5 `image-label` metadata (with `properties` of label values, if any): viewers such as napari and
    neuroglancer then show the store as labels (an id per cell), not as intensities."""
    entry: dict[str, Any] = {"version": OME_VERSION}
    if properties:
        entry["properties"] = [dict(p) for p in properties]
    return {"image-label": entry}


def channel_metadata(names: Sequence[str], dtype: Any) -> dict[str, Any]:
    """NGFF `omero` metadata naming each channel (the classes of a probability image) with a colour and the display
    window of its values: 0..1, or 0..255 where probabilities are stored as uint8."""
    top = 255.0 if np.dtype(dtype) == np.uint8 else 1.0
    window = {"min": 0.0, "max": top, "start": 0.0, "end": top}
    channels = [
        {"label": str(name), "color": CLASS_COLORS[i % len(CLASS_COLORS)], "window": dict(window), "active": True}
        for i, name in enumerate(names)
    ]
    return {"omero": {"channels": channels}}


def set_ome(path: str | Path, extra: dict[str, Any]) -> None:
    """Merge `extra` (such as `label_metadata`) into the OME metadata of the image at `path`."""
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["ome"] = {**group.attrs["ome"], **extra}


def create_image(
    path: str | Path,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    axes: str = "zyx",
    voxel_size: Sequence[float] | None = None,
    unit: str = "nanometer",
    attrs: dict[str, Any] | None = None,
    fill_value: Any = 0,
    shards: Sequence[int] | None = None,
    levels: int = 0,
    ome_extra: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create an empty OME-Zarr image at `path` (overwriting) and return its writable full-resolution array.

    With `shards` (whole multiples of `chunks`), chunks are stored in zarr v3 shards of that shape, one file
    each: a writer must then write whole shards, one writer per shard. With `levels`, arrays "1".."levels" halve
    y and x each, in files that halve likewise (so that the writer of a file of level 0 writes its share of every
    level: `write_levels`). `ome_extra` joins the OME metadata (`label_metadata`, `channel_metadata`)."""
    if len(axes) != len(shape) or len(chunks) != len(shape):
        raise ValueError(f"axes {axes!r}, shape {tuple(shape)} and chunks {tuple(chunks)} disagree")
    spatial = sum(a != "c" for a in axes)
    voxel_size = tuple(voxel_size) if voxel_size is not None else (1.0,) * spatial
    if shards is not None:
        if any(int(f) % int(c) for f, c in zip(shards, chunks, strict=True)):
            raise ValueError(f"shards {tuple(shards)} must be whole multiples of chunks {tuple(chunks)}")
        if tuple(int(f) for f in shards) == tuple(int(c) for c in chunks):
            shards = None  # one chunk per file: plain chunks are the same layout without a shard index
    if shards is None:
        chunks = tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    ome = ome_attributes(axes, voxel_size, unit, name=_final_name(path), levels=levels)
    group.attrs["ome"] = {**ome, **(ome_extra or {})}
    group.attrs["unetflow"] = attrs or {}
    files = tuple(int(f) for f in shards) if shards is not None else tuple(int(c) for c in chunks)
    arrays = []
    for k in range(levels + 1):
        level_files = (*files[:-2], *(max(1, f // 2**k) for f in files[-2:]))
        level_chunks = tuple(min(int(c), f) for c, f in zip(chunks, level_files, strict=True))
        arrays.append(
            group.create_array(
                str(k),
                shape=level_shape(shape, k),
                chunks=level_chunks,
                shards=level_files if shards is not None and level_files != level_chunks else None,
                dtype=dtype,
                fill_value=fill_value,
                dimension_names=list(axes),
                # Every chunk is written, even one that equals the fill value, so that a complete store holds all
                # of its chunks and a missing one is detected (`open_image`) instead of read as fill value.
                config={"write_empty_chunks": True},
                compressors=ZstdCodec(level=ZSTD_LEVEL),
            )
        )
    return arrays[0]


def _final_name(path: str | Path) -> str:
    """The name an output will have once complete (viewers show it as the layer's name), not its temporary one."""
    name = Path(path).name
    for mark in UNFINISHED_MARKS:
        name = name.split(mark)[0]
    return name


def levels_in(path: str | Path) -> list[zarr.Array]:
    """The writable arrays of every level of an image being built, full resolution first. Every chunk is written,
    even one equal to the fill value (zarr does not store that setting, so every writer opens the arrays this way)."""
    group = zarr.open_group(str(path), mode="r+")
    paths = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    return [group[p].with_config({"write_empty_chunks": True}) for p in paths]


def write_levels(arrays: Sequence[zarr.Array], region: tuple[slice, ...], data: np.ndarray, labels: bool) -> None:
    """Write `data` at `region` of full resolution and its share of every further level (`unetflow.pyramid`);
    the region starts at a multiple of 2^levels in y and x (a whole file)."""
    arrays[0][region] = data
    for k, level in enumerate(levels_of(data, len(arrays) - 1, labels), start=1):
        *rest, y, x = region
        arrays[k][(*rest, slice(y.start // 2**k, -(-y.stop // 2**k)), slice(x.start // 2**k, -(-x.stop // 2**k)))] = (
            level
        )


def _open_tiff(path: Path) -> Image:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes.lower().replace("i", "z").replace("q", "z")
    store = tifffile.imread(path, aszarr=True)
    array = zarr.open(store, mode="r")
    if isinstance(array, zarr.Group):  # pyramidal TIFF: take full resolution
        array = array["0"]
    if array.ndim == 2:
        axes = "yx"
    if set(axes) - set("czyx") or len(axes) != array.ndim:
        axes = "zyx"[-array.ndim :] if array.ndim <= 3 else axes
    return Image(array, axes, (1.0,) * sum(a != "c" for a in axes), attrs={}, path=path)


UNFINISHED_MARKS = (".partial", ".new-", ".stale-")  # names of outputs still being built (see atomic_output)


class MissingChunkError(ValueError):
    """A chunk absent from a store that was written completely."""


class _CompleteStore(LocalStore):
    """A store unetflow finished writing, read strictly: every chunk was written (`write_empty_chunks`), so a
    chunk that is not there is damage, reported with the store and the chunk's key, never read as fill value."""

    async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
        value = await super().get(key, prototype, byte_range)
        if value is None and "/c/" in f"/{key}":  # a chunk key of zarr v3's default encoding, not a metadata probe
            raise MissingChunkError(f"{self.root}: chunk {key} is missing from a store that was written completely")
        return value


class _NamedReads:
    """A zarr array whose read errors (a corrupt chunk fails deep in a codec) name the store and the chunk keys of
    the region that was read."""

    def __init__(self, array: zarr.Array, path: Path) -> None:
        self._array, self._path = array, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self._array[key]
        except (MissingChunkError, IndexError, TypeError):
            raise
        except Exception as exc:
            raise ValueError(
                f"{self._path}: cannot read chunk {self._chunk_keys(key)} ({type(exc).__name__}: {exc})"
            ) from exc

    def _chunk_keys(self, key: Any) -> str:
        """The chunk keys (as stored under the group, `0/c/...`) that a read of `key` touches, the first few."""
        key = key if isinstance(key, tuple) else (key,)
        key = (
            key + (slice(None),) * (self._array.ndim - len(key))
            if Ellipsis not in key
            else (slice(None),) * self._array.ndim
        )
        ranges = []
        for k, size, chunk in zip(key, self._array.shape, self._array.chunks, strict=True):
            if isinstance(k, slice):
                start, stop, _ = k.indices(size)
                ranges.append(range(start // chunk, max(start, stop - 1) // chunk + 1))
            else:
                ranges.append(range(int(k) % size // chunk, int(k) % size // chunk + 1))
        keys = ["0/c/" + "/".join(map(str, idx)) for idx in itertools.islice(itertools.product(*ranges), 4)]
        more = np.prod([len(r) for r in ranges]) > len(keys)
        return ", ".join(keys) + (" ..." if more else "")


def _unetflow_attributes(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "zarr.json").read_text()).get("attributes", {}).get("unetflow", {}) or {}
    except (OSError, ValueError):
        return {}


def is_remote(path: str | Path) -> bool:
    """A URL (https://, s3://, ...) that zarr reads through fsspec, not a local path."""
    return "://" in str(path)


def is_zarr_source(path: str | Path) -> bool:
    """Whether a dataset's source is a zarr store (used in place) rather than TIFF (ingested): a name ending in
    `.zarr` (OME-Zarr or plain zarr, local or a URL)."""
    return str(path).rstrip("/").lower().endswith(".zarr")


def _open_remote(url: str) -> Image:
    try:
        node = zarr.open(store=url, mode="r")
    except Exception as exc:
        raise ValueError(f"{url}: cannot open as a zarr store ({type(exc).__name__}: {exc})") from exc
    return _image_of(node, url)


def open_image(path: str | Path) -> Image:
    """Open an OME-Zarr image (0.4 or 0.5), a plain zarr array or a TIFF, lazily (nothing is read whole); a URL
    where zarr reads it.

    An output still being built (a `.partial` name, or a store of unetflow's with a provenance record but no
    `complete` mark) is refused; a complete one of unetflow's is read strictly (see `_CompleteStore`). A
    reference store (`reference`, made by `unetflow ingest --in-place`) reads the store it names, in place."""
    if is_remote(path):
        return _open_remote(str(path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if any(mark in path.name for mark in UNFINISHED_MARKS):
        raise ValueError(f"{path}: an unfinished output (still being written, or left by a killed job)")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _open_tiff(path)
    ours = _unetflow_attributes(path)
    if ours.get("provenance") and ours.get("complete") is not True:
        raise ValueError(f"{path}: an unfinished output (no 'complete' mark); re-run the stage that writes it")
    if ours.get("reference"):
        return _referenced(path, ours)
    try:
        store = _CompleteStore(path, read_only=True) if ours.get("complete") is True else str(path)
        node = zarr.open(store=store, mode="r")
    except Exception as exc:  # zarr raises several types for "not a store"
        raise ValueError(f"{path}: not a zarr store or TIFF file ({exc})") from exc
    return _image_of(node, path)


def _image_of(node: Any, path: str | Path) -> Image:
    """The Image of an opened zarr node: a plain array, or the full resolution of an OME-Zarr 0.4/0.5 group."""
    if isinstance(node, zarr.Array):
        axes = "zyx"[-node.ndim :] if node.ndim <= 3 else "czyx"
        return Image(node, axes, (1.0,) * sum(a != "c" for a in axes), path=Path(str(path)))
    attrs = node.attrs
    ome = attrs.get("ome") or ({"multiscales": attrs["multiscales"]} if "multiscales" in attrs else None)
    if not ome or not ome.get("multiscales"):
        raise ValueError(f"{path}: zarr group without OME-Zarr 'multiscales' metadata")
    ms = ome["multiscales"][0]
    named = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    dataset = ms["datasets"][0]
    try:
        array = node[dataset["path"]]
    except KeyError as exc:
        raise ValueError(f"{path}: its multiscale names the array {dataset['path']!r}, which is not there") from exc
    if not named:  # OME-Zarr before 0.3 named no axes
        named = [{"name": a} for a in "tczyx"[-array.ndim :]]
    axes = "".join(a["name"] for a in named)
    scale = next(
        (t["scale"] for t in dataset.get("coordinateTransformations", []) if t["type"] == "scale"),
        [1.0] * len(axes),
    )
    voxel = tuple(float(s) for s, a in zip(scale, axes, strict=True) if a in "zyx")
    unit = next((a.get("unit", "nanometer") for a in named if a["name"] in "zyx"), "nanometer")
    array = _NamedReads(array, Path(str(path)))
    image = Image(array, axes, voxel, unit, dict(attrs.get("unetflow", {})), Path(str(path)))
    return drop_singleton_axes(image)


def _referenced(path: Path, ours: dict[str, Any]) -> Image:
    """A reference store: unetflow's record (fingerprint, intensity statistics) of a store read in place."""
    if ours.get("complete") is not True:
        raise ValueError(f"{path}: an unfinished output (no 'complete' mark); re-run the stage that writes it")
    target = ours["reference"]
    source = open_image(target)
    if source.axes != "zyx" and source.axes != "yx":
        raise ValueError(f"{target}: expected a zyx volume (or a yx slice), got axes {source.axes!r}")
    if ours.get("z_range"):
        source = z_window(as_zyx(source), ours["z_range"])
    attrs = {**source.attrs, **ours}
    voxel = tuple(float(v) for v in ours.get("voxel_size", source.voxel_size))[-len(source.voxel_size) :]
    return Image(source.array, source.axes, voxel, ours.get("unit", source.unit), attrs, path)


def partial_path(path: str | Path) -> Path:
    """Where an output is built before it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def remove(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to build an output in; move it to `path` only when the block exits cleanly.

    A crash removes `<path>.partial` and never leaves something at `path` that looks done.
    """
    path = Path(path)
    tmp = partial_path(path)
    remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if tmp.is_dir():
        if (tmp / "zarr.json").exists():
            set_attrs(tmp, {"complete": True})
        remove(path)
        tmp.rename(path)
    else:  # a file replaces its old version in one step
        tmp.replace(path)


def sidecar(path: str | Path) -> Path:
    """Where the provenance record of a CSV output lives."""
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def write_table(frame: Any, out: str | Path, record: dict) -> Path:
    """Write a CSV atomically, its provenance record first: a CSV present always has its record."""
    with atomic_output(sidecar(out)) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    with atomic_output(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(out)


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold the lock `<path>.lock` while the block runs; another holder makes this fail at once, naming it.

    A POSIX advisory lock (fcntl.flock): it dies with the process that holds it, so a killed job never leaves a
    stale lock behind. (On network file systems without flock support it locks per machine only.)"""
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"{path}: another job is writing it now (it holds {lock}); wait for it to end") from exc
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_attrs(path: str | Path, attrs: dict[str, Any]) -> None:
    """Merge `attrs` into the unetflow attributes of the OME-Zarr image at `path`."""
    group = zarr.open_group(str(path), mode="r+")
    merged = dict(group.attrs.get("unetflow", {}))
    merged.update(attrs)
    group.attrs["unetflow"] = merged


def encode_probabilities(probs: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as stored: floats as they are, uint8 scaled to 0..255."""
    if dtype == "uint8":
        return np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8)
    return probs.astype(dtype)


def decode_probabilities(stored: np.ndarray) -> np.ndarray:
    """Stored probabilities back to float32 in [0, 1]."""
    stored = np.asarray(stored)
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255
    return stored.astype(np.float32)
