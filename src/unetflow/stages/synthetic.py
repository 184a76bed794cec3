"""A deterministic EM-like dataset the project makes itself, so the default pipeline needs no download.

Cells are a 3D Voronoi tessellation in warped space (curved, touching cells that continue across slices),
separated by dark membranes of varying width; cell interiors get their own gray level, texture,
organelle-like blobs and vesicles; the whole slice is blurred, unevenly lit and noisy.
Labels follow the ISBI convention: 255 = cell, 0 = membrane.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree

from unetflow.store import atomic_output


@dataclass(frozen=True)
class SynthParams:
    """Appearance of the synthetic EM. Distances in pixels; z_spacing is the section thickness in pixels."""

    cell_diameter: float = 64.0
    z_spacing: float = 8.0
    membrane_halfwidth: tuple[float, float] = (0.9, 2.2)
    warp: float = 5.0
    noise: float = 18.0
    blur: float = 1.0
    illumination: float = 0.18
    organelles_per_cell: float = 1.0
    vesicles_per_cell: float = 3.0


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], scale: tuple[float, ...]) -> np.ndarray:
    """Smooth random field in [-1, 1] varying on `scale` pixels per axis: coarse noise, smoothed, upsampled."""
    coarse = tuple(max(4, int(np.ceil(4 * s / c)) + 4) for s, c in zip(shape, scale, strict=True))
    field = ndimage.gaussian_filter(rng.normal(0, 1, coarse), 1.5, mode="wrap")
    field /= 2.5 * field.std() + 1e-12
    # Map every output pixel to coarse coordinates (4 coarse pixels per `scale`), interpolate linearly.
    axes = [np.arange(s) * 4.0 / max(c, 1e-6) + 1.0 for s, c in zip(shape, scale, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij", sparse=True)
    coords = np.broadcast_arrays(*grid)
    out = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
    return np.clip(out, -1.0, 1.0)


def _tessellation(
    rng: np.random.Generator, shape: tuple[int, int, int], p: SynthParams
) -> tuple[np.ndarray, np.ndarray]:
    """Cell id per voxel and the distance of each voxel to the nearest cell border (pixels)."""
    z, y, x = shape
    extent = np.array([z * p.z_spacing, y, x], dtype=float)
    margin = p.cell_diameter
    box = extent + 2 * margin
    n_cells = max(2, int(np.prod(box) / (0.52 * p.cell_diameter**3)))
    seeds = rng.uniform(0, 1, (n_cells, 3)) * box - margin
    tree = cKDTree(seeds)
    scale = (p.cell_diameter / p.z_spacing / 2, p.cell_diameter / 2, p.cell_diameter / 2)
    warp_y = p.warp * _smooth_field(rng, shape, scale)
    warp_x = p.warp * _smooth_field(rng, shape, scale)
    yy, xx = np.meshgrid(np.arange(y, dtype=float), np.arange(x, dtype=float), indexing="ij")
    ids = np.empty(shape, np.int32)
    border = np.empty(shape, np.float32)
    for k in range(z):
        pts = np.stack(
            [np.full(y * x, (k + 0.5) * p.z_spacing), (yy + warp_y[k]).ravel(), (xx + warp_x[k]).ravel()],
            axis=1,
        )
        dist, idx = tree.query(pts, k=2, workers=-1)
        ids[k] = idx[:, 0].reshape(y, x)
        border[k] = ((dist[:, 1] - dist[:, 0]) / 2).reshape(y, x)
    return ids, border


def _blobs(rng: np.random.Generator, inside: np.ndarray, count: int, radius: tuple[float, float]) -> np.ndarray:
    """Mask of `count` random ellipses whose centers lie at least their radius inside cells."""
    out = np.zeros(inside.shape, bool)
    depth = ndimage.distance_transform_edt(inside)
    h, w = inside.shape
    for _ in range(count):
        r = rng.uniform(*radius)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        if depth[cy, cx] < r + 3:
            continue
        ry, rx = r * rng.uniform(0.5, 1.0), r
        t = rng.uniform(0, np.pi)
        y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
        x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
        gy, gx = np.mgrid[y0:y1, x0:x1]
        dy, dx = gy - cy, gx - cx
        u = dx * np.cos(t) + dy * np.sin(t)
        v = -dx * np.sin(t) + dy * np.cos(t)
        out[y0:y1, x0:x1] |= (u / rx) ** 2 + (v / ry) ** 2 <= 1
    return out


def synthesize(
    shape: tuple[int, int, int], seed: int, params: SynthParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like uint8 stack and its uint8 labels (255 cell, 0 membrane), fully determined by `seed`."""
    p = params or SynthParams()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"synthetic shape must be (z, y, x) with positive sizes, got {shape}")
    rng = np.random.default_rng(seed)
    ids, border = _tessellation(rng, shape, p)
    lo, hi = p.membrane_halfwidth
    scale = (p.cell_diameter / p.z_spacing, p.cell_diameter, p.cell_diameter)
    halfwidth = lo + (hi - lo) * (_smooth_field(rng, shape, scale) + 1) / 2
    membrane = border < halfwidth
    labels = np.where(membrane, 0, 255).astype(np.uint8)

    cell_gray = rng.uniform(150, 205, ids.max() + 1)
    image = np.empty(shape, np.float32)
    area_per_cell = (np.pi / 4) * p.cell_diameter**2
    for k in range(shape[0]):
        inside = ~membrane[k]
        texture = ndimage.gaussian_filter(rng.normal(0, 1, inside.shape), 2.0)
        img = cell_gray[ids[k]] + 12.0 * texture / (texture.std() + 1e-6)
        n_cells = inside.size / area_per_cell
        organelles = _blobs(rng, inside, int(rng.poisson(p.organelles_per_cell * n_cells)), (4, 9))
        rim = organelles & ~ndimage.binary_erosion(organelles, iterations=2)
        img[organelles] = 120 + 10 * texture[organelles]
        img[rim] = 85
        vesicles = _blobs(rng, inside, int(rng.poisson(p.vesicles_per_cell * n_cells)), (1.2, 2.2))
        img[vesicles] = 105
        img[membrane[k]] = rng.uniform(35, 65) + 8 * texture[membrane[k]]
        image[k] = ndimage.gaussian_filter(img, p.blur)
    light_scale = (float(shape[0]), max(shape[1:]) / 2, max(shape[1:]) / 2)
    light = 1.0 + p.illumination * _smooth_field(rng, shape, light_scale)
    image = image * light + rng.normal(0, p.noise, shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


STACKS = ("train", "validation", "volume")


def write_dataset(
    out_dir: str | Path,
    shapes: dict[str, tuple[int, int, int]],
    seed: int,
    params: SynthParams | None = None,
) -> list[Path]:
    """Write `{name}-images.tif` (and `{name}-labels.tif` except for 'volume') per stack; distinct seeds per stack."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for offset, name in enumerate(STACKS):
        if name not in shapes:
            continue
        image, labels = synthesize(tuple(shapes[name]), seed * 1000 + offset, params)
        files = [(out_dir / f"{name}-images.tif", image)]
        if name != "volume":
            files.append((out_dir / f"{name}-labels.tif", labels))
        for path, data in files:
            with atomic_output(path) as tmp:
                tifffile.imwrite(tmp, data, photometric="minisblack", metadata={"axes": "ZYX"})
            written.append(path)
    return written
