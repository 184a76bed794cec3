"""Export to bioimage.io: the exported network equals the pipeline's prediction and tiles seamlessly with its halo;
the package validates with bioimageio.spec and its test tensors run with bioimageio.core."""

import zipfile

import numpy as np
import pytest
import torch
import yaml

from unetflow.image import as_zyx
from unetflow.intensity import image_stats
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
from unetflow.models.exported import ExportedNetwork
from unetflow.stages.export import export_model, tile_sizes
from unetflow.stages.predict import PredictJob, predict_volume
from unetflow.store import create_image, open_image


def _checkpoint(path, **settings):
    torch.manual_seed(0)
    save_checkpoint(path, UNet(UNetConfig(base_width=4, levels=3, dropout=0, **settings)))
    return path


def _volume(path, shape, seed=0):
    data = np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)
    create_image(path, data.shape, np.uint8, data.shape, voxel_size=(50, 4, 4))[:] = data
    return path


def test_the_exported_network_equals_the_pipeline_and_tiles_seamlessly_with_its_halo(tmp_path):
    model = _checkpoint(tmp_path / "model.pt")
    volume = _volume(tmp_path / "v.ome.zarr", (1, 64, 76))
    job = PredictJob(str(model), str(volume), str(tmp_path / "p.ome.zarr"), (1, 64, 76), "float32", device="cpu")
    pipeline = np.asarray(open_image(predict_volume(job)).array[:])[:, 0]  # (classes, y, x) of the one slice
    settings = torch.load(model, weights_only=True)
    exported = ExportedNetwork(settings["model"])
    exported.net.load_state_dict(settings["state_dict"])
    exported.eval()
    image = as_zyx(open_image(volume))
    x = torch.from_numpy(image_stats(image).normalize(np.asarray(image.array[0])))[None, None]
    with torch.no_grad():
        whole = exported(x)[0].numpy()
    np.testing.assert_allclose(whole, pipeline, atol=1e-5)  # both mirror at the image's borders
    (_, _, halo_y), (smallest, step, halo) = tile_sizes(settings["model"])
    assert (smallest, step, halo) == (44, 4, 20) and halo_y == 20
    tiled = np.full_like(whole, np.nan)
    for start in (0, 12):  # two tiles of 64 overlapping by 2 halos; each keeps its interior (and the image border)
        with torch.no_grad():
            tile = exported(x[..., start : start + 64])[0].numpy()
        keep = slice(0 if start == 0 else halo, 64 if start + 64 == 76 else 64 - halo)
        tiled[..., start + keep.start : start + keep.stop] = tile[..., keep]
    assert not np.isnan(tiled).any()
    np.testing.assert_allclose(tiled, pipeline, atol=1e-5)
    with torch.no_grad():  # without the halo cropped, the tile's mirrored border differs: the halo is needed
        cut = exported(x[..., 12:76])[0].numpy()
    assert np.abs(cut[..., :halo] - pipeline[..., 12 : 12 + halo]).max() > 1e-3


def test_the_package_validates_and_bioimageio_core_reproduces_its_test_output(tmp_path):
    spec = pytest.importorskip("bioimageio.spec")
    core = pytest.importorskip("bioimageio.core")
    model = _checkpoint(tmp_path / "model.pt", slice_context=1)  # 2.5D: three slices as channels
    volume = _volume(tmp_path / "v.ome.zarr", (5, 90, 110))
    package = export_model(model, volume, tmp_path / "model.bioimageio.zip", name="tiny")
    names = set(zipfile.ZipFile(package).namelist())
    assert names == {"rdf.yaml", "weights.pt", "weights.torchscript.pt", "test_input.npy", "test_output.npy"} | {
        "cover.png",
        "README.md",
    }
    rdf = yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))
    (raw,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in raw["axes"]] == ["batch", "channel", "y", "x"]
    assert raw["axes"][1]["channel_names"] == ["slice -1", "slice", "slice +1"]
    assert raw["axes"][2]["size"] == {"min": 44, "step": 4} and raw["axes"][2]["scale"] == 4.0
    assert [a.get("halo") for a in out["axes"][2:]] == [20, 20]
    assert out["axes"][1]["channel_names"] == ["membrane", "cell"]
    assert raw["preprocessing"][-1] == {
        "id": "zero_mean_unit_variance",
        "kwargs": {"axes": ["channel", "y", "x"], "eps": 1e-6},
    }
    with zipfile.ZipFile(package) as opened:
        test_input = np.load(opened.open("test_input.npy"))
    assert test_input.shape == (1, 3, 88, 108)
    described = spec.load_description(package)
    assert described.validation_summary.status == "valid-format", described.validation_summary
    summary = core.test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    ran = {d.name.split(" (")[-1].rstrip(")") for d in summary.details if d.name.startswith("Reproduce")}
    assert ran == {"pytorch_state_dict", "torchscript"}


def test_images_too_small_for_a_test_tile_are_named(tmp_path):
    model = _checkpoint(tmp_path / "model.pt")
    volume = _volume(tmp_path / "small.ome.zarr", (1, 30, 30))
    with pytest.raises(ValueError, match=r"small\.ome\.zarr: \(1, 30, 30\) is too small for a test tile"):
        export_model(model, volume, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists() and not list(tmp_path.glob("m.zip*"))
