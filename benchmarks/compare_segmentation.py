"""Connected components against the seeded watershed (`segment.method`) on labelled probabilities.

Segments one probability store with each method (components; watershed with probability seeds; watershed with
distance seeds), evaluates each against the labels with the threshold sweep, and prints the volume metrics at the
configured threshold and the best over the sweep.

Run by hand (not a test), for example after `make demo`:
    python benchmarks/compare_segmentation.py results/demo/synth_validation/probabilities.ome.zarr \\
        results/data/synth_validation/labels.ome.zarr
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from unetflow.stages.evaluate import evaluate_volume
from unetflow.stages.segment import segment_volume

METHODS = {
    "components": {"method": "components"},
    "watershed, probability seeds": {"method": "watershed", "seeds": "probability"},
    "watershed, distance seeds": {"method": "watershed", "seeds": "distance"},
}
SHOWN = ["pixel_error", "rand_error", "rand_split", "rand_merge", "info_error", "warping_error"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probabilities")
    parser.add_argument("labels")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-size", type=int, default=0)
    a = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unetflow-compare-"))
    rows = []
    try:
        for name, method in METHODS.items():
            settings = {"connectivity": 4, "dims": 2, "min_size": a.min_size, **method}
            seg = segment_volume(a.probabilities, work / f"{len(rows)}.ome.zarr", threshold=a.threshold, **settings)
            evaluate_volume(
                seg,
                a.labels,
                work / "m.csv",
                volume_out=work / "v.csv",
                probabilities=a.probabilities,
                thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                segment_settings=settings,
            )
            row = pd.read_csv(work / "v.csv").iloc[0]
            best = {f"{m} best": row[f"{m}_best"] for m in ("rand_error", "info_error", "warping_error")}
            rows.append({"method": name, **{m: row[m] for m in SHOWN}, **best})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pd.set_option("display.width", 200)
    print(f"threshold {a.threshold}, min size {a.min_size}")
    print(pd.DataFrame(rows).set_index("method").round(4).to_string())


if __name__ == "__main__":
    main()
