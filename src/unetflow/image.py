"""Images as unetflow reads them: a lazily indexed array with its axes, voxel size and attributes, and the lazy
views the stages take of them (a 2D slice as a one-slice volume, a window of slices, t/c axes of length 1 dropped).
Nothing is read whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Image:
    """A lazily read array with its axes, physical voxel size and unetflow attributes."""

    array: Any  # zarr.Array or tifffile's zarr view: indexable, has shape and dtype
    axes: str
    voxel_size: tuple[float, ...]
    unit: str = "nanometer"
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(s for s, a in zip(self.shape, self.axes, strict=True) if a != "c")


def drop_singleton_axes(image: Image) -> Image:
    """An image with time or channel axes of length 1 (t, c of a `tczyx` OME-Zarr) viewed without them."""
    drop = [i for i, a in enumerate(image.axes) if a not in "zyx" and image.shape[i] == 1 and a != "c"]
    drop += [i for i, a in enumerate(image.axes) if a == "c" and image.shape[i] == 1 and len(image.axes) > 4]
    if not drop:
        return image
    axes = "".join(a for i, a in enumerate(image.axes) if i not in drop)
    return Image(_Taken(image.array, tuple(sorted(drop))), axes, image.voxel_size, image.unit, image.attrs, image.path)


class _Taken:
    """Index an array as if its axes `drop` (each of length 1) were not there."""

    def __init__(self, array: Any, drop: tuple[int, ...]):
        self._a, self._drop = array, drop
        self.shape = tuple(s for i, s in enumerate(array.shape) if i not in drop)
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(c for i, c in enumerate(getattr(array, "chunks", array.shape)) if i not in drop)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            key = (slice(None),) * self.ndim
        key = list(key) + [slice(None)] * (self.ndim - len(key))
        full = []
        for i in range(self.ndim + len(self._drop)):
            full.append(0 if i in self._drop else key.pop(0))
        return np.asarray(self._a[tuple(full)])


def as_zyx(image: Image) -> Image:
    """View a 2D (yx) image as a one-slice zyx volume; other layouts are returned unchanged."""
    if image.axes == "yx":
        return Image(_AddLeadingAxis(image.array), "zyx", (1.0, *image.voxel_size), image.unit, image.attrs, image.path)
    return image


class _AddLeadingAxis:
    """Index a 2D array as if it had a leading axis of length 1."""

    def __init__(self, array: Any):
        self._a = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        data = np.asarray(self._a[key[1:]])
        return data[None][key[0]] if isinstance(key[0], slice) else data


def z_window(image: Image, z_range: Sequence[int]) -> Image:
    """A lazy view of slices [start, stop) of a zyx image (read as a stack of its own)."""
    start, stop = (int(v) for v in z_range)
    if image.axes != "zyx" or not 0 <= start < stop <= image.shape[0]:
        raise ValueError(f"{image.path}: slices [{start}, {stop}) are not within its {image.shape[0]} slices")
    return Image(_ZWindow(image.array, start, stop), "zyx", image.voxel_size, image.unit, image.attrs, image.path)


class _ZWindow:
    """Index slices [start, stop) of a zyx array as if they were the whole array."""

    def __init__(self, array: Any, start: int, stop: int):
        self._a, self._start = array, start
        self.shape = (stop - start, *array.shape[1:])
        self.dtype = array.dtype
        self.ndim = 3
        self.chunks = getattr(array, "chunks", None)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        z = key[0]
        if isinstance(z, slice):
            first, last, step = z.indices(self.shape[0])
            z = slice(first + self._start, last + self._start, step)
        elif isinstance(z, int | np.integer):
            z = int(z) + self._start if z >= 0 else int(z) + self._start + self.shape[0]
        else:
            raise TypeError(f"unsupported index {z!r}")
        return np.asarray(self._a[(z, *key[1:])])
