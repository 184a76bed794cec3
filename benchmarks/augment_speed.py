"""Augmentation speed: one training sample's spatial augmentation (flip, rotation, elastic deformation, resampling
of image, labels and weights) with unetflow's implementation against the straightforward scipy one (ndimage.zoom
for the displacement field, ndimage.map_coordinates per array), side by side on the same random draws.

Run by hand: python benchmarks/augment_speed.py [--size 380] [--channels 1 3] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from unetflow.augment import AugmentParams, augment, gray_values, sample_coordinates


def scipy_augment(rng, image, labels, weights, p: AugmentParams):
    """The reference: the same transform from the same generator; displacement field and resampling by scipy."""
    h, w = labels.shape
    coords = sample_coordinates(rng, (h, w), replace(p, elastic_sigma=0.0))  # flip and rotation only
    coarse = rng.normal(0.0, p.elastic_sigma, (2, p.elastic_grid, p.elastic_grid))
    zoom = (h / p.elastic_grid, w / p.elastic_grid)
    coords += np.stack([ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True) for c in coarse])
    channels = image.reshape(-1, h, w)
    out = np.stack([ndimage.map_coordinates(c, coords, order=1, mode="mirror") for c in channels])
    out = out.reshape(image.shape).astype(np.float32)
    lab = ndimage.map_coordinates(labels, coords, order=0, mode="mirror")
    wgt = ndimage.map_coordinates(weights, coords, order=1, mode="mirror").astype(np.float32)
    return gray_values(rng, out, p), lab, wgt


def timed(fn, repeats: int) -> tuple[float, tuple]:
    result = fn(0)
    start = time.perf_counter()
    for i in range(repeats):
        result = fn(i)
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=380, help="input tile side (380: 196-pixel output, 5 levels)")
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3], help="3: a 2.5D stack, slice_context 1")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    data = np.random.default_rng(0)
    p = AugmentParams()
    print(f"tile {args.size}², one thread")
    print(f"{'channels':>8} {'scipy ms':>9} {'unetflow ms':>12} {'speed-up':>9} {'max diff':>9}")
    for channels in args.channels:
        shape = (channels, args.size, args.size) if channels > 1 else (args.size, args.size)
        image = data.normal(size=shape).astype(np.float32)
        labels = (data.random((args.size, args.size)) > 0.5).astype(np.uint8)
        weights = data.random((args.size, args.size)).astype(np.float32)
        ours, a = timed(lambda i: augment(np.random.default_rng(i), image, labels, weights, p), args.repeats)  # noqa: B023
        ref, b = timed(lambda i: scipy_augment(np.random.default_rng(i), image, labels, weights, p), args.repeats)  # noqa: B023
        diff = max(float(np.abs(a[0] - b[0]).max()), float(np.abs(a[2] - b[2]).max()))
        print(f"{channels:>8} {ref * 1e3:>9.1f} {ours * 1e3:>12.1f} {ref / ours:>8.1f}x {diff:>9.1e}")


if __name__ == "__main__":
    main()
