"""Report: all per-slice metric CSVs into one table and a summary (mean, std, count) per experiment and volume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

ID_COLUMNS = ("experiment", "volume", "slice")


def collect(metric_files: Sequence[str | Path], experiments: Sequence[str]) -> pd.DataFrame:
    """Concatenate metric CSVs, tagging each with its experiment."""
    if len(metric_files) != len(experiments):
        raise ValueError("one experiment name per metrics file is needed")
    frames = []
    for path, experiment in zip(metric_files, experiments, strict=True):
        frame = pd.read_csv(path)
        if "slice" not in frame.columns:
            raise ValueError(f"{path}: not a unetflow metrics CSV (no 'slice' column)")
        frame.insert(0, "experiment", experiment)
        frames.append(frame)
    if not frames:
        raise ValueError("no metrics files to report")
    return pd.concat(frames, ignore_index=True)


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, volume): mean and std of every metric, and the number of slices."""
    values = [c for c in metrics.columns if c not in ID_COLUMNS]
    grouped = metrics.groupby(["experiment", "volume"], sort=True)
    mean = grouped[values].mean().add_suffix("")
    std = grouped[values].std(ddof=0).add_suffix("_std")
    count = grouped.size().rename("slices")
    return pd.concat([mean, std, count], axis=1).reset_index()


def write_report(
    metric_files: Sequence[str | Path], experiments: Sequence[str], out_dir: str | Path
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = collect(metric_files, experiments)
    summary = summarize(metrics)
    paths = out_dir / "metrics.csv", out_dir / "summary.csv"
    for frame, path in zip((metrics, summary), paths, strict=True):
        tmp = path.with_name(path.name + ".partial")
        frame.to_csv(tmp, index=False, float_format="%.6g")
        tmp.replace(path)
    return paths
