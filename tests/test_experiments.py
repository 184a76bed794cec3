"""Several experiments in one config, one of them cross-validated: each runs under its own folder, ingest is
shared, weight maps are keyed by their settings, and adding an experiment plans only its own jobs."""

import copy

import pandas as pd
import pytest
import yaml
from conftest import TINY, planned_jobs, snakemake

from unetflow.store import open_image

pytestmark = pytest.mark.integration

MATRIX = copy.deepcopy(TINY)
MATRIX["experiments"] = {
    "base": copy.deepcopy(TINY["experiments"]["tiny"]),
    "cv": {"train_on": ["tiny_train"], "folds": 3, "weights": {"sigma": 8.0}, "model": {"base_width": 2}},
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    work = tmp_path_factory.mktemp("matrix")
    (work / "matrix.yaml").write_text(yaml.safe_dump(MATRIX))
    run = snakemake(work, "--configfile", "matrix.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    return work


def test_each_experiment_and_fold_runs_under_its_own_folder(matrix):
    r = matrix / "results"
    assert open_image(r / "base" / "tiny_volume" / "segmentation.ome.zarr").shape == (2, 100, 120)
    for i in range(3):
        # Each fold holds out one of tiny_train's three slices and predicts it as a stack of its own.
        held_out = open_image(r / "cv" / f"fold{i}" / "tiny_train" / "segmentation.ome.zarr")
        assert held_out.shape == (1, 96, 96) and held_out.attrs["z_range"] == [i, i + 1]
        assert (r / "models" / "cv" / f"fold{i}" / "model.pt").exists()
    assert len(list((r / "data" / "tiny_train").glob("weights-*.ome.zarr"))) == 2  # sigma 5 and sigma 8
    assert len(list((r / "data").glob("*/images.ome.zarr"))) == 3  # ingest shared


def test_report_gives_each_fold_and_their_mean_std_and_worst(matrix):
    r = matrix / "results" / "report"
    metrics = pd.read_csv(r / "metrics.csv")
    cv = metrics[metrics["experiment"] == "cv"].sort_values("fold")
    assert list(cv["fold"]) == [0, 1, 2] and list(cv["slice"]) == [0, 1, 2]
    summary = pd.read_csv(r / "summary.csv")
    assert len(summary) == 4  # base on tiny_validation, cv's three folds on tiny_train
    folds = pd.read_csv(r / "cross_validation.csv")
    (row,) = folds.to_dict("records")
    assert row["experiment"] == "cv" and row["volume"] == "tiny_train" and row["folds"] == 3
    per_fold = summary[summary["experiment"] == "cv"]["rand_error"]
    assert row["rand_error_mean"] == pytest.approx(per_fold.mean(), rel=1e-5)
    assert row["rand_error_std"] == pytest.approx(per_fold.std(ddof=0), rel=1e-4, abs=1e-6)
    assert row["rand_error_worst"] == pytest.approx(per_fold.max(), rel=1e-5)
    assert row["dice_cell_worst"] == pytest.approx(summary[summary["experiment"] == "cv"]["dice_cell"].min(), rel=1e-5)


def test_report_chooses_the_threshold_across_folds(matrix):
    r = matrix / "results"
    sweeps = [pd.read_csv(r / "cv" / f"fold{i}" / "tiny_train" / "sweep.csv") for i in range(3)]
    assert all(len(s) > 1 and list(s["threshold"]) == list(sweeps[0]["threshold"]) for s in sweeps)
    (choice,) = pd.read_csv(r / "report" / "threshold_choice.csv").to_dict("records")
    assert choice["experiment"] == "cv" and choice["volume"] == "tiny_train" and choice["folds"] == 3
    at = [float(s.loc[s["threshold"] == choice["threshold"], "rand_error"].iloc[0]) for s in sweeps]
    assert choice["rand_error_mean"] == pytest.approx(sum(at) / 3, rel=1e-5)
    assert choice["rand_error_worst"] == pytest.approx(max(at), rel=1e-5)
    means = pd.concat(sweeps).groupby("threshold")["rand_error"].mean()
    assert choice["rand_error_mean"] == pytest.approx(means.min(), rel=1e-5)
    assert choice["nested_rand_error_mean"] >= choice["rand_error_mean"] - 1e-9  # the choice saw every fold
    table = pd.read_csv(r / "report" / "thresholds.csv")
    assert set(table["experiment"]) == {"cv"} and len(table) == len(sweeps[0])


def test_adding_an_experiment_plans_only_its_jobs(matrix):
    grown = copy.deepcopy(MATRIX)
    grown["experiments"]["third"] = {**copy.deepcopy(TINY["experiments"]["tiny"]), "train": {"seed": 7}}
    (matrix / "grown.yaml").write_text(yaml.safe_dump(grown))
    run = snakemake(matrix, "--configfile", "grown.yaml", "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    # Its weights equal base's (same settings, same store); the report gathers its metrics too.
    assert planned_jobs(run.stdout + run.stderr) == {
        "train": 1,
        "training_curves": 1,
        "export": 1,
        "predict": 2,
        "segment": 2,
        "view": 2,
        "evaluate": 1,
        "overlay": 1,
        "report": 1,
        "all": 1,
    }


def test_a_fold_needs_as_many_slices_as_folds(tmp_path):
    bad = copy.deepcopy(MATRIX)
    bad["experiments"]["cv"]["folds"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = snakemake(tmp_path, "--configfile", "bad.yaml", "-n")
    assert run.returncode != 0 and "experiments.cv.folds" in run.stdout + run.stderr


def test_an_experiment_with_nothing_to_segment_still_trains(tmp_path):
    config = copy.deepcopy(TINY)
    config["experiments"] = {"only_train": {"train_on": ["tiny_train"]}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "--configfile", "train.yaml", "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run.stdout + run.stderr)
    assert jobs["train"] == 1 and "predict" not in jobs and "report" not in jobs


def test_volume_metrics_pool_the_counts_of_every_slice(matrix):
    """volumes.csv: each volume's Rand error from its slices' pooled contingency table (not a mean of slices),
    equal to computing it on the whole volume at once."""
    import numpy as np

    from unetflow.labels import cell_mask, instance_labels, recorded_convention
    from unetflow.metrics import Counts

    r = matrix / "results"
    volumes = pd.read_csv(r / "report" / "volumes.csv")
    row = volumes[(volumes["experiment"] == "base") & (volumes["volume"] == "tiny_validation")].iloc[0]
    seg = open_image(r / "base" / "tiny_validation" / "segmentation.ome.zarr").array[:]
    gt = open_image(r / "data" / "tiny_validation" / "labels.ome.zarr")
    labels = gt.array[:]
    convention = recorded_convention(gt.attrs, "gt")
    cells = np.stack([instance_labels(s, convention) for s in labels]).astype(np.int64)
    cells = np.where(cells > 0, cells + (np.arange(len(cells)) * (cells.max() + 1))[:, None, None], 0)
    whole = Counts().add(seg > 0, seg, cell_mask(labels, convention), cells).metrics()
    assert row["rand_error"] == pytest.approx(whole["rand_error"], rel=1e-5)
    assert row["pixel_error"] == pytest.approx(whole["pixel_error"], rel=1e-5)
    assert row["slices"] == 2 and len(volumes) == 4  # base, and each of cv's folds
