"""Post-processing chosen by cross-validation: every fold's held-out probabilities segmented with each candidate
of a grid (method, threshold, seed threshold, minimum segment size), each scored by its volume Rand error (split
and merge parts beside it), and the candidate of the lowest mean fold Rand error chosen with the nested estimate
of `unetflow.stages.report.choose_by_cross_validation` (each fold scored at the candidate the other folds chose).

Run by hand (not a test), one --fold per cross-validation fold, for example:
    python benchmarks/cv_postprocess.py \\
        --fold results/cv/fold0/isbi_labelled/probabilities.ome.zarr results/data/isbi_labelled/labels.ome.zarr \\
        --fold results/cv/fold1/isbi_labelled/probabilities.ome.zarr results/data/isbi_labelled/labels.ome.zarr \\
        --thresholds 0.4 0.5 0.6 --seed-thresholds 0.9 0.95 --min-sizes 0 50 [--out grid.csv]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from unetflow.stages.evaluate import evaluate_volume
from unetflow.stages.report import choose_by_cross_validation
from unetflow.stages.segment import segment_volume


def candidates(a: argparse.Namespace) -> list[dict]:
    """The grid's segment settings (components have no seeds: one candidate per threshold and size)."""
    grid = []
    for method, threshold, min_size in itertools.product(a.methods, a.thresholds, a.min_sizes):
        seeds = a.seed_thresholds if method == "watershed" else [None]
        for seed in seeds:
            settings = {"method": method, "threshold": threshold, "min_size": min_size, "connectivity": 4, "dims": 2}
            if seed is not None:
                settings.update(seeds="probability", seed_threshold=seed)
            grid.append(settings)
    return grid


def name(settings: dict) -> str:
    seed = f" seed {settings['seed_threshold']:g}" if "seed_threshold" in settings else ""
    return f"{settings['method']} t {settings['threshold']:g}{seed} min {settings['min_size']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", nargs=2, action="append", required=True, metavar=("PROBABILITIES", "LABELS"))
    parser.add_argument("--methods", nargs="+", default=["components", "watershed"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--seed-thresholds", type=float, nargs="+", default=[0.9])
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None, help="also write every fold's row per candidate to this CSV")
    a = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unetflow-cv-post-"))
    rows = []
    try:
        for fold, (probabilities, labels) in enumerate(a.fold):
            for settings in candidates(a):
                seg = segment_volume(probabilities, work / "s.ome.zarr", **settings)
                evaluate_volume(seg, labels, work / "m.csv", volume_out=work / "v.csv")
                row = pd.read_csv(work / "v.csv").iloc[0]
                keep = ("rand_error", "rand_split", "rand_merge", "pixel_error")
                rows.append({"fold": fold, "candidate": name(settings), **{k: row[k] for k in keep}})
                shutil.rmtree(seg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_fold = pd.DataFrame(rows)
    if a.out:
        per_fold.to_csv(a.out, index=False, float_format="%.6g")
    table = per_fold.pivot(index="candidate", columns="fold", values="rand_error").add_prefix("fold ")
    table["mean"], table["worst"] = table.mean(axis=1), table.max(axis=1)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    print(table.sort_values(["mean", "worst"]).round(4).to_string())
    choice = choose_by_cross_validation(per_fold, by="candidate")
    print("\nchosen by cross-validation:")
    for key, value in choice.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    main()
