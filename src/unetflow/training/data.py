"""Labelled data for training in memory, and the random tiles drawn from it.

Tiles are sampled at random positions (mirror-extended at slice borders), augmented (in DataLoader workers)
and cropped to the model's valid output. Sample i is a deterministic function of (seed, i), so a resumed run
replays the same tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from unetflow.augment import AugmentParams, augment, augment_volume
from unetflow.blocks import mirror_indices
from unetflow.intensity import image_stats
from unetflow.labels import cell_mask, recorded_convention
from unetflow.store import open_image


@dataclass
class Slices:
    """Labelled training data in memory: normalized images, cell masks (0/1) and weight maps; 2D slices
    for 2D models (images as (2k + 1, y, x) stacks of each slice and its neighbours for 2.5D input with
    slice context k), whole 3D volumes for 3D models."""

    images: list[np.ndarray]
    targets: list[np.ndarray]
    weights: list[np.ndarray]


Ranges = list[tuple[int, int]]


def _stack_ranges(ranges: list[Ranges] | None, k: int, depth: int) -> Ranges:
    """Slice ranges [start, stop) of dataset k to use, each read as a stack of its own (all: one range)."""
    chosen = ranges[k] if ranges is not None else [(0, depth)]
    for start, stop in chosen:
        if not 0 <= start < stop <= depth:
            raise ValueError(f"slice range [{start}, {stop}) outside a stack of {depth} slices")
    return chosen


def load_slices(
    image_paths: list[str],
    label_paths: list[str],
    weight_paths: list[str] | None,
    dims: int = 2,
    slice_context: int = 0,
    ranges: list[Ranges] | None = None,
) -> Slices:
    """Read labelled stacks (as slices for dims=2, volumes for dims=3); weights default to 1 where not given.

    `ranges` (one list per dataset; default: each whole) picks slice ranges [start, stop), each treated as a stack
    of its own (a cross-validation fold trains on what is left around its held-out slices). With `slice_context` k
    each slice comes with k neighbours on either side, mirrored at its stack's ends (as inference does), so no
    slice outside a stack is ever read."""
    out = Slices([], [], [])
    for k, (ip, lp) in enumerate(zip(image_paths, label_paths, strict=True)):
        image, labels = open_image(ip), open_image(lp)
        if image.shape != labels.shape:
            raise ValueError(f"{ip} has shape {image.shape} but {lp} has {labels.shape}")
        convention = recorded_convention(labels.attrs, lp)
        weights = open_image(weight_paths[k]) if weight_paths else None
        if weights is not None and weights.shape != labels.shape:
            raise ValueError(f"{weight_paths[k]} has shape {weights.shape}, labels {labels.shape}")
        stats = image_stats(image)
        classes = set()
        for start, stop in _stack_ranges(ranges, k, image.shape[0]):
            images = stats.normalize(image.array[start:stop])
            targets = cell_mask(labels.array[start:stop], convention).astype(np.uint8)
            classes.update(np.unique(targets).tolist())
            if weights is None:
                weights_zyx = np.ones(targets.shape, np.float32)
            else:
                weights_zyx = np.asarray(weights.array[start:stop], np.float32)
            if dims == 3:
                out.images.append(images)
                out.targets.append(targets)
                out.weights.append(weights_zyx)
                continue
            for z in range(len(images)):
                stack = mirror_indices(z - slice_context, z + slice_context + 1, len(images))
                out.images.append(images[stack] if slice_context else images[z])
                out.targets.append(targets[z])
                out.weights.append(weights_zyx[z])
        if classes != {0, 1}:
            missing = "cell" if 1 not in classes else "membrane"
            raise ValueError(
                f"{lp}: the training slices hold no {missing} pixel; a network cannot learn to tell membrane from "
                "cell without both (check the labels, their label_convention, or the dataset's z_range)"
            )
    if not out.images:
        raise ValueError("no training slices found")
    return out


class TileSampler(Dataset):
    """Random training tiles (2D from slices, 3D from volumes) mirror-extended at the borders, augmented, with
    labels and weights cropped to the model's output. Sample i is a deterministic function of (seed, i):
    resuming at iteration k replays the same tiles."""

    def __init__(self, data: Slices, input_sizes, output_sizes, params: AugmentParams, seed: int, length: int) -> None:
        self.data, self.n, self.out = data, tuple(input_sizes), tuple(output_sizes)
        self.params, self.seed, self.length = params, seed, length
        self.pads = [n // 2 + 1 for n in self.n]
        widths = [(p, p) for p in self.pads]
        self.padded = [
            tuple(np.pad(a, [(0, 0)] * (a.ndim - len(widths)) + widths, mode="reflect") for a in triple)
            for triple in zip(data.images, data.targets, data.weights, strict=True)
        ]
        self.augment = augment if len(self.n) == 2 else augment_volume

    def __len__(self) -> int:
        return self.length

    def uniform_position(self, i: int) -> tuple[int, tuple[int, ...]]:
        """Where sample i lies when drawn uniformly: (item, centre in the item's unpadded coordinates)."""
        return self._uniform_position(np.random.default_rng([self.seed, i]))

    def _uniform_position(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        k = int(rng.integers(len(self.padded)))
        return k, tuple(int(rng.integers(s)) for s in self.data.targets[k].shape)

    def __getitem__(self, index: int | tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample `index`: an int i (uniform position), or (i, item, centre) for a tile placed by a sampler
        such as `unetflow.training.sampling.HardTileOrder`; the augmentation is sample i's either way."""
        i = index[0] if isinstance(index, tuple) else int(index)
        rng = np.random.default_rng([self.seed, i])
        k, centre = self._uniform_position(rng)  # drawn in every case: keeps sample i's augmentation stream
        if isinstance(index, tuple):
            k, centre = int(index[1]), tuple(int(c) for c in index[2])
        starts = [c + p - n // 2 for c, p, n in zip(centre, self.pads, self.n, strict=True)]
        window = (Ellipsis, *(slice(a, a + n) for a, n in zip(starts, self.n, strict=True)))
        img, tgt, wgt = self.augment(rng, *(a[window] for a in self.padded[k]), self.params)
        crop = tuple(slice((n - o) // 2, (n - o) // 2 + o) for n, o in zip(self.n, self.out, strict=True))
        return (
            torch.from_numpy(np.ascontiguousarray(img if img.ndim > len(self.n) else img[None])),
            torch.from_numpy(np.ascontiguousarray(tgt[crop]).astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(wgt[crop])),
        )


def load_validation(
    image_paths: list[str], label_paths: list[str], ranges: list[Ranges] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out stacks as (normalized image volume, cell mask volume) pairs; `ranges` as in `load_slices`."""
    volumes = []
    for k, (ip, lp) in enumerate(zip(image_paths, label_paths, strict=True)):
        image, labels = open_image(ip), open_image(lp)
        stats = image_stats(image)
        convention = recorded_convention(labels.attrs, lp)
        for start, stop in _stack_ranges(ranges, k, image.shape[0]):
            volumes.append((stats.normalize(image.array[start:stop]), cell_mask(labels.array[start:stop], convention)))
    return volumes
