"""Integration: the Snakemake pipeline end to end on a tiny config, re-runs, and a dry run of the ISBI config."""

import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, planned_jobs, snakemake

from unetflow.store import open_image

pytestmark = pytest.mark.integration


def test_every_output_exists_and_metrics_are_in_range(pipeline):
    r = pipeline / "results"
    for v in ("tiny_validation", "tiny_volume"):
        probs = open_image(r / "tiny" / v / "probabilities.ome.zarr")
        seg = open_image(r / "tiny" / v / "segmentation.ome.zarr")
        assert probs.axes == "czyx" and seg.axes == "zyx" and probs.shape[1:] == seg.shape
    assert open_image(r / "tiny" / "tiny_volume" / "segmentation.ome.zarr").shape == (2, 100, 120)
    (weights,) = (r / "data" / "tiny_train").glob("weights-*.ome.zarr")
    assert open_image(weights).array[:].min() > 0
    assert (r / "models" / "tiny" / "model.pt").exists()
    assert zipfile.is_zipfile(r / "models" / "tiny" / "bioimageio.zip")  # validated in tests/test_export.py
    log = pd.read_csv(r / "models" / "tiny" / "train_log.csv")
    assert list(log["iteration"]) == [4, 8]
    metrics = pd.read_csv(r / "report" / "metrics.csv")
    summary = pd.read_csv(r / "report" / "summary.csv")
    assert len(metrics) == 2 and list(summary["volume"]) == ["tiny_validation"]
    assert list(summary["experiment"]) == ["tiny"] and summary["fold"].isna().all()
    values = metrics.drop(columns=["experiment", "fold", "volume", "slice"]).to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    for rule in ("synthesize", "train", "report"):
        assert list((r / "logs").rglob(f"*{rule}*")) or rule == "synthesize"
    (figure,) = (r / "report" / "weights").glob("tiny_train-*.png")
    assert figure.stat().st_size > 1000
    for store in (weights, r / "tiny" / "tiny_volume" / "segmentation.ome.zarr"):
        assert len(open_image(store).attrs["provenance"]["fingerprint"]) == 32
    assert not list(r.rglob("*.partial"))


def test_second_run_has_nothing_to_do(pipeline):
    run = snakemake(pipeline, "--configfile", "tiny.yaml", "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def test_changed_setting_reruns_only_what_it_touches(pipeline):
    changed = yaml.safe_load((pipeline / "tiny.yaml").read_text())
    changed["segment"] = {"threshold": 0.6}
    (pipeline / "changed.yaml").write_text(yaml.safe_dump(changed))
    run = snakemake(pipeline, "--configfile", "changed.yaml", "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {"segment": 2, "view": 2, "evaluate": 1, "overlay": 1, "report": 1, "all": 1}
    assert planned_jobs(run.stdout + run.stderr) == expected
    retrained = yaml.safe_load((pipeline / "tiny.yaml").read_text())
    retrained["train"]["ema"] = 0.5
    (pipeline / "retrained.yaml").write_text(yaml.safe_dump(retrained))
    run = snakemake(pipeline, "--configfile", "retrained.yaml", "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {"train": 1, "training_curves": 1, "export": 1, "predict": 2, "segment": 2, "evaluate": 1, "overlay": 1}
    expected.update({"view": 2, "report": 1, "all": 1})
    assert planned_jobs(run.stdout + run.stderr) == expected


def test_sharded_prediction_scatters_gathers_and_matches(pipeline, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(pipeline, work, symlinks=True)
    config = yaml.safe_load((work / "tiny.yaml").read_text())
    config["predict"]["shards"] = 3
    (work / "three.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, "--configfile", "three.yaml", "-n", "--quiet", "rules")
    expected = {"predict_shard": 6, "predict": 2, "segment": 2, "view": 2, "evaluate": 1, "overlay": 1, "report": 1}
    expected["all"] = 1
    assert planned_jobs(dry.stdout + dry.stderr) == expected
    # Jobs from the volumes' sizes: 2 x 96 x 96 and 2 x 100 x 120 voxels at 10 000 per job are 2 and 3 jobs;
    # files of one 64 x 64 block (two float16 classes, 16 KiB) give each job blocks of its own.
    # Segmentation likewise, in 2 and 3 jobs per step over those files.
    config["predict"].update(shards=0, shard_mvoxels=0.01, file_mb=0.016)
    config["segment"] = {"shard_mvoxels": 0.01}
    (work / "sharded.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, "--configfile", "sharded.yaml", "-n", "--quiet", "rules")
    split = {"predict_shard": 5, "segment_label": 5, "segment_merge": 2, "segment_relabel": 5}
    assert planned_jobs(dry.stdout + dry.stderr) == {**expected, **split}
    run = snakemake(work, "--configfile", "sharded.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    for v in ("tiny_validation", "tiny_volume"):
        name = f"tiny/{v}/probabilities.ome.zarr"
        sharded = open_image(work / "results" / name).array[:]
        assert np.array_equal(sharded, open_image(pipeline / "results" / name).array[:])
        cells = open_image(work / "results" / "tiny" / v / "segmentation.ome.zarr").array[:]
        whole = open_image(pipeline / "results" / "tiny" / v / "segmentation.ome.zarr").array[:]
        assert np.array_equal(cells > 0, whole > 0)
        pairs = np.unique(np.stack([cells[cells > 0], whole[whole > 0]]), axis=1)  # the same cells, renumbered
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    assert not list((work / "results").rglob("*.partial")) and not list((work / "results").rglob("*.done"))


def test_a_calibrated_run_times_tiles_once_and_every_shard_cuts_its_blocks_there(pipeline, tmp_path):
    import json

    import zarr

    from unetflow.inference.budget import block_for_side
    from unetflow.models.checkpoint import load_model

    work = tmp_path / "copy"
    shutil.copytree(pipeline, work, symlinks=True)
    config = yaml.safe_load((work / "tiny.yaml").read_text())
    config["predict"].update(block=[0, 0, 0], calibrate=True, shards=2, memory_budget_mb=64, engine="eager")
    (work / "calibrated.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, "--configfile", "calibrated.yaml", "-n", "--quiet", "rules")
    planned = planned_jobs(dry.stdout + dry.stderr)
    assert planned["calibrate_tiles"] == 1 and planned["predict_shard"] == 4 and "train" not in planned
    run = snakemake(work, "--configfile", "calibrated.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    side = json.loads((work / "results" / "models" / "tiny" / "tiles.json").read_text())["side"]
    model, _ = load_model(work / "results" / "models" / "tiny" / "model.pt", "cpu")
    for v in ("tiny_validation", "tiny_volume"):
        path = work / "results" / "tiny" / v / "probabilities.ome.zarr"
        shape = open_image(path).array.shape[1:]
        assert zarr.open_group(str(path), mode="r").attrs["unetflow"]["block"] == list(
            block_for_side(model, shape, side, config["predict"].get("batch_size", 4))
        )
        whole = open_image(pipeline / "results" / "tiny" / v / "probabilities.ome.zarr").array[:]
        assert np.abs(np.asarray(open_image(path).array[:], np.float32) - whole).max() <= 1e-3  # float16 output


def test_nested_settings_are_overridden_with_config_in_yaml_flow_style(pipeline):
    """`--config 'train={iterations: 8}'` arrives from Snakemake as the string '8'; it is read as YAML and merged
    into the config file's section, so the same value plans nothing and another one retrains."""
    same = snakemake(pipeline, "--configfile", "tiny.yaml", "--config", "train={iterations: 8, ema: 0.9}", "-n")
    assert same.returncode == 0, same.stderr[-3000:]
    assert "Nothing to be done" in same.stdout + same.stderr
    args = ("--configfile", "tiny.yaml", "--config", "train={iterations: 16}", "segment={threshold: 0.6}", "-n")
    changed = snakemake(pipeline, *args, "--quiet", "rules")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert {"train", "predict", "segment", "evaluate"} <= set(planned_jobs(changed.stdout + changed.stderr))
    wrong = snakemake(pipeline, "--configfile", "tiny.yaml", "--config", "train={iterations: many}", "-n")
    assert wrong.returncode != 0 and "many" in wrong.stdout + wrong.stderr


def test_datasets_given_as_a_glob_or_a_folder_run_and_empty_ones_are_named(pipeline, tmp_path):
    """README's own-data example: images as a glob or a folder of TIFF slices plan and run like one stack; a glob
    that matches nothing and a folder without TIFFs stop the workflow with their own messages, unlike a missing
    file (Snakemake's missing input, naming it)."""
    import tifffile

    work = tmp_path / "copy"
    shutil.copytree(pipeline, work, symlinks=True)
    stack = tifffile.imread(work / "results" / "synthetic" / "volume-images.tif")
    (work / "slices").mkdir()
    for z, page in enumerate(stack):
        tifffile.imwrite(work / "slices" / f"z{z:03d}.tif", page)
    (work / "slices" / "notes.txt").write_text("not a slice")
    config = yaml.safe_load((work / "tiny.yaml").read_text())
    config["datasets"]["globbed"] = {"images": "slices/z*.tif", "voxel_size": [50, 4, 4]}
    config["datasets"]["folder"] = {"images": "slices", "voxel_size": [50, 4, 4]}
    config["experiments"]["tiny"]["predict_on"] += ["globbed", "folder"]
    (work / "own.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/tiny/{name}/probabilities.ome.zarr" for name in ("globbed", "folder")]
    run = snakemake(work, *targets, "--configfile", "own.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    reference = open_image(work / "results" / "tiny" / "tiny_volume" / "probabilities.ome.zarr").array[:]
    for target in targets:
        np.testing.assert_array_equal(open_image(work / target).array[:], reference)
    tifffile.imwrite(work / "slices" / "z001.tif", 255 - stack[1])  # a slice changed: both stacks are ingested again
    dry = snakemake(work, *targets, "-n", "--quiet", "rules", "--configfile", "own.yaml")
    assert planned_jobs(dry.stdout + dry.stderr).get("ingest") == 2, dry.stdout + dry.stderr
    (work / "empty").mkdir()
    config["experiments"]["tiny"]["predict_on"].append("bad")
    for images, message in (
        ("nothing/*.tif", "dataset 'bad': images 'nothing/*.tif' is a glob that matches no file"),
        ("empty", "dataset 'bad': images 'empty' is a folder without .tif or .tiff files"),
        ("absent.tif", "absent.tif"),
    ):
        config["datasets"]["bad"] = {"images": images, "voxel_size": [50, 4, 4]}
        (work / "bad.yaml").write_text(yaml.safe_dump(config))
        run = snakemake(work, "--configfile", "bad.yaml", "-n")
        assert run.returncode != 0 and message in run.stdout + run.stderr, run.stdout + run.stderr
    assert "MissingInputException" in run.stdout + run.stderr  # the missing file, as Snakemake names it


def test_a_stack_copied_by_several_jobs_equals_one_copy(pipeline, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(pipeline, work, symlinks=True)
    config = yaml.safe_load((work / "tiny.yaml").read_text())
    config["ingest"] = {"shard_mvoxels": 0.01}  # 3 x 96 x 96 voxels at 10 000 per job: 3 jobs
    config["weights"] = {"shard_mvoxels": 0.01}  # the weight map likewise (the same map: the same key)
    (work / "slabs.yaml").write_text(yaml.safe_dump(config))
    (weights,) = (work / "results" / "data" / "tiny_train").glob("weights-*.ome.zarr")
    stores = [f"results/data/tiny_train/{kind}.ome.zarr" for kind in ("images", "labels")]
    stores.append(str(weights.relative_to(work)))
    for store in stores:
        shutil.rmtree(work / store)
    run = snakemake(work, *stores, "--configfile", "slabs.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    for rule in ("ingest_shard", "weights_label", "weights_merge", "weights_compute"):
        assert f"rule {rule}" in run.stdout + run.stderr
    for store in stores:
        split, whole = open_image(work / store), open_image(pipeline / store)
        assert np.array_equal(split.array[:], whole.array[:]) and split.attrs == whole.attrs
    assert not list((work / "results").rglob("*.done")) and not list((work / "results").rglob("*.partial"))


def test_a_zarr_volume_is_segmented_in_place(pipeline, tmp_path):
    import tifffile
    import zarr

    work = tmp_path / "copy"
    shutil.copytree(pipeline, work, symlinks=True)
    voxels = tifffile.imread(work / "results" / "synthetic" / "volume-images.tif")
    zarr.create_array(str(work / "em.zarr"), data=voxels, chunks=(1, 50, 60))
    config = yaml.safe_load((work / "tiny.yaml").read_text())
    config["datasets"]["em"] = {"images": "em.zarr", "voxel_size": [50, 4, 4]}
    config["experiments"]["tiny"]["predict_on"].append("em")
    (work / "inplace.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, "--configfile", "inplace.yaml", "-n", "--quiet", "rules")
    assert planned_jobs(dry.stdout + dry.stderr) == {"ingest": 1, "predict": 1, "segment": 1, "all": 1}
    run = snakemake(work, "--configfile", "inplace.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    r = work / "results"
    reference = r / "data" / "em" / "images.ome.zarr"
    assert not list(reference.glob("*/c"))  # a reference: no array, no chunk copied
    for kind in ("probabilities", "segmentation"):
        in_place = open_image(r / "tiny" / "em" / f"{kind}.ome.zarr").array[:]
        ingested = open_image(r / "tiny" / "tiny_volume" / f"{kind}.ome.zarr").array[:]
        np.testing.assert_allclose(np.asarray(in_place, np.float32), np.asarray(ingested, np.float32), atol=2e-3)


def test_bad_config_is_refused_with_the_setting_named(tmp_path):
    bad = dict(TINY, train={**TINY["train"], "optimizer": "rmsprop"})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = snakemake(tmp_path, "--configfile", "bad.yaml", "-n")
    assert run.returncode != 0 and "rmsprop" in run.stdout + run.stderr
    missing = dict(TINY, experiments={"tiny": {**TINY["experiments"]["tiny"], "train_on": ["tiny_volume"]}})
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(missing))
    run = snakemake(tmp_path, "--configfile", "missing.yaml", "-n")
    assert run.returncode != 0 and "tiny_volume" in run.stdout + run.stderr and "labels" in run.stdout + run.stderr


@pytest.mark.parametrize("config", ["isbi2012.yaml", "isbi2012_cpu.yaml"])
def test_isbi_config_dry_run_lists_every_stage(isbi_dir, tmp_path, config):
    run = snakemake(tmp_path, "--configfile", str(ROOT / "config" / config), "--config", f"data_root={isbi_dir}", "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run.stdout + run.stderr)
    assert jobs == {
        "ingest": 7,
        "weights_figure": 1,
        "weights": 2,
        "train": 1,
        "export": 1,
        "predict": 2,
        "segment": 2,
        "view": 2,
        "evaluate": 1,
        "training_curves": 1,
        "overlay": 1,
        "report": 1,
        "all": 1,
    }


def test_the_cpu_configs_protocol_runs_four_folds_of_the_same_settings(isbi_dir, tmp_path):
    shipped = yaml.safe_load((ROOT / "config" / "isbi2012_cpu.yaml").read_text())
    protocol = yaml.safe_load((ROOT / "config" / "isbi2012_cpu_cv.yaml").read_text())
    for section in ("weights", "model", "train", "predict", "segment", "evaluate"):
        assert protocol.get(section) == shipped.get(section), section
    run = snakemake(
        tmp_path,
        "--configfile",
        str(ROOT / "config" / "isbi2012_cpu_cv.yaml"),
        "--config",
        f"data_root={isbi_dir}",
        "-n",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run.stdout + run.stderr)
    assert {k: jobs.get(k) for k in ("train", "predict", "segment", "evaluate", "report")} == {
        "train": 4,
        "predict": 4,
        "segment": 4,
        "evaluate": 4,
        "report": 1,
    }


def test_lint_is_clean():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--lint",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(ROOT),
            "--workflow-profile",
            "none",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lints for" not in run.stdout + run.stderr


def test_the_html_report_holds_curves_overlays_charts_and_tables(pipeline):
    r = pipeline / "results" / "report"
    for png in (r / "curves" / "tiny.png", r / "overlays" / "tiny" / "tiny_validation.png", r / "experiments.png"):
        assert png.stat().st_size > 5000, png
    run = snakemake(pipeline, "--configfile", "tiny.yaml", "--report", "report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (pipeline / "report.html").read_text()
    for text in ("Training", "Segmentations", "Metrics", "Weight maps", "unetflow: U-Net segmentation of EM volumes"):
        assert text in html, text
    assert "Configured experiments: tiny." in html
