import json
import os
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

# Rules call `python -m unetflow` with the package source on PYTHONPATH, so any environment holding the
# dependencies runs it: the conda env of envs/unetflow.yaml (--sdm conda), or else the Python environment
# running Snakemake (e.g. the project's .venv), whose bin/ goes first on PATH.
SRC = str(Path(workflow.basedir) / "src")
_PREFIX = f'export PYTHONPATH="{SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; '
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _PREFIX += f'export PATH="{os.path.dirname(sys.executable)}:$PATH"; '
shell.prefix(_PREFIX)
RESULTS = config["results"]
EXPERIMENT = config["experiment"]["name"]
ENV = "../../envs/unetflow.yaml"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    experiment="[A-Za-z0-9_-]+",
    stack="train|validation|volume",
    shard="[0-9]+",


def results(path):
    return os.path.join(RESULTS, path)


def as_json(value):
    """Settings as a canonical JSON string: equal settings give equal params (no spurious re-runs)."""
    return json.dumps(value, sort_keys=True)


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


RESERVED = {"data", "models", "report", "logs", "benchmarks", "synthetic"}


def check_experiment():
    exp = config["experiment"]
    if exp["name"] in RESERVED:
        raise ValueError(
            f"config: experiment.name {exp['name']!r} is reserved for other outputs; "
            f"choose a name other than {sorted(RESERVED)}"
        )
    for role in ("train", "validation"):
        for name in exp[role]:
            if not has_labels(name):
                raise ValueError(
                    f"config: experiment.{role} names dataset {name!r}, which has no 'labels'"
                )
    for name in exp["predict"]:
        dataset(name)


check_experiment()


def images_zarr(name):
    return results(f"data/{name}/images.ome.zarr")


def labels_zarr(name):
    return results(f"data/{name}/labels.ome.zarr")


def weights_zarr(name):
    return results(f"data/{name}/weights.ome.zarr")


def model_file():
    return results(f"models/{EXPERIMENT}/model.pt")


def volume_dir(volume):
    return results(f"{EXPERIMENT}/{volume}")


def evaluated_volumes():
    return [v for v in config["experiment"]["predict"] if has_labels(v)]


def all_outputs():
    outputs = [
        results(f"{EXPERIMENT}/{v}/segmentation.ome.zarr")
        for v in config["experiment"]["predict"]
    ]
    outputs += [
        results(f"report/weights_{d}.png") for d in config["experiment"]["train"][:1]
    ]
    if evaluated_volumes():
        outputs += [results("report/metrics.csv"), results("report/summary.csv")]
    return outputs


def ingest_source(wildcards):
    d = dataset(wildcards.dataset)
    key = "labels" if wildcards.kind == "labels" else "images"
    if d[key] is None:
        raise ValueError(f"config: dataset {wildcards.dataset!r} has no {key!r}")
    return source_path(d[key])


def ingest_params(wildcards):
    d = dataset(wildcards.dataset)
    args = ["--voxel-size", *map(str, d["voxel_size"]), "--unit", d["unit"]]
    if d["z_range"] is not None:
        args += ["--z-range", *map(str, d["z_range"])]
    return " ".join(args)


def predict_command(shard_option):
    """The predict shell command; `shard_option` selects one shard, the gather step, or (empty) everything."""
    return (
        "python -m unetflow predict {input.model} {input.images} {params.out} --block {params.block} "
        "--memory-mb {params.memory_mb} --dtype {params.dtype} {params.tta} --precision {params.precision} "
        "--batch-size {params.batch_size} "
        "--scheduler {params.scheduler} --workers {params.workers} --device {params.device} --threads {threads} "
        + shard_option
        + " > {log} 2>&1"
    )


def predict_params():
    """Every setting that changes a prediction, for the predict rules' params."""
    p = config["predict"]
    return dict(
        out=lambda wc: results(f"{wc.experiment}/{wc.volume}/probabilities.ome.zarr"),
        block=" ".join(map(str, p["block"])),
        memory_mb=p["memory_budget_mb"],
        dtype=p["dtype"],
        tta="--tta" if p["tta"] else "",
        precision=p["precision"],
        batch_size=p["batch_size"],
        scheduler=p["scheduler"],
        workers=p["workers"],
        device=p["device"],
    )
