"""Intensity normalization shared by training and inference: zero mean, unit variance per volume.

Statistics are measured once at ingest (streaming, exact) and stored with the image; for inputs that
did not pass through ingest they are estimated from up to `max_slices` evenly spaced slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unetflow.store import Image


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

    def add(self, chunk: np.ndarray) -> None:
        c = np.asarray(chunk, np.float64)
        self.n += c.size
        self.total += float(c.sum())
        self.total_sq += float(np.square(c).sum())

    def result(self) -> IntensityStats:
        if self.n == 0:
            raise ValueError("no pixels to compute intensity statistics from")
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean**2, 0.0)
        return IntensityStats(mean, max(float(np.sqrt(var)), 1e-6))


def image_stats(image: Image, max_slices: int = 16) -> IntensityStats:
    """Stored statistics of an ingested image, else an estimate from a few slices."""
    stored = image.attrs.get("intensity")
    if stored:
        return IntensityStats(float(stored["mean"]), float(stored["std"]))
    if image.axes != "zyx":
        raise ValueError(f"{image.path}: expected axes zyx for intensity statistics, got {image.axes}")
    running = RunningStats()
    z = image.shape[0]
    for k in np.unique(np.linspace(0, z - 1, min(z, max_slices)).astype(int)):
        running.add(np.asarray(image.array[int(k)]))
    return running.result()
