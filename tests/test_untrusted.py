"""Untrusted files and strings: model files load as data only, and nothing in a config reaches a shell unquoted."""

import copy
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, TINY, snakemake

from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import load_checkpoint, load_model, save_checkpoint

SRC = str(ROOT / "src")


class _Payload:
    """Pickles into a call of os.system: what a malicious model file carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_model_file_that_carries_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "model.pt"
    model = UNet(UNetConfig(base_width=2, levels=2))
    payload = {"model": model.config.to_dict(), "state_dict": model.state_dict(), "x": _Payload(f"touch {marker}")}
    torch.save(payload, evil)
    with pytest.raises(ValueError, match=r"model\.pt: refused to load"):
        load_checkpoint(evil)
    # Through the command line, as `unetflow predict` would read it.
    volume = tmp_path / "v.tif"
    import numpy as np
    import tifffile

    tifffile.imwrite(volume, np.zeros((1, 32, 32), np.uint8))
    cmd = [sys.executable, "-m", "unetflow", "predict", str(evil), str(volume), "--out", str(tmp_path / "p.ome.zarr")]
    run = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
    assert run.returncode == 1 and "refused to load" in run.stderr
    assert not marker.exists()


def test_the_pipelines_own_checkpoints_load_as_data(tmp_path):
    model = UNet(UNetConfig(base_width=2, levels=2))
    save_checkpoint(tmp_path / "m.pt", model, iteration=3, best={"iteration": 3, "rand_error": 0.1}, log=[{"a": 1.0}])
    loaded, payload = load_model(tmp_path / "m.pt")
    assert payload["iteration"] == 3 and isinstance(loaded, UNet)


def test_a_garbage_model_file_names_the_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"model\.pt"):
        load_checkpoint(bad)


INJECTIONS = ["$(touch {marker})", "`touch {marker}`", "x;touch {marker};y", 'it\'s "quoted"']


@pytest.mark.integration
def test_paths_with_spaces_and_shell_syntax_run_as_plain_names(pipeline, tmp_path):
    """Dataset paths full of shell syntax are read as the files they name; no command in them runs."""
    marker = tmp_path / "marker"
    folder = tmp_path / "data with space"
    folder.mkdir()
    config = copy.deepcopy(TINY)
    config["datasets"] = {}
    for i, pattern in enumerate(INJECTIONS):
        name = pattern.format(marker=marker).replace("/", "_")
        shutil.copy(pipeline / "results" / "synthetic" / "train-images.tif", folder / f"{name}.tif")
        shutil.copy(pipeline / "results" / "synthetic" / "train-labels.tif", folder / f"{name} labels.tif")
        config["datasets"][f"d{i}"] = {
            "images": f"{{data_root}}/{name}.tif",
            "labels": f"{{data_root}}/{name} labels.tif",
        }
    config["data_root"] = str(folder)
    config["experiments"] = {"tiny": {"train_on": ["d0"], "predict_on": ["d0"]}}
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/data/d{i}/{kind}.ome.zarr" for i in range(len(INJECTIONS)) for kind in ("images", "labels")]
    run = snakemake(tmp_path, *targets, "--configfile", "odd.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not marker.exists()
    assert all((tmp_path / t).is_dir() for t in targets)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("results",), "r;touch {marker};x"),
        (("datasets", "tiny_train", "unit"), "nm; touch {marker}; echo"),
        (("train", "device"), "cpu; touch {marker}"),
        (("predict", "device"), "$(touch {marker})"),
        (("predict", "scheduler"), "threads`touch {marker}`"),
    ],
)
def test_free_text_settings_that_could_reach_a_shell_are_refused(tmp_path, path, value):
    marker = tmp_path / "marker"
    config = copy.deepcopy(TINY)
    target = config
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value.format(marker=marker)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "--configfile", "bad.yaml")
    assert run.returncode != 0 and "does not match" in run.stdout + run.stderr
    assert path[-1] in run.stdout + run.stderr
    assert not marker.exists()
