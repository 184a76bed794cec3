"""Every stage killed midway (SIGKILL, from inside the stage at a chosen write), then re-run: the output equals an
undisturbed run bit for bit, and the killed run leaves nothing that a later stage or Snakemake takes as complete."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, TINY

from unetflow.models.checkpoint import load_checkpoint
from unetflow.store import open_image

pytestmark = pytest.mark.integration

# Runs `unetflow ARGS...` with one kind of write made fatal: the N-th zarr chunk write or CSV write, or the
# training step that reaches iteration N, ends the process with SIGKILL (no cleanup code runs).
KILLER = """
import os, signal, sys
kind, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
count = [0]
def hit():
    count[0] += 1
    if count[0] >= n:
        os.kill(os.getpid(), signal.SIGKILL)
if kind == "zarr":
    import zarr
    original = zarr.Array.__setitem__
    def setitem(self, key, value):
        original(self, key, value)
        hit()
    zarr.Array.__setitem__ = setitem
elif kind == "csv":
    import pandas
    def to_csv(self, path, *a, **kw):
        with open(path, "w") as f:
            f.write("experiment,half a row")
        hit()
    pandas.DataFrame.to_csv = to_csv
elif kind == "train":
    from unetflow.training import trainer
    original = trainer.Trainer.step
    def step(self, batch):
        value = original(self, batch)
        if self.iteration == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return value
    trainer.Trainer.step = step
from unetflow.cli import main
sys.exit(main(args))
"""

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
SCHEDULING = ("checkpoint_every", "workers", "device", "threads", "gpus", "mem_mb", "runtime")


def unetflow(*args, kill=None):
    cmd = [sys.executable, "-c", KILLER, *map(str, kill or ("none", 0)), *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def stage_args(stage, r, out):
    """The command line of `stage` on the tiny pipeline's stores in `r`, writing `out`."""
    (weights,) = (r / "data" / "tiny_train").glob("weights-*.ome.zarr")
    volume = r / "tiny" / "tiny_validation"
    if stage == "ingest":
        return ["ingest", r / "synthetic" / "volume-images.tif", "--out", out, "--chunks", 1, 50, 60]
    if stage == "weights":
        return ["weights", r / "data" / "tiny_train" / "labels.ome.zarr", "--out", out]
    if stage == "train":
        train = {k: v for k, v in TINY["train"].items() if k not in SCHEDULING}
        experiment = {"name": "k", "model": TINY["model"], "train": train, "fold": None}
        data = r / "data" / "tiny_train"
        return [
            "train", "--experiment", json.dumps(experiment), "--images", data / "images.ome.zarr",
            "--labels", data / "labels.ome.zarr", "--weights", weights, "--out", out, "--device", "cpu",
            "--threads", 1, "--workers", 0, "--checkpoint-every", 4,
        ]  # fmt: skip
    if stage == "predict":
        model = r / "models" / "tiny" / "model.pt"
        images = r / "data" / "tiny_volume" / "images.ome.zarr"
        settings = '{"block": [1, 64, 64], "file_mb": 0.016}'  # a file per block: several writes to kill at
        return ["predict", model, images, "--out", out, "--settings", settings, "--device", "cpu"]
    if stage == "segment":
        return ["segment", r / "tiny" / "tiny_volume" / "probabilities.ome.zarr", "--out", out]
    if stage == "evaluate":
        truth = r / "data" / "tiny_validation" / "labels.ome.zarr"
        return ["evaluate", volume / "segmentation.ome.zarr", truth, "--out", out, "--name", "tiny_validation"]
    if stage == "report":
        return ["report", "--metrics", volume / "metrics.csv", "--runs", "tiny", "--out", out]
    raise AssertionError(stage)


# (stage, what is made fatal, at which count, the output a later stage reads)
CASES = [
    ("ingest", "zarr", 2, "out.ome.zarr"),
    ("weights", "zarr", 2, "out.ome.zarr"),
    ("train", "train", 6, "out/model.pt"),
    ("predict", "zarr", 3, "out.ome.zarr"),
    ("segment", "zarr", 1, "out.ome.zarr"),
    ("evaluate", "csv", 1, "out.csv"),
    ("report", "csv", 2, "out/summary.csv"),
]


def same_output(a, b, stage):
    if stage == "train":
        x, y = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    if a.suffix == ".csv" or stage == "report":
        folder_a, folder_b = (a.parent, b.parent) if stage == "report" else (None, None)
        if folder_a is not None:
            return all(
                pd.read_csv(folder_a / n).equals(pd.read_csv(folder_b / n))
                for n in ("metrics.csv", "summary.csv", "cross_validation.csv")
            )
        return a.read_bytes() == b.read_bytes()
    x, y = open_image(a), open_image(b)
    return np.array_equal(np.asarray(x.array[:]), np.asarray(y.array[:])) and x.attrs == y.attrs


@pytest.mark.parametrize(("stage", "kind", "count", "output"), CASES, ids=[c[0] for c in CASES])
def test_a_stage_killed_midway_reruns_to_the_undisturbed_result(pipeline, tmp_path, stage, kind, count, output):
    r = pipeline / "results"
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for d in (reference_dir, killed_dir):
        d.mkdir()
    out_name = output.split("/")[0]
    undisturbed = unetflow(*stage_args(stage, r, reference_dir / out_name))
    assert undisturbed.returncode == 0, undisturbed.stderr[-2000:]
    killed = unetflow(*stage_args(stage, r, killed_dir / out_name), kill=(kind, count))
    assert killed.returncode == -signal.SIGKILL, f"not killed: {killed.returncode} {killed.stderr[-2000:]}"
    target = killed_dir / output
    assert not target.exists(), f"{target} looks complete after a kill"
    if stage != "train":  # what was left (a .partial) is refused by any reader
        for leftover in killed_dir.rglob("*.partial"):
            if leftover.is_dir():
                with pytest.raises(ValueError, match="unfinished output"):
                    open_image(leftover)
    rerun = unetflow(*stage_args(stage, r, killed_dir / out_name))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert same_output(target, reference_dir / output, stage)
    if stage == "train":
        assert "resuming" in rerun.stderr  # from the checkpoint of iteration 4, not from scratch
