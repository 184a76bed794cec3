"""Report: every run's per-slice metrics in one table, a summary per run and volume, and cross-validation figures.

A run is an experiment, or one fold of a cross-validated experiment (`name/fold<i>`). `metrics.csv` has one row
per experiment, fold, volume and slice; `summary.csv` one row per experiment, fold and volume (mean and standard
deviation over slices, and their number); `volumes.csv` the same rows with each volume's metrics computed from
its slices' pooled counts (a volume-level Rand error, not a mean of slices); `cross_validation.csv` one row per
cross-validated experiment and volume: over its folds' means, the mean, the standard deviation and the worst fold
of every metric (the highest error, the lowest score). With the evaluations' threshold sweeps, `thresholds.csv`
holds, per cross-validated experiment, volume and swept threshold, the mean and worst fold of each volume metric,
and `threshold_choice.csv` the threshold chosen by cross-validation: the lowest mean fold Rand error (then the
lowest worst fold), with a nested estimate of what it is worth on unseen slices (each fold scored at the threshold
chosen on the other folds alone).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from unetflow.provenance import input_fingerprint, make_record, stage_code
from unetflow.stages.figures import experiments_chart
from unetflow.store import atomic_output, write_table

ID_COLUMNS = ("experiment", "fold", "volume", "slice")
RUN = re.compile(r"^(?P<experiment>[A-Za-z][A-Za-z0-9_-]*)(/fold(?P<fold>[0-9]+))?$")


def parse_run(run: str) -> tuple[str, int | None]:
    """`name` or `name/fold<i>` as (experiment, fold)."""
    match = RUN.match(run)
    if match is None:
        raise ValueError(f"report: {run!r} is not a run name (an experiment name, or name/fold<i>)")
    fold = match["fold"]
    return match["experiment"], int(fold) if fold is not None else None


def _collect(files: Sequence[str | Path], runs: Sequence[str], what: str, columns: set[str], rows: int | None):
    """Concatenate unetflow CSVs (`what`: their kind, for messages), each tagged with its run's experiment and fold."""
    if len(files) != len(runs):
        raise ValueError(f"report: one run name per {what} file is needed")
    frames = []
    for path, run in zip(files, runs, strict=True):
        experiment, fold = parse_run(run)
        frame = pd.read_csv(path)
        if not columns <= set(frame.columns) or (rows is not None and len(frame) != rows):
            shape = f"{rows} row(s) with" if rows is not None else "the"
            raise ValueError(f"{path}: not a unetflow {what} CSV ({shape} columns {sorted(columns)})")
        frame.insert(0, "fold", pd.array([fold] * len(frame), dtype="Int64"))
        frame.insert(0, "experiment", experiment)
        frames.append(frame)
    if not frames:
        raise ValueError(f"report: no {what} files to report")
    return pd.concat(frames, ignore_index=True)


def collect(metric_files: Sequence[str | Path], runs: Sequence[str]) -> pd.DataFrame:
    """Every run's per-slice metric rows, tagged with its experiment and fold."""
    return _collect(metric_files, runs, "metrics", {"volume", "slice"}, None)


def collect_volumes(volume_files: Sequence[str | Path], runs: Sequence[str]) -> pd.DataFrame:
    """One row per run's volume: its metrics from pooled counts, tagged with experiment and fold."""
    return _collect(volume_files, runs, "volume metrics", {"volume"}, 1)


def _values(metrics: pd.DataFrame) -> list[str]:
    return [c for c in metrics.columns if c not in ID_COLUMNS]


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, fold, volume): mean and std of every metric over slices, and their number."""
    values = _values(metrics)
    grouped = metrics.groupby(["experiment", "fold", "volume"], sort=True, dropna=False)
    mean = grouped[values].mean()
    std = grouped[values].std(ddof=0).add_suffix("_std")
    count = grouped.size().rename("slices")
    return pd.concat([mean, std, count], axis=1).reset_index()


def cross_validation(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cross-validated experiment and volume, over its folds' means: mean, std and worst fold of each metric."""
    folds = summary[summary["fold"].notna()]
    values = [c for c in folds.columns if c not in ID_COLUMNS and c != "slices" and not c.endswith("_std")]
    rows = []
    for (experiment, volume), group in folds.groupby(["experiment", "volume"], sort=True):
        row = {"experiment": experiment, "volume": volume, "folds": len(group), **_over_folds(group, values, True)}
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["experiment", "volume", "folds"])


def _over_folds(group: pd.DataFrame, values: list[str], std: bool) -> dict[str, float]:
    """Each metric's mean (and standard deviation) and worst over a group of folds: an error's highest value, a
    score's lowest."""
    row = {}
    for name in values:
        column = group[name].astype(float)
        row[f"{name}_mean"] = column.mean()
        if std:
            row[f"{name}_std"] = column.std(ddof=0)
        row[f"{name}_worst"] = column.max() if name.endswith("_error") else column.min()
    return row


def collect_sweeps(sweep_files: Sequence[str | Path], runs: Sequence[str]) -> pd.DataFrame:
    """Every run's volume metrics at each swept threshold, tagged with experiment and fold."""
    return _collect(sweep_files, runs, "threshold sweep", {"threshold", "volume", "rand_error"}, None)


def threshold_sweep(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Per cross-validated experiment, volume and threshold: each metric's mean and worst over the folds."""
    folds = sweeps[sweeps["fold"].notna()]
    values = [c for c in folds.columns if c not in (*ID_COLUMNS, "threshold", "slices") and not c.endswith("_std")]
    values = [c for c in values if not c.endswith(("_best", "_best_threshold")) and folds[c].notna().any()]
    rows = []
    for (experiment, volume, threshold), group in folds.groupby(["experiment", "volume", "threshold"], sort=True):
        row = {"experiment": experiment, "volume": volume, "threshold": threshold, "folds": group["fold"].nunique()}
        rows.append({**row, **_over_folds(group, values, False)})
    return pd.DataFrame(rows, columns=None if rows else ["experiment", "volume", "threshold", "folds"])


def _choose(per_fold: pd.DataFrame, by: str) -> object:
    """The candidate of the lowest mean fold Rand error, then the lowest worst fold, then the lowest candidate."""
    scores = per_fold.groupby(by)["rand_error"].agg(["mean", "max"]).reset_index()
    return scores.sort_values(["mean", "max", by]).iloc[0][by]


def choose_by_cross_validation(per_fold: pd.DataFrame, by: str = "threshold") -> dict[str, object]:
    """From one row per fold and candidate (columns `fold`, `by`, `rand_error`; every fold scored on the same
    candidates): the candidate of the lowest mean fold Rand error (then the lowest worst fold), its mean and worst,
    and the nested estimate (`nested_*`): each fold's Rand error at the candidate chosen on the other folds, so that
    the choice never saw the fold it is scored on (never lower than the chosen candidate's, fold by fold)."""
    ids = sorted(per_fold["fold"].unique())
    candidates = per_fold.groupby("fold")[by].apply(frozenset)
    if len(ids) < 2 or candidates.nunique() != 1:
        raise ValueError(f"cross-validation: needs two or more folds, each scored at the same {by} values")
    chosen = _choose(per_fold, by)
    chosen_rows = per_fold[per_fold[by] == chosen]
    at = chosen_rows["rand_error"]
    nested, picks = [], []
    for fold in ids:
        pick = _choose(per_fold[per_fold["fold"] != fold], by)
        score = per_fold[(per_fold["fold"] == fold) & (per_fold[by] == pick)]["rand_error"]
        nested.append(float(score.iloc[0]))
        picks.append(f"{pick:g}" if isinstance(pick, float) else str(pick))
    return {
        "folds": len(ids),
        by: chosen,
        "rand_error_mean": at.mean(),
        "rand_error_worst": at.max(),
        **(
            {
                "pixel_error_mean": chosen_rows["pixel_error"].mean(),
                "pixel_error_worst": chosen_rows["pixel_error"].max(),
            }
            if "pixel_error" in per_fold
            else {}
        ),
        "nested_rand_error_mean": sum(nested) / len(nested),
        "nested_rand_error_worst": max(nested),
        f"nested_{by}s": " ".join(picks),
    }


def threshold_choice(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Per cross-validated experiment and volume swept in every fold at the same thresholds: the threshold chosen
    by `choose_by_cross_validation`, with its nested estimate."""
    folds = sweeps[sweeps["fold"].notna()]
    rows = []
    for (experiment, volume), group in folds.groupby(["experiment", "volume"], sort=True):
        try:
            choice = choose_by_cross_validation(group[["fold", "threshold", "rand_error", "pixel_error"]].dropna())
        except ValueError:
            continue  # one fold, or folds swept at different thresholds: nothing to choose across
        rows.append({"experiment": experiment, "volume": volume, **choice})
    return pd.DataFrame(rows, columns=None if rows else ["experiment", "volume", "folds", "threshold"])


def write_report(
    metric_files: Sequence[str | Path],
    runs: Sequence[str],
    out_dir: str | Path,
    volume_files: Sequence[str | Path] | None = None,
    sweep_files: Sequence[str | Path] | None = None,
) -> tuple[Path, ...]:
    """metrics.csv, summary.csv and cross_validation.csv; with `volume_files` (one per run, as evaluate writes them)
    also volumes.csv, one row per experiment, fold and volume with the metrics of the volume's pooled counts, and
    experiments.png, a chart of them; with `sweep_files` (one per run) thresholds.csv and threshold_choice.csv;
    and tables.html, the tables for a browser."""
    out_dir = Path(out_dir)
    metrics = collect(metric_files, runs)
    summary = summarize(metrics)
    tables = {"metrics.csv": metrics, "summary.csv": summary, "cross_validation.csv": cross_validation(summary)}
    files, names = list(metric_files), list(runs)
    if volume_files:
        tables["volumes.csv"] = collect_volumes(volume_files, runs)
        files, names = files + list(volume_files), names + list(runs)
    if sweep_files:
        sweeps = collect_sweeps(sweep_files, runs)
        tables["thresholds.csv"] = threshold_sweep(sweeps)
        tables["threshold_choice.csv"] = threshold_choice(sweeps)
        files, names = files + list(sweep_files), names + list(runs)
    inputs = {f"{run}:{i}": input_fingerprint(p) for i, (p, run) in enumerate(zip(files, names, strict=True))}
    record = make_record(inputs, {"runs": list(runs)}, stage_code("report"))
    written = [write_table(frame, out_dir / name, record) for name, frame in tables.items()]
    if volume_files:
        written.append(experiments_chart(tables["volumes.csv"], out_dir / "experiments.png"))
    written.append(_html_tables(tables, out_dir / "tables.html"))
    return tuple(written)


def _html_tables(tables: dict[str, pd.DataFrame], out: Path) -> Path:
    """The tables as one HTML page, for the report to show in a browser (a CSV it can only offer as a download)."""
    titles = {
        "summary.csv": "Summary per experiment, fold and volume (mean and standard deviation over slices)",
        "volumes.csv": "Volumes (metrics of each volume's pooled counts; best over the threshold sweep)",
        "cross_validation.csv": "Cross-validation (mean, standard deviation and worst fold)",
        "threshold_choice.csv": "Threshold chosen by cross-validation (and its nested estimate)",
        "thresholds.csv": "Cross-validation at every swept threshold (volume metrics: mean and worst fold)",
        "metrics.csv": "Per slice",
    }
    parts = ["<html><head><meta charset='utf-8'><title>unetflow metrics</title></head><body>"]
    for name, title in titles.items():
        if name in tables and len(tables[name]):
            parts += [f"<h2>{title}</h2>", tables[name].to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    parts.append("</body></html>")
    with atomic_output(out) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return out
