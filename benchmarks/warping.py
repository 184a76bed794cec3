"""Time of the warping error (`unetflow.warping`) on 512 x 512 ISBI 2012 label slices.

Two pairs: a labelled slice against the next one (real membranes that differ in shape and topology almost
everywhere: a hard case), and a slice against itself with its membranes thickened by one pixel and 0.5% of its
pixels flipped at random (a prediction with small topological errors). Prints the median of `--repeats` runs and
the error. The data's folder is `$UNETFLOW_ISBI` or ../shared/data/isbi2012.

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


def timed(truth: np.ndarray, prediction: np.ndarray, repeats: int) -> tuple[float, float]:
    times, error = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        error = warping_error(truth, prediction)
        times.append(time.perf_counter() - start)
    return statistics.median(times), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    labels = tifffile.imread(ISBI / "train-labels.tif") > 0  # cells True, membranes False
    rng = np.random.default_rng(0)
    noisy = ndimage.binary_erosion(labels[0]) ^ (rng.random(labels[0].shape) < 0.005)
    warping_error(labels[0], labels[1])  # the lookup table, once
    print(f"CPU: {cpu_name()}, slices {labels.shape[1]} x {labels.shape[2]}")
    for name, (truth, prediction) in {
        "slice 0 vs slice 1": (labels[0], labels[1]),
        "slice 0 vs itself, membranes +1 px, 0.5% flipped": (labels[0], noisy),
    }.items():
        seconds, error = timed(truth, prediction, a.repeats)
        differing = float(np.mean(truth != prediction))
        print(
            f"{name}: {seconds * 1000:.1f} ms (median of {a.repeats}); pixels differing {differing:.4f}, "
            f"warping error {error:.4f}"
        )


if __name__ == "__main__":
    main()
