"""Time of the warping error (`unetflow.warping`) on 512 x 512 ISBI 2012 label slices, per slice and in 3D.

Two pairs: a labelled slice against the next one (real membranes that differ in shape and topology almost
everywhere: a hard case), and a slice against itself with its membranes thickened by one pixel and 0.5% of its
pixels flipped at random (a prediction with small topological errors). In 3D (cells 6-connected), the first
10 slices as a volume against the same noisy version, and slices 0-4 against slices 5-9. Prints the median of
`--repeats` runs, the first run and the error. The data's folder is `$UNETFLOW_ISBI` or ../shared/data/isbi2012.

Run by hand (not a test):
    python benchmarks/warping.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from unetflow.warping import warping_error

ISBI = Path(os.environ.get("UNETFLOW_ISBI", Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def timed(truth: np.ndarray, prediction: np.ndarray, repeats: int) -> tuple[float, float, float]:
    """(first run, median of the runs, error): in 3D the first run also decides the patterns it meets first."""
    times, error = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        error = warping_error(truth, prediction)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    labels = tifffile.imread(ISBI / "train-labels.tif") > 0  # cells True, membranes False
    rng = np.random.default_rng(0)
    noisy = ndimage.binary_erosion(labels[0]) ^ (rng.random(labels[0].shape) < 0.005)
    warping_error(labels[0], labels[1])  # the lookup table, once
    volume = labels[:10]
    noisy_volume = ~ndimage.binary_dilation(~volume, np.ones((1, 3, 3), bool)) ^ (rng.random(volume.shape) < 0.005)
    print(f"CPU: {cpu_name()}, slices {labels.shape[1]} x {labels.shape[2]}")
    for name, (truth, prediction) in {
        "slice 0 vs slice 1": (labels[0], labels[1]),
        "slice 0 vs itself, membranes +1 px, 0.5% flipped": (labels[0], noisy),
        "3D: slices 0-9 vs themselves, membranes +1 px, 0.5% flipped": (volume, noisy_volume),
        "3D: slices 0-4 vs slices 5-9": (labels[:5], labels[5:10]),
    }.items():
        first, seconds, error = timed(truth, prediction, a.repeats)
        differing = float(np.mean(truth != prediction))
        print(
            f"{name}: {seconds * 1000:.1f} ms (median of {a.repeats}, first {first * 1000:.1f} ms); "
            f"pixels differing {differing:.4f}, warping error {error:.4f}"
        )


if __name__ == "__main__":
    main()
