"""Re-runs of exactly what changed: every setting of the schema (dry runs), and real re-runs after a changed
setting, labels rewritten in place and a changed stage's code, compared bit for bit with fresh runs."""

import copy
import shutil

import numpy as np
import pytest
import tifffile
import torch
import yaml
from conftest import ROOT, TINY, planned_jobs, snakemake

from unetflow.models.checkpoint import load_checkpoint
from unetflow.settings import leaves, schema, stage_of

pytestmark = pytest.mark.integration

# What a changed result of each stage re-runs in the tiny pipeline (one experiment, no folds, one shard).
DOWNSTREAM = {
    "evaluate": {"evaluate", "report"},
    "segment": {"segment", "view", "evaluate", "overlay", "report"},
    "predict": {"predict", "segment", "view", "evaluate", "overlay", "report"},
    "train": {"train", "training_curves", "export", "predict", "segment", "view", "evaluate", "overlay", "report"},
}
DOWNSTREAM["weights"] = DOWNSTREAM["train"] | {"weights", "weights_figure"}
DOWNSTREAM["ingest"] = DOWNSTREAM["weights"] | {"ingest"}
DOWNSTREAM["synthesize"] = DOWNSTREAM["ingest"] | {"synthesize"}
# A new results folder re-runs everything from ingest (the tiny datasets name their TIFFs under results/ literally).
DOWNSTREAM["all"] = DOWNSTREAM["ingest"]
# Settings whose change the tiny pipeline cannot show, and why.
NOT_IN_TABLE = {
    ("data_root",): "the tiny datasets' paths do not contain {data_root}",
}
# Values for settings whose schema gives no obvious other value.
OTHER = {
    ("results",): "elsewhere",
    ("train", "device"): "cpu",
    ("predict", "device"): "cpu",
    ("predict", "scheduler"): "local",
    ("datasets", "tiny_train", "images"): "results/synthetic/validation-images.tif",
    ("datasets", "tiny_train", "labels"): "results/synthetic/validation-labels.tif",
    ("datasets", "tiny_train", "unit"): "micrometer",
    ("datasets", "tiny_train", "z_range"): [0, 2],
    ("model", "pool"): [1, 2, 2],
    ("weights", "dims"): 3,
    ("evaluate", "thresholds"): [0.3, 0.6],
    ("weights", "connectivity"): 8,
    ("predict", "block"): [1, 32, 32],
    ("predict", "shards"): 1,  # the tiny volumes' automatic number: nothing to re-run (3 jobs: test_workflow)
    ("model", "deep_supervision"): True,
    ("model", "cat_width"): 8,
    ("model", "classification_guided"): True,
}
# Settings that reach further than their stage, and why.
REACH = {
    ("model", "dims"): DOWNSTREAM["weights"],  # weights.dims (null) follows model.dims
    ("datasets", "tiny_train", "images"): DOWNSTREAM["ingest"] - {"weights"},  # weight maps read labels only
}


def settings_table():
    """(path, schema) of every setting: the top-level ones, the sections', and one dataset's."""
    root = schema()
    for key, node in root["properties"].items():
        if key in ("datasets", "experiments"):
            continue
        yield from leaves(node, (key,))
    yield from leaves(root["$defs"]["dataset"], ("datasets", "tiny_train"))


def current(config, path):
    value = config
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def default_of(leaf):
    if "default" in leaf:
        return leaf["default"]
    return None


def other_value(path, leaf, value):
    """A valid value other than `value` for a setting."""
    if path in OTHER:
        return OTHER[path]
    if "enum" in leaf:
        return next(v for v in leaf["enum"] if v != value and v is not None)
    kind = leaf.get("type")
    if kind == "boolean":
        return not value
    if kind == "integer":
        top = leaf.get("maximum")
        return value + 1 if top is None or value + 1 <= top else value - 1
    if kind == "number":
        top = leaf.get("maximum", leaf.get("exclusiveMaximum"))
        if top is None:
            return value * 1.5 + 1
        return (value + top) / 2 if value < top else value / 2
    if kind == "array" or "$ref" in leaf:
        return [v + 1 for v in value]
    raise AssertionError(f"no other value known for {path}: add it to OTHER")


def changed_config(path, leaf):
    config = copy.deepcopy(TINY)
    value = current(config, path)
    value = default_of(leaf) if value is None else value
    target = config
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = other_value(path, leaf, value)
    return config


TABLE = [(path, leaf) for path, leaf in settings_table() if path not in NOT_IN_TABLE]


def test_every_setting_is_annotated_and_described():
    for path, leaf in settings_table():
        assert leaf.get("description"), f"{'.'.join(path)} has no description"
        stage = stage_of(leaf)
        assert stage is None or stage in DOWNSTREAM, f"{'.'.join(path)}: unknown stage {stage!r}"


@pytest.mark.parametrize(("path", "leaf"), TABLE, ids=[".".join(p) for p, _ in TABLE])
def test_a_changed_setting_plans_exactly_its_stage_and_what_follows(pipeline, tmp_path, path, leaf):
    config = changed_config(path, leaf)
    config_file = tmp_path / "changed.yaml"
    config_file.write_text(yaml.safe_dump(config))
    run = snakemake(pipeline, "--configfile", str(config_file), "-n", "--quiet", "rules", "--nolock")
    assert run.returncode == 0, run.stderr[-3000:]
    planned = set(planned_jobs(run.stdout + run.stderr)) - {"all"}
    stage = stage_of(leaf)
    expected = set() if stage is None else set(REACH.get(path, DOWNSTREAM[stage]))
    assert planned == expected, f"{'.'.join(path)} -> {current(config, path)!r}"


def copy_run(source, target):
    shutil.copytree(source, target, symlinks=True)
    return target


def state_dict(work, run="tiny"):
    return load_checkpoint(work / "results" / "models" / run / "model.pt")["state_dict"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def differs(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


MODEL = "results/models/tiny/model.pt"


def test_changed_sigma_retrains_from_scratch_bit_for_bit(pipeline, tmp_path):
    config = copy.deepcopy(TINY)
    config["weights"] = {"sigma": 8.0}
    rerun = copy_run(pipeline, tmp_path / "rerun")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for work in (rerun, fresh):
        (work / "sigma.yaml").write_text(yaml.safe_dump(config))
        run = snakemake(work, MODEL, "--configfile", "sigma.yaml")
        assert run.returncode == 0, run.stderr[-3000:]
    assert_same(state_dict(rerun), state_dict(fresh))
    assert differs(state_dict(rerun), state_dict(pipeline))
    log = (rerun / "results" / "logs" / "train" / "tiny.log").read_text()
    assert "discarding" in log and "resuming" not in log
    # Both weight maps are kept, each under its own settings' key.
    assert len(list((rerun / "results" / "data" / "tiny_train").glob("weights-*.ome.zarr"))) == 2


def test_labels_rewritten_in_place_retrain_from_scratch_bit_for_bit(pipeline, tmp_path):
    rerun = copy_run(pipeline, tmp_path / "rerun")
    labels_file = rerun / "results" / "synthetic" / "train-labels.tif"
    labels = tifffile.imread(labels_file)
    labels[:, 40:56, :] = 0  # a membrane band drawn across every slice
    tifffile.imwrite(labels_file, labels, photometric="minisblack", metadata={"axes": "ZYX"})
    fresh = tmp_path / "fresh"
    (fresh / "results").mkdir(parents=True)
    shutil.copytree(rerun / "results" / "synthetic", fresh / "results" / "synthetic")
    for work in (rerun, fresh):
        run = snakemake(work, MODEL, "--configfile", str(pipeline / "tiny.yaml"))
        assert run.returncode == 0, run.stderr[-3000:]
    assert_same(state_dict(rerun), state_dict(fresh))
    assert differs(state_dict(rerun), state_dict(pipeline))


def test_a_changed_stage_code_reruns_that_stage_and_what_follows(pipeline, tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy2(ROOT / "Snakefile", checkout / "Snakefile")
    for part in ("workflow", "src", "envs", "config"):
        shutil.copytree(ROOT / part, checkout / part, symlinks=True)
    segment = checkout / "src" / "unetflow" / "stages" / "segment.py"
    original = segment.read_text()

    def planned():
        run = snakemake(
            pipeline,
            "--configfile",
            "tiny.yaml",
            "-n",
            "--quiet",
            "rules",
            "--nolock",
            snakefile=checkout / "Snakefile",
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return set(planned_jobs(run.stdout + run.stderr)) - {"all"}

    assert planned() == set()
    code = "dtype = np.uint32 if numbering.count < 2**32 else np.uint64"
    assert '"""Every step in this process' in original and code in original
    segment.write_text(
        original.replace('"""Every step in this process', '"""All steps in this process') + "\n# a comment\n"
    )
    assert planned() == set(), "docstrings and comments are not code"
    segment.write_text(original.replace(code, code.replace("< 2**32", "<= 2**32 - 1"), 1))
    assert planned() == DOWNSTREAM["segment"]
    segment.write_text(original)
    trainer = checkout / "src" / "unetflow" / "training" / "trainer.py"
    trainer.write_text(trainer.read_text().replace("iteration += 1", "iteration = iteration + 1"))
    assert planned() == DOWNSTREAM["train"]


def test_recorded_fingerprints_name_inputs_by_content(pipeline):
    from unetflow.provenance import recorded

    r = pipeline / "results"
    labels = recorded(r / "data" / "tiny_train" / "labels.ome.zarr")
    (weights,) = (r / "data" / "tiny_train").glob("weights-*.ome.zarr")
    assert recorded(weights)["inputs"] == {"labels": labels["fingerprint"]}
    segmentation = recorded(r / "tiny" / "tiny_volume" / "segmentation.ome.zarr")
    probabilities = recorded(r / "tiny" / "tiny_volume" / "probabilities.ome.zarr")
    assert segmentation["inputs"] == {"probabilities": probabilities["fingerprint"]}
    assert probabilities["settings"]["block"] == [1, 64, 64] and np.isscalar(probabilities["settings"]["tta"])
