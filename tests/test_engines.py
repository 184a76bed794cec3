"""Engines of the forward pass (`unetflow.inference.engines`): agreement with eager PyTorch, the run-time choice
and its fallback, and prediction through them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

import unetflow.inference.engines as engines
from unetflow.inference.engines import build_engine, engine_difference, resolve_engine
from unetflow.inference.inferer import TileInferer
from unetflow.models import UNet, UNetConfig
from unetflow.stages.predict import PredictJob, predict_volume
from unetflow.store import open_image

CPU = torch.device("cpu")
# OpenVINO's native thread pools stay in the process once started: `make test` runs these tests in a pytest process
# of their own (a plain `pytest` runs them last, conftest), away from the training and torch.compile tests that
# crashed after them in one process
pytestmark = pytest.mark.openvino


def net(**kw):
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=4, levels=3, dropout=0, **kw)).eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_openvino_matches_eager_fp32_within_the_seam_tolerance(dims):
    model = net(dims=dims)
    engine = build_engine("openvino", model, CPU, "fp32")
    shape = (2, 1, *(g.window(2 * g.step)[0] for g in model.geometries))
    assert engine_difference(engine, model, CPU, shape) <= engines.tolerance("fp32")
    with torch.no_grad():
        assert engine(torch.zeros(shape)).shape == model(torch.zeros(shape)).shape


def test_openvino_in_bf16_stays_within_the_bf16_tolerance_and_differs_from_fp32():
    import openvino as ov

    if not engines.openvino_computes_bf16(ov.Core()):
        pytest.skip("OpenVINO computes no bf16 on this CPU (no AVX512-BF16 or AMX)")
    model = net()
    shape = (1, 1, 132, 132)
    difference = engine_difference(build_engine("openvino", model, CPU, "bf16"), model, CPU, shape)
    assert 0 < difference <= engines.tolerance("bf16")


def test_openvino_bf16_without_bf16_instructions_is_refused_and_falls_back_to_eager(monkeypatch):
    model = net()
    monkeypatch.setattr(engines, "openvino_computes_bf16", lambda core: False)
    with pytest.raises(engines.EngineUnavailable, match="would compute fp32 under a bf16 record"):
        build_engine("openvino", model, CPU, "bf16")
    assert resolve_engine("auto", model, CPU, "bf16") == "eager"  # quietly: auto only prefers openvino
    with pytest.warns(UserWarning, match="openvino computes bf16 only on CPUs with bf16 instructions"):
        assert resolve_engine("openvino", model, CPU, "bf16") == "eager"
    assert resolve_engine("openvino", model, CPU, "fp32") == "openvino"


def test_auto_is_openvino_on_cpu_and_eager_on_cuda():
    model = net()
    assert resolve_engine("auto", model, CPU, "fp32") == "openvino"
    assert resolve_engine("eager", model, CPU, "fp32") == "eager"
    if torch.cuda.is_available():
        assert resolve_engine("auto", model, torch.device("cuda"), "bf16") == "eager"


def test_a_missing_engine_falls_back_to_eager_quietly_under_auto_and_with_a_warning_by_name(monkeypatch, recwarn):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    model = net()
    assert resolve_engine("auto", model, CPU, "fp32") == "eager"
    assert not [w for w in recwarn if "engine" in str(w.message)]
    with pytest.warns(UserWarning, match="openvino is not installed"):
        assert resolve_engine("openvino", model, CPU, "fp32") == "eager"


def test_an_engine_outside_the_tolerance_falls_back_to_eager(monkeypatch):
    monkeypatch.setattr(engines, "engine_difference", lambda *a: 3e-5)
    with pytest.warns(UserWarning, match=r"differ from eager PyTorch by 3.00e-05 \(tolerance 1e-05 in fp32\)"):
        assert resolve_engine("openvino", net(), CPU, "fp32") == "eager"


def test_an_unknown_engine_is_refused_by_name():
    with pytest.raises(ValueError, match="predict.engine must be one of"):
        resolve_engine("tensorrt", net(), CPU, "fp32")


def test_the_inferer_runs_its_engine_with_tta():
    model, tiles = net(), np.random.default_rng(0).normal(size=(3, 1, 132, 132)).astype(np.float32)
    eager = TileInferer(model, CPU, batch_size=2, precision="fp32", tta=True)(tiles)
    openvino = TileInferer(model, CPU, batch_size=2, precision="fp32", tta=True, engine="openvino")(tiles)
    assert np.abs(eager - openvino).max() <= engines.tolerance("fp32")


def test_prediction_records_its_engine_and_a_changed_engine_is_a_new_result(tiny_model_and_volume, tmp_path):
    model, volume = tiny_model_and_volume

    def run(engine, out):
        job = PredictJob(model, volume, str(out), (1, 24, 16), "float32", engine=engine, device="cpu", threads=1)
        path = predict_volume(job)
        return zarr.open_group(str(path), mode="r").attrs["unetflow"], np.asarray(open_image(path).array[:])

    auto, from_auto = run("auto", tmp_path / "auto.ome.zarr")
    eager, from_eager = run("eager", tmp_path / "eager.ome.zarr")
    assert auto["engine"] == "openvino" and eager["engine"] == "eager"
    assert auto["provenance"]["settings"]["engine"] == "openvino"
    assert auto["provenance"]["fingerprint"] != eager["provenance"]["fingerprint"]
    assert np.abs(from_auto - from_eager).max() <= engines.tolerance("fp32")


def test_openvino_from_several_threads_gives_each_its_own_answer():
    from concurrent.futures import ThreadPoolExecutor

    model = net()
    engine = build_engine("openvino", model, CPU, "fp32")
    tiles = [torch.randn(1, 1, 132, 132, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with torch.no_grad():
        expected = [model(t) for t in tiles]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(engine, tiles * 4))
    for i, logits in enumerate(found):
        assert torch.allclose(logits, expected[i % 8], atol=1e-4)


def test_an_engine_that_fails_on_a_tile_falls_back_to_eager(monkeypatch):
    def broken(*args):
        raise RuntimeError("cannot compile this graph")

    monkeypatch.setattr(engines.OpenVinoEngine, "__call__", broken)
    with pytest.warns(UserWarning, match="openvino failed on a tile .*cannot compile this graph"):
        assert resolve_engine("auto", net(), CPU, "fp32") == "eager"


def test_openvino_conversion_sends_no_telemetry_and_writes_nothing_to_home(tmp_path):
    """OpenVINO's converter would report to Google Analytics and leave a client id in ~/intel; predict's engine
    keeps its telemetry package from importing (in a fresh process: this one may have imported it already)."""
    script = (
        "import sys, torch; from unetflow.models import UNet, UNetConfig; from unetflow.inference.engines import "
        "build_engine; build_engine('openvino', UNet(UNetConfig(base_width=4, levels=3)).eval(), "
        "torch.device('cpu'), 'fp32'); print(sys.modules.get('openvino_telemetry'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # it stays off in CI
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "None"
    assert not (tmp_path / "intel").exists()
