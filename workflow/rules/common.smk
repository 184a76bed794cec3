import functools
import json
import math
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

# Rules call `python -m unetflow` with the package source on PYTHONPATH, so any environment holding the
# dependencies runs it: the conda env of envs/unetflow.yaml (--sdm conda), or else the Python environment
# running Snakemake (e.g. the project's .venv), whose bin/ goes first on PATH.
SRC = str(Path(workflow.basedir) / "src")
_PREFIX = f"export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _PREFIX += f'export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; '
shell.prefix(_PREFIX)

# The package's settings (defaults, checks, which stage each setting changes) and provenance (code versions):
# both import only the standard library, PyYAML and jsonschema.
sys.path.insert(0, SRC)
from unetflow.folds import Fold
from unetflow.provenance import digest, stage_code
from unetflow.settings import check, model_changing, result_settings
from unetflow.store import is_remote, is_zarr_source
from unetflow.tiff import is_glob, tiff_files

RESULTS = config["results"]
ENV = "../../envs/unetflow.yaml"
SECTIONS = ("weights", "model", "train", "predict", "segment", "evaluate")
RESERVED = {"data", "models", "report", "logs", "benchmarks", "synthetic"}


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    volume="[A-Za-z0-9_-]+",
    run="[A-Za-z][A-Za-z0-9_-]*(/fold[0-9]+)?",
    wkey="[0-9a-f]{10}",
    stack="train|validation|volume",
    shard="[0-9]+",


def results(path):
    return os.path.join(RESULTS, path)


def as_json(value):
    """Settings as a canonical JSON string: equal settings give equal params (no spurious re-runs)."""
    return json.dumps(value, sort_keys=True)


def done_markers(pattern, jobs):
    """The done-markers of a step split into `jobs(wildcards)` jobs (none for one job): `pattern` under results/,
    with the wildcards of the job that waits for them and {shard}."""

    def markers(wc):
        n = jobs(wc)
        if n == 1:
            return []
        return [results(pattern.format(**dict(wc.items()), shard=i)) for i in range(n)]

    return markers


class Scheduling:
    """Command-line options that decide how a job runs, never its result (threads, devices, workers). Snakemake's
    params trigger skips values it cannot represent as plain data, so these reach the shell command without making
    a change of them re-run anything."""

    def __init__(self, **options):
        self.options = options

    @property
    def words(self):
        """The options as command-line words, for `{params.job.words:q}` (each word quoted)."""
        words = []
        for name, value in self.options.items():
            if value is not None:
                words += [f"--{name.replace('_', '-')}", str(value)]
        return words


def dataset(name):
    if name not in config["datasets"]:
        raise ValueError(
            f"config: dataset {name!r} is used but not defined under 'datasets' "
            f"(defined: {sorted(config['datasets'])})"
        )
    return config["datasets"][name]


def source_path(path):
    return path.replace("{data_root}", config["data_root"])


def has_labels(name):
    return dataset(name)["labels"] is not None


def merged(base, override):
    """`override` merged into `base`, nested sections key by key (lists are replaced)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def resolve_experiment(name, entry):
    """An experiment's data roles and its settings: the top-level sections with its overrides, checked again."""
    if name in RESERVED:
        raise ValueError(
            f"config: experiments.{name}: the name is reserved for other outputs; "
            f"choose a name other than {sorted(RESERVED)}"
        )
    entry = check("experiment", entry, f"experiments.{name}")
    resolved = {
        role: list(entry[role]) for role in ("train_on", "validate_on", "predict_on")
    }
    resolved["folds"] = entry["folds"]
    for section in SECTIONS:
        resolved[section] = check(
            section,
            merged(config[section], entry[section]),
            f"experiments.{name}.{section}",
        )
    if resolved["weights"]["dims"] is None:
        resolved["weights"]["dims"] = resolved["model"]["dims"]
    for role in ("train_on", "validate_on"):
        for d in resolved[role]:
            if not has_labels(d):
                raise ValueError(
                    f"config: experiments.{name}.{role} names dataset {d!r}, which has no 'labels'"
                )
    for d in resolved["predict_on"]:
        dataset(d)
    if resolved["folds"] == 1:
        raise ValueError(
            f"config: experiments.{name}.folds: 1 fold holds nothing out; use 0 (no folds) or k >= 2"
        )
    return resolved


EXPERIMENTS = {
    name: resolve_experiment(name, entry)
    for name, entry in config["experiments"].items()
}


def runs_of(name):
    k = EXPERIMENTS[name]["folds"]
    return [f"{name}/fold{i}" for i in range(k)] if k else [name]


RUNS = {run: name for name in EXPERIMENTS for run in runs_of(name)}


def experiment_of(run):
    return EXPERIMENTS[RUNS[run]]


def fold_of(run):
    """(index, count) of a fold run, else None."""
    _, _, fold = run.partition("/")
    if not fold:
        return None
    return int(fold.removeprefix("fold")), experiment_of(run)["folds"]


def pool(exp):
    """The labelled datasets a cross-validation folds over."""
    return list(dict.fromkeys(exp["train_on"] + exp["validate_on"]))


def run_volumes(run):
    """What a run predicts: its datasets to segment, and in a fold the held-out slices of the pool."""
    exp = experiment_of(run)
    if fold_of(run) is None:
        return exp["predict_on"]
    return pool(exp) + [v for v in exp["predict_on"] if v not in pool(exp)]


def evaluated_volumes(run):
    return [v for v in run_volumes(run) if has_labels(v)]


def images_zarr(name):
    return results(f"data/{name}/images.ome.zarr")


def labels_zarr(name):
    return results(f"data/{name}/labels.ome.zarr")


def weights_key(exp):
    """Weight maps are keyed by their settings: experiments with other settings never share or overwrite one."""
    return digest(weight_settings(exp))[:10]


def weight_settings(exp):
    """The weight-map settings of an experiment that change the map."""
    return result_settings("weights", exp["weights"], "weights")


WEIGHT_SETTINGS = {
    weights_key(exp): weight_settings(exp) for exp in EXPERIMENTS.values()
}
# How a map is split into jobs: the first experiment's scheduling settings for a key.
WEIGHT_JOBS = {}
for _exp in EXPERIMENTS.values():
    WEIGHT_JOBS.setdefault(weights_key(_exp), _exp["weights"])


def weights_jobs(wildcards):
    """Jobs per step of a weight map: `weights.shards`, or one per `weights.shard_mvoxels` of the label volume."""
    w = WEIGHT_JOBS[wildcards.wkey]
    if w["shards"]:
        return w["shards"]
    shape = dataset_shape(wildcards.dataset, "labels")
    voxels = math.prod(shape) if shape else 0
    return max(1, math.ceil(voxels / (w["shard_mvoxels"] * 1e6)))


def weights_zarr(name, exp):
    return results(f"data/{name}/weights-{weights_key(exp)}.ome.zarr")


def has_local_images(name):
    """Whether a dataset's images are copied into results (a TIFF source), not read in place (zarr, URL)."""
    return not is_zarr_source(source_path(dataset(name)["images"]))


def export_images(wildcards):
    """The images an exported model's test tile is cut from: the run's first validation dataset, else training."""
    exp = experiment_of(wildcards.run)
    return images_zarr((exp["validate_on"] or exp["train_on"])[0])


def model_file(run):
    return results(f"models/{run}/model.pt")


def training_data(run):
    """(training datasets, validation datasets) of a run; a fold trains and validates on the pool."""
    exp = experiment_of(run)
    if fold_of(run) is not None:
        return pool(exp), []
    return exp["train_on"], exp["validate_on"]


def train_inputs(wildcards):
    exp = experiment_of(wildcards.run)
    train, validation = training_data(wildcards.run)
    return {
        "images": [images_zarr(d) for d in train],
        "labels": [labels_zarr(d) for d in train],
        "weights": [weights_zarr(d, exp) for d in train],
        "val_images": [images_zarr(d) for d in validation],
        "val_labels": [labels_zarr(d) for d in validation],
    }


def train_experiment(wildcards):
    """The run as the train stage reads it: exactly the settings that change the trained model."""
    exp = experiment_of(wildcards.run)
    train = model_changing(exp["train"])
    fold = fold_of(wildcards.run)
    return as_json(
        {
            "name": wildcards.run,
            "model": exp["model"],
            "train": train,
            "fold": {"index": fold[0], "count": fold[1]} if fold else None,
        }
    )


def predict_settings(wildcards):
    """The predict settings that change a result; where the block is automatic, what decides its size too."""
    p = experiment_of(wildcards.run)["predict"]
    settings = result_settings("predict", p, "predict")
    if 0 in p["block"]:
        settings.update(
            memory_budget_mb=p["memory_budget_mb"], batch_size=p["batch_size"]
        )
    return as_json(settings)


def predict_fold(wildcards):
    """`--fold I/K` where a fold run predicts the held-out slices of a pool dataset, else nothing (as words)."""
    fold = fold_of(wildcards.run)
    if fold is None or wildcards.volume not in pool(experiment_of(wildcards.run)):
        return []
    return ["--fold", f"{fold[0]}/{fold[1]}"]


@functools.cache
def dataset_shape(name, key="images"):
    """(z, y, x) of a dataset's images (or labels) as ingested, from its source's headers; None while the source
    is yet to be made by a rule of the workflow (the synthetic data)."""
    from unetflow.stages.ingest import source_shape

    try:
        shape = source_shape(source_path(dataset(name)[key]))
    except FileNotFoundError:
        return None
    z_range = dataset(name)["z_range"]
    return (z_range[1] - z_range[0], *shape[1:]) if z_range else shape


def ingest_jobs(wildcards):
    """Copying jobs of a dataset's images or labels: one for a store used in place, else `ingest.shards`, or one
    per `ingest.shard_mvoxels` of the stack."""
    key = "labels" if wildcards.kind == "labels" else "images"
    if key == "images" and is_zarr_source(ingest_path(wildcards)):
        return 1
    if config["ingest"]["shards"]:
        return config["ingest"]["shards"]
    shape = dataset_shape(wildcards.dataset, key)
    voxels = math.prod(shape) if shape else 0
    return max(1, math.ceil(voxels / (config["ingest"]["shard_mvoxels"] * 1e6)))


ingest_steps = done_markers(
    "data/{dataset}/ingest_shards/{kind}{shard}.done", lambda wc: ingest_jobs(wc)
)


def predicted_voxels(run, volume):
    """Voxels a run predicts of a volume (a fold's held-out slices of a pool dataset); None if not known yet."""
    shape = dataset_shape(volume)
    if shape is None:
        return None
    fold = fold_of(run)
    z = shape[0]
    if fold is not None and volume in pool(experiment_of(run)):
        start, stop = Fold(*fold).held_out(z)
        z = stop - start
    return z * shape[1] * shape[2]


def jobs_of(stage):
    """Jobs per volume of a run for a stage split into jobs: `<stage>.shards`, or with 0 one per
    `<stage>.shard_mvoxels` of the volume (one job where its size is not known when the workflow is planned).
    """

    def jobs(wildcards):
        s = experiment_of(wildcards.run)[stage]
        if s["shards"]:
            return s["shards"]
        voxels = predicted_voxels(wildcards.run, wildcards.volume)
        return max(1, math.ceil((voxels or 0) / (s["shard_mvoxels"] * 1e6)))

    return jobs


shards = jobs_of("predict")
segment_jobs = jobs_of("segment")


def segment_steps(step):
    """The done-markers of one step's jobs of a volume split into segmentation jobs."""
    return done_markers(
        f"{{run}}/{{volume}}/segment_shards/{step}{{shard}}.done", segment_jobs
    )


def weights_steps(step):
    """The done-markers of one step's jobs of a label volume split into weight-map jobs."""
    return done_markers(
        f"data/{{dataset}}/weights_shards/{{wkey}}-{step}{{shard}}.done", weights_jobs
    )


def tile_calibration(run):
    """The run's tile calibration file where predict.calibrate is on and the block automatic, else None."""
    p = experiment_of(run)["predict"]
    return (
        results(f"models/{run}/tiles.json")
        if p["calibrate"] and 0 in p["block"]
        else None
    )


def predict_job(wildcards):
    """How a run's prediction jobs run (scheduling only; the calibration file is an input of the job)."""
    p = experiment_of(wildcards.run)["predict"]
    return Scheduling(
        memory_mb=p["memory_budget_mb"],
        batch_size=p["batch_size"],
        scheduler=p["scheduler"],
        workers=p["workers"],
        device=p["device"],
        tiles=tile_calibration(wildcards.run),
    )


def section(stage, name):
    """A stage's result-changing settings of an experiment's section, as JSON (for params)."""
    return lambda wildcards: as_json(
        result_settings(name, experiment_of(wildcards.run)[name], stage)
    )


def setting(name, key):
    """One setting of a run's experiment (threads, resources)."""
    return lambda wildcards: experiment_of(wildcards.run)[name][key]


def all_outputs():
    outputs = []
    for run in RUNS:
        outputs.append(model_file(run))  # trained even where nothing is to be segmented
        if (
            fold_of(run) is None
        ):  # the model to ship, and views; a fold's model only measures the protocol
            outputs.append(results(f"models/{run}/bioimageio.zip"))
            outputs += [
                results(f"{run}/{v}/view.ome.zarr")
                for v in run_volumes(run)
                if has_local_images(v)
            ]
        outputs.append(results(f"report/curves/{run}.png"))
        outputs += [
            results(f"report/overlays/{run}/{v}.png") for v in evaluated_volumes(run)
        ]
        outputs += [
            results(f"{run}/{v}/segmentation.ome.zarr") for v in run_volumes(run)
        ]
    for exp in EXPERIMENTS.values():
        outputs += [
            results(f"report/weights/{d}-{weights_key(exp)}.png")
            for d in exp["train_on"][:1]
        ]
    if any(evaluated_volumes(run) for run in RUNS):
        outputs += [
            results(f"report/{t}.csv")
            for t in ("metrics", "summary", "cross_validation", "volumes")
        ]
        outputs += [results("report/experiments.png"), results("report/tables.html")]
    return list(dict.fromkeys(outputs))


def ingest_path(wildcards):
    """What ingest reads: a TIFF source, or a zarr store to copy (labels) or to use in place (images)."""
    d = dataset(wildcards.dataset)
    key = "labels" if wildcards.kind == "labels" else "images"
    if d[key] is None:
        raise ValueError(f"config: dataset {wildcards.dataset!r} has no {key!r}")
    return source_path(d[key])


def ingest_source(wildcards):
    """The source as input files of the ingest job: a URL is no file (its fingerprint names it instead); a glob or a
    folder of TIFF slices is its files, so that a changed slice re-runs ingest. A glob that matches nothing and a
    folder without TIFFs are refused here, by name; a missing file is left to Snakemake (a rule may make it).
    """
    path = ingest_path(wildcards)
    if is_remote(path):
        return []
    if is_zarr_source(path) or not (is_glob(path) or os.path.isdir(path)):
        return path
    files = tiff_files(path)
    if not files:
        key = "labels" if wildcards.kind == "labels" else "images"
        where = f"config: dataset {wildcards.dataset!r}: {key} {path!r}"
        what = (
            "a glob that matches no file"
            if is_glob(path)
            else "a folder without .tif or .tiff files"
        )
        raise ValueError(f"{where} is {what}")
    return files


def ingest_options(wildcards):
    """Every setting that changes an ingested store, as command-line words."""
    d = dataset(wildcards.dataset)
    words = ["--voxel-size", *map(str, d["voxel_size"]), "--unit", d["unit"]]
    words += ["--chunks", *map(str, config["ingest"]["chunks"])]
    if d["z_range"] is not None:
        words += ["--z-range", *map(str, d["z_range"])]
    if wildcards.kind == "labels" and d["label_convention"] is not None:
        words += ["--label-convention", d["label_convention"]]
    return words
