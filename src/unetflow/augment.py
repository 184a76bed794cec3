"""Training augmentation as the paper describes it, applied identically to image, labels and weights.

One coordinate map per sample combines a flip, a rotation by any angle and a random elastic deformation
(displacements on a coarse 3x3 grid drawn from N(0, 10 px), interpolated bicubically to every pixel);
the image and weights are resampled linearly, labels by nearest neighbour. Gray values then get a random
contrast and brightness change. 3D tiles get flips along every axis, in-plane 90-degree rotations, an elastic
deformation with in-plane displacements on a coarse 3x3x3 grid (serial sections warp within their plane; the
coarse z axis is rarely sampled finely enough to deform) and the gray-value change. Pure functions of an explicit
random generator: reproducible per sample.

Optionally (`defect_rate`, off by default: not in the paper) each section (a 2D slice, every slice of a 2.5D stack
or of a 3D tile, independently) gets local section defects as serial-section EM has them: stain precipitate or dirt
(a blob of constant gray value) and faded, blurred patches where a membrane is barely visible. Labels and weights
stay as they were, so the network learns to continue membranes through defects from their context (as
Lee et al. 2017 and gunpowder's DefectAugment do) instead of merging the cells on either side.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from unetflow.settings import check, defaults

_D = defaults("augment")


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings (`train.augment` in the config schema, where their defaults and checks live)."""

    flip: bool = _D["flip"]
    rotate: bool = _D["rotate"]
    elastic_sigma: float = _D["elastic_sigma"]
    elastic_grid: int = _D["elastic_grid"]
    contrast: float = _D["contrast"]
    brightness: float = _D["brightness"]
    defect_rate: float = _D["defect_rate"]
    defect_size: float = _D["defect_size"]

    def __post_init__(self) -> None:
        check("augment", asdict(self), "train.augment")


@functools.lru_cache(maxsize=64)
def cubic_upsampling(size: int, grid: int) -> np.ndarray:
    """(size, grid) weights of cubic-spline interpolation from `grid` points to `size` pixels along one axis, as
    `ndimage.zoom(order=3, mode="nearest", grid_mode=True)` computes them."""
    columns = [ndimage.zoom(unit, size / grid, order=3, mode="nearest", grid_mode=True) for unit in np.eye(grid)]
    return np.stack(columns, axis=1)


def elastic_displacement(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float, grid: int, components: int = 2
) -> np.ndarray:
    """(components, *shape) displacement field: a Gaussian field on a coarse grid (grid points per axis),
    interpolated (bi/tri)cubically to full size. Spline interpolation is separable, so the field is the coarse
    grid multiplied by one small weight matrix per axis: the same numbers as `ndimage.zoom`, several times faster."""
    coarse = rng.normal(0.0, sigma, (components, *(grid,) * len(shape)))
    if len(shape) == 2:  # one batched matrix product per component: the common case, kept fast
        return cubic_upsampling(shape[0], grid) @ coarse @ cubic_upsampling(shape[1], grid).T
    field = coarse
    for size in shape:  # each contraction consumes the first coarse axis and appends the full-size one
        field = np.tensordot(field, cubic_upsampling(size, grid), axes=([1], [1]))
    return field


def sample_coordinates(rng: np.random.Generator, shape: tuple[int, int], p: AugmentParams) -> np.ndarray | None:
    """Source coordinates (2, H, W) for one random spatial transform, or None for the identity."""
    if not (p.flip or p.rotate or p.elastic_sigma > 0):
        return None
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.meshgrid(np.arange(h, dtype=float) - cy, np.arange(w, dtype=float) - cx, indexing="ij")
    if p.flip and rng.random() < 0.5:
        xx = -xx
    if p.rotate:
        t = rng.uniform(0, 2 * np.pi)
        yy, xx = np.cos(t) * yy - np.sin(t) * xx, np.sin(t) * yy + np.cos(t) * xx
    coords = np.stack([yy + cy, xx + cx])
    if p.elastic_sigma > 0:
        coords += elastic_displacement(rng, shape, p.elastic_sigma, p.elastic_grid)
    return coords


def resample(
    coords: np.ndarray, image: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the triple at `coords` (one source coordinate per axis and output pixel): image and weights
    (bi/tri)linearly, labels by nearest neighbour, mirrored at the borders (the edge pixel not repeated).
    An image with a leading channel axis (a 2.5D slice stack) has every channel sampled alike.

    torch's grid_sample does it in one pass over all float channels, several times faster than
    `ndimage.map_coordinates` per array (float32 coordinates: within 2e-4 of it)."""
    spatial = labels.shape
    # grid_sample wants coordinates in [-1, 1] (x first); align_corners maps -1 and 1 to the edge pixel centres,
    # where "reflection" then mirrors.
    scale = [2.0 / max(n - 1, 1) for n in spatial]
    grid = np.stack([c * f - 1.0 for c, f in zip(coords, scale, strict=True)][::-1], axis=-1)
    grid_t = torch.from_numpy(grid.astype(np.float32))[None]
    floats = np.concatenate([image.reshape(-1, *spatial), weights[None]]).astype(np.float32, copy=False)
    sample = functools.partial(F.grid_sample, grid=grid_t, padding_mode="reflection", align_corners=True)
    with torch.no_grad():
        sampled = sample(torch.from_numpy(floats)[None], mode="bilinear")[0].numpy()
        nearest = sample(torch.from_numpy(labels.astype(np.float32))[None, None], mode="nearest")[0, 0].numpy()
    return sampled[:-1].reshape(image.shape), nearest.astype(labels.dtype), sampled[-1]


def gray_values(rng: np.random.Generator, image: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Random contrast (gain) and brightness (shift) change of a normalized image."""
    if p.contrast <= 0 and p.brightness <= 0:
        return image
    gain = rng.uniform(1 - p.contrast, 1 + p.contrast)
    shift = rng.uniform(-p.brightness, p.brightness)
    return (image * gain + shift).astype(np.float32)


def defect_mask(
    rng: np.random.Generator, shape: tuple[int, int], size: float
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A random ellipse (semi-axes size/4..size, any orientation) with a soft edge, as (bounding box, 0..1 mask)."""
    a, b = rng.uniform(size / 4, size, 2)
    t = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    r = int(np.ceil(max(a, b)))
    box = tuple(slice(max(int(c) - r, 0), min(int(c) + r + 1, n)) for c, n in zip((cy, cx), shape, strict=True))
    yy, xx = np.meshgrid(
        np.arange(box[0].start, box[0].stop) - cy, np.arange(box[1].start, box[1].stop) - cx, indexing="ij"
    )
    u, v = np.cos(t) * yy + np.sin(t) * xx, -np.sin(t) * yy + np.cos(t) * xx
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return box, np.clip((1.0 - radius) / 0.3, 0.0, 1.0).astype(np.float32)


def section_defects(rng: np.random.Generator, section: np.ndarray, size: float) -> np.ndarray:
    """One to three local defects in one 2D section: blobs of a constant gray value drawn from the section's range,
    or patches faded towards the section mean and blurred."""
    out = section.astype(np.float32, copy=True)
    lo, hi, mean = float(out.min()), float(out.max()), float(out.mean())
    for _ in range(int(rng.integers(1, 4))):
        box, mask = defect_mask(rng, out.shape, size)
        patch = out[box]
        if rng.random() < 0.5:
            damaged = np.full_like(patch, rng.uniform(lo, hi))
        else:
            blurred = ndimage.gaussian_filter(patch, rng.uniform(1.0, 3.0), mode="nearest")
            damaged = mean + rng.uniform(0.1, 0.5) * (blurred - mean)
        out[box] = mask * damaged + (1 - mask) * patch
    return out


def defects(rng: np.random.Generator, image: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Section defects in each trailing 2D section of `image`, each with probability `defect_rate`."""
    if p.defect_rate <= 0:
        return image
    sections = image.reshape(-1, *image.shape[-2:])
    hit = rng.random(len(sections)) < p.defect_rate
    if not hit.any():
        return image
    out = sections.astype(np.float32, copy=True)
    for k in np.flatnonzero(hit):
        out[k] = section_defects(rng, out[k], p.defect_size)
    return out.reshape(image.shape)


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    p: AugmentParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random augmentation of a 2D (image, labels, weights) triple of equal shape (the image may have a
    leading channel axis)."""
    coords = sample_coordinates(rng, labels.shape, p)
    if coords is not None:
        image, labels, weights = resample(coords, image, labels, weights)
    return defects(rng, gray_values(rng, image, p), p), labels, weights


def augment_volume(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    p: AugmentParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random augmentation of a 3D (z, y, x) triple: axis flips, in-plane quarter turns, in-plane elastic
    deformation, gray values, section defects."""
    arrays = [image, labels, weights]
    if p.flip:
        for axis in range(3):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
    if p.rotate and image.shape[1] == image.shape[2]:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k, axes=(1, 2)) for a in arrays]
    image, labels, weights = (np.ascontiguousarray(a) for a in arrays)
    if p.elastic_sigma > 0:
        coords = np.indices(image.shape, dtype=float)
        coords[1:] += elastic_displacement(rng, image.shape, p.elastic_sigma, p.elastic_grid, components=2)
        image, labels, weights = resample(coords, image, labels, weights)
    return defects(rng, gray_values(rng, image, p), p), labels, weights
