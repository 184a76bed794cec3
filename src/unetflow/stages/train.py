"""Train: an experiment's network on its labelled stores, into `model.pt` and `train_log.csv`.

The run's fingerprint names every input store by content (`unetflow.provenance`), the experiment's
result-changing settings and this stage's code: a checkpoint left by a killed job is resumed only when it was made
by the same fingerprint. In a cross-validation fold the labelled stores are the pool: the fold's held-out slices
of each validate, the rest train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from unetflow.experiment import Experiment
from unetflow.provenance import input_fingerprint, make_record, stage_code
from unetflow.store import open_image
from unetflow.training.data import load_slices, load_validation
from unetflow.training.trainer import train


def run(
    experiment: Experiment,
    images: Sequence[str],
    labels: Sequence[str],
    weights: Sequence[str] | None,
    val_images: Sequence[str],
    val_labels: Sequence[str],
    out: str | Path,
    device: str = "auto",
    threads: int | None = None,
    job: dict[str, int | None] | None = None,
) -> Path:
    """Train `experiment` and write its model into the folder `out`; returns the model's path. `job` may set the
    settings that only schedule work (`workers`, `checkpoint_every`)."""
    weights = list(weights or [])
    if len(images) != len(labels) or (weights and len(weights) != len(labels)):
        raise ValueError("train: --images, --labels (and --weights) need the same number of paths")
    if len(val_images) != len(val_labels):
        raise ValueError("train: --val-images and --val-labels need the same number of paths")
    train_ranges = val_ranges = None
    if experiment.fold is not None:
        if val_images:
            raise ValueError("train: a cross-validation fold validates on its held-out slices; give no --val-images")
        depths = [open_image(p).shape[0] for p in images]
        train_ranges = [experiment.fold.training_ranges(n) for n in depths]
        val_ranges = [[experiment.fold.held_out(n)] for n in depths]
        val_images, val_labels = list(images), list(labels)
    paths = {"images": images, "labels": labels, "weights": weights, "val_images": val_images, "val_labels": val_labels}
    inputs = {f"{role}/{i}": input_fingerprint(p) for role, group in paths.items() for i, p in enumerate(group)}
    provenance = make_record(inputs, experiment.to_dict(), stage_code("train"))
    model = experiment.model
    data = load_slices(
        list(images),
        list(labels),
        weights or None,
        dims=int(model["dims"]),
        slice_context=int(model["slice_context"]),
        ranges=train_ranges,
    )
    validation = load_validation(list(val_images), list(val_labels), val_ranges)
    scheduling = {k: v for k, v in (job or {}).items() if v is not None}
    settings = replace(experiment.train, **scheduling)
    return train(model, settings, data, validation, out, device, threads, provenance)
