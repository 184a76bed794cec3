"""Peak memory of `unetflow weights` on a label volume and on one 10 times larger, same chunks, side by side.

Run by hand: python benchmarks/weightmap_memory.py [--slices 4] [--size 512]
Each run is a fresh process; its peak RSS (ru_maxrss) is reported with the ratio large / small.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unetflow.stages.synthetic import synthesize
from unetflow.store import create_image, set_attrs


def write_labels(path: Path, depth: int, size: int, pattern) -> None:
    """A label volume of `depth` slices cycling through `pattern`, written slice by slice."""
    target = create_image(path, (depth, size, size), "uint8", (1, size, size), "zyx", (50, 4, 4))
    for z in range(depth):
        target[z] = pattern[z % len(pattern)]
    set_attrs(path, {"label_convention": "binary255"})


def run(labels: Path, out: Path) -> tuple[float, float]:
    code = (
        "import resource, sys; from unetflow.stages.weights import WeightParams, compute_weights; "
        "compute_weights(sys.argv[1], sys.argv[2], WeightParams()); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(labels), str(out)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    _, pattern = synthesize((4, args.size, args.size), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for factor in (1, 10):
            labels = tmp / f"labels{factor}.ome.zarr"
            write_labels(labels, args.slices * factor, args.size, pattern)
            rss, seconds = run(labels, tmp / f"weights{factor}.ome.zarr")
            rows.append((factor, args.slices * factor, rss, seconds))
    print(f"{'volume':>8} {'slices':>6} {'peak RSS MiB':>12} {'seconds':>8}")
    for factor, depth, rss, seconds in rows:
        print(f"{factor:>7}x {depth:>6} {rss:>12.1f} {seconds:>8.1f}")
    print(f"peak RSS ratio (10x volume / 1x volume): {rows[1][2] / rows[0][2]:.3f}")


if __name__ == "__main__":
    main()
