"""Intensity normalization shared by training and inference: zero mean, unit variance per volume.

Statistics are measured once at ingest (streaming, exact) and stored with the image; for a store used in
place, and any input that did not pass through ingest, they are estimated from a sample of up to `SAMPLE_CHUNKS`
of its chunks, evenly spaced through the volume in storage order: memory one chunk, the same sample every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unetflow.image import Image


@dataclass(frozen=True)
class IntensityStats:
    mean: float
    std: float

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


class RunningStats:
    """Exact mean and standard deviation accumulated chunk by chunk (float64 sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0

    def add(self, chunk: np.ndarray, piece: int = 1 << 22) -> None:
        """Accumulate a chunk, `piece` values at a time (float64 copies of a piece, never of a whole plane)."""
        flat = np.asarray(chunk).reshape(-1)
        for start in range(0, flat.size, piece):
            c = flat[start : start + piece].astype(np.float64)
            self.n += c.size
            self.total += float(c.sum())
            self.total_sq += float(np.square(c).sum())

    def merge(self, other: RunningStats) -> None:
        """Add the sums of another accumulator (of another slab, say)."""
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> RunningStats:
        out = cls()
        out.n, out.total, out.total_sq = int(d["n"]), float(d["total"]), float(d["total_sq"])
        return out

    def result(self) -> IntensityStats:
        if self.n == 0:
            raise ValueError("no pixels to compute intensity statistics from")
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean**2, 0.0)
        return IntensityStats(mean, max(float(np.sqrt(var)), 1e-6))


SAMPLE_CHUNKS = 64


def sample_stats(image: Image, chunks: int = SAMPLE_CHUNKS) -> IntensityStats:
    """Mean and standard deviation of up to `chunks` of a zyx image's chunks, evenly spaced in storage order."""
    from unetflow.blocks import block_grid

    if image.axes != "zyx":
        raise ValueError(f"{image.path}: expected axes zyx for intensity statistics, got {image.axes}")
    shape = image.shape
    chunk = tuple(int(c) for c in getattr(image.array, "chunks", None) or (1, *shape[1:]))
    grid = block_grid(shape, chunk, (0, 0, 0), chunk)
    running = RunningStats()
    for k in np.unique(np.linspace(0, len(grid) - 1, min(len(grid), chunks)).astype(np.int64)):
        running.add(np.asarray(image.array[grid[int(k)].write]))
    return running.result()


def image_stats(image: Image) -> IntensityStats:
    """Stored statistics of an ingested image (or of a reference to a store used in place), else a sample."""
    stored = image.attrs.get("intensity")
    if stored:
        return IntensityStats(float(stored["mean"]), float(stored["std"]))
    return sample_stats(image)
