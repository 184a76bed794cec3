"""Weight map: the windowed implementation against the naive one (one distance transform per cell), side by side.

Run by hand: python benchmarks/weightmap_speed.py [--labels ../shared/data/isbi2012/train-labels.tif] [--slices N]
Prints per-slice timings, the ratio, and the largest relative difference between the two.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from unetflow.labels import BINARY_255, instance_labels
from unetflow.stages.weights import WeightParams, class_weights, weight_map

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012" / "train-labels.tif"


def naive(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    cell = labels > 0
    cells = instance_labels(labels, BINARY_255, 4)
    d = np.stack([ndimage.distance_transform_edt(cells != i) for i in range(1, cells.max() + 1)])
    d.sort(axis=0)
    wc = class_weights([(~cell).sum(), cell.sum()])
    return np.where(cell, wc[1], wc[0]) + (~cell) * w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, default=DEFAULT)
    parser.add_argument("--slices", type=int, default=None)
    args = parser.parse_args()
    stack = tifffile.imread(args.labels)[: args.slices]
    weight_map(stack[0], BINARY_255, WeightParams())  # load the compiled kernel once, as any long run does
    t_naive = t_fast = 0.0
    worst = 0.0
    print(f"{'slice':>5} {'cells':>5} {'naive s':>8} {'unetflow s':>10} {'ratio':>6}")
    for z, labels in enumerate(stack):
        t0 = time.perf_counter()
        ref = naive(labels)
        t1 = time.perf_counter()
        got = weight_map(labels, BINARY_255, WeightParams())
        t2 = time.perf_counter()
        worst = max(worst, float(np.max(np.abs(got - ref) / ref)))
        t_naive += t1 - t0
        t_fast += t2 - t1
        n = ndimage.label(labels > 0)[1]
        print(f"{z:>5} {n:>5} {t1 - t0:>8.3f} {t2 - t1:>10.4f} {(t1 - t0) / (t2 - t1):>6.1f}")
    print(
        f"total: naive {t_naive:.2f} s, unetflow {t_fast:.3f} s, ratio {t_naive / t_fast:.1f}x, "
        f"max relative difference {worst:.2e}"
    )


if __name__ == "__main__":
    main()
