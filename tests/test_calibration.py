"""Tile size chosen for speed (`unetflow.inference.calibration`, `unetflow calibrate`, `predict --tiles`)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import unetflow.inference.calibration as calibration
from unetflow.inference.budget import block_for_side
from unetflow.inference.calibration import (
    Calibration,
    calibrate,
    calibrated_side,
    candidate_sides,
    load_calibration,
    save_calibration,
)
from unetflow.inference.engines import EagerEngine
from unetflow.models import UNet, UNetConfig
from unetflow.stages.predict import PredictJob, predict_volume

SRC = str(Path(__file__).resolve().parents[1] / "src")
CPU = torch.device("cpu")


def net():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=4, levels=3, dropout=0)).eval()


def test_candidates_run_from_a_quarter_of_the_largest_side_to_it_on_the_pooling_grid():
    assert candidate_sides(1024, 16) == [256, 384, 512, 768, 1024]
    assert candidate_sides(40, 16) == [16, 32]
    assert candidate_sides(4, 4) == [4]


def test_the_side_with_the_least_time_per_voxel_wins(monkeypatch):
    cost = {16: 5.0, 24: 2.0, 32: 3.0, 48: 4.0, 64: 6.0}  # us per voxel, scripted
    monkeypatch.setattr(calibration, "seconds_per_voxel", lambda run, model, side, batch, repeats: cost[side] / 1e6)
    found = calibrate(None, net(), 64, 1, {"device": "test"})
    assert found.side == 24
    assert found.seconds_per_mvoxel == pytest.approx(cost)


def test_a_real_calibration_times_every_candidate():
    model = net()
    found = calibrate(EagerEngine(model, CPU, "fp32"), model, 64, 2, {}, repeats=1)
    assert sorted(found.seconds_per_mvoxel) == candidate_sides(64, 4)
    assert all(t > 0 for t in found.seconds_per_mvoxel.values()) and found.side in found.seconds_per_mvoxel


def test_a_missing_file_is_measured_and_written_and_an_existing_one_is_used_as_it_is(tmp_path, caplog):
    path = tmp_path / "tiles.json"
    machine = {"device": "cpu A", "threads": 1}
    measured = []

    def measure():
        measured.append(1)
        return Calibration(48, {48: 1.0, 64: 2.0}, machine)

    assert calibrated_side(path, machine, measure) == 48 and measured == [1]
    assert load_calibration(path) == Calibration(48, {48: 1.0, 64: 2.0}, machine)
    assert calibrated_side(path, machine, measure) == 48 and measured == [1]
    with caplog.at_level(logging.WARNING):
        assert calibrated_side(path, {"device": "cpu B", "threads": 1}, measure) == 48
    assert measured == [1] and "calibrated with other ['device']" in caplog.text


def test_a_damaged_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "tiles.json"
    path.write_text('{"side": "wide"')
    with pytest.raises(ValueError, match=f"{path}: not a tile calibration"):
        load_calibration(path)


def test_prediction_cuts_its_automatic_blocks_at_the_calibrated_side(tiny_model_and_volume, tmp_path):
    model, volume = tiny_model_and_volume
    tiles = tmp_path / "tiles.json"
    save_calibration(Calibration(32, {32: 1.0, 64: 2.0}, {}), tiles)

    def run(out, tiles=None):
        job = PredictJob(model, volume, str(out), (0, 0, 0), "float32", engine="eager", device="cpu", threads=1)
        job = PredictJob(**{**job.__dict__, "tiles": tiles})
        path = predict_volume(job, memory_mb=64)
        group = zarr.open_group(str(path), mode="r")
        return tuple(group.attrs["unetflow"]["block"]), np.asarray(group["0"][:])

    block, calibrated = run(tmp_path / "c.ome.zarr", str(tiles))
    assert block == block_for_side(net(), (3, 70, 53), 32, 4)
    largest_block, largest = run(tmp_path / "l.ome.zarr")
    assert largest_block != block
    assert np.abs(calibrated - largest).max() <= 1e-5  # seamless either way


def test_calibrate_command_writes_the_file_predict_then_uses(tiny_model_and_volume, tmp_path):
    model, volume = tiny_model_and_volume
    tiles = tmp_path / "tiles.json"
    env = {**os.environ, "PYTHONPATH": SRC}
    settings = json.dumps({"memory_budget_mb": 16, "engine": "eager", "batch_size": 1})
    cmd = [sys.executable, "-m", "unetflow", "calibrate", model, "--out", str(tiles), "--settings", settings]
    done = subprocess.run([*cmd, "--device", "cpu", "--threads", "1"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = load_calibration(tiles)
    assert f"tiles of {found.side} output pixels per side" in done.stdout
    assert found.machine["engine"] == "eager" and found.machine["threads"] == 1 and found.machine["batch"] == 1
    assert found.side in found.seconds_per_mvoxel and len(found.seconds_per_mvoxel) >= 3
