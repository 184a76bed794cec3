"""TIFF stacks (one multi-page file, a folder or a glob of files) read page by page, their damage named.

Shapes come from the headers alone; pixels are read one page at a time, so memory holds a slab of slices, never
the whole stack. A truncated or damaged file fails naming the file and the page.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from unetflow.store import TIFF_SUFFIXES


def is_glob(source: str | Path) -> bool:
    return any(ch in str(source) for ch in "*?[")


def tiff_files(source: str | Path) -> list[str]:
    """The TIFF files (.tif, .tiff) a glob or a folder holds, in sorted order; possibly none."""
    text = str(source)
    found = glob.glob(text) if is_glob(text) else [str(p) for p in Path(text).iterdir()]
    return sorted(f for f in found if Path(f).suffix.lower() in TIFF_SUFFIXES)


def resolve_sources(source: str | Path) -> list[Path]:
    """The TIFF files a source names: one file, every TIFF in a folder, or a glob, in sorted order."""
    text = str(source)
    if is_glob(text):
        files = [Path(f) for f in tiff_files(text)]
        if not files:
            raise FileNotFoundError(f"{source}: the glob matches no .tif or .tiff file")
    elif Path(text).is_dir():
        files = [Path(f) for f in tiff_files(text)]
        if not files:
            raise FileNotFoundError(f"{source}: a folder without .tif or .tiff files")
    elif Path(text).suffix.lower() not in TIFF_SUFFIXES:
        raise FileNotFoundError(f"{source}: expected a .tif or .tiff file, a folder of them or a glob")
    else:
        files = [Path(text)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such TIFF file")
    return files


def page_shapes(files: Sequence[Path]) -> tuple[int, tuple[int, int], np.dtype]:
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
