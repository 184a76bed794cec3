"""predict -> segment -> evaluate -> report on a tiny trained model, through the library."""

import numpy as np
import pandas as pd
import pytest
import torch

from unetflow.inference.inferer import TileInferer, predict_array
from unetflow.intensity import image_stats
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
from unetflow.segmentation import label_slab
from unetflow.stages.evaluate import evaluate_volume
from unetflow.stages.predict import PredictJob, predict_volume
from unetflow.stages.report import summarize, write_report
from unetflow.stages.segment import segment_volume
from unetflow.store import decode_probabilities, open_image


def predict(model, source, out, block=(1, 64, 64), dtype="float16"):
    return predict_volume(PredictJob(str(model), str(source), str(out), block, dtype, device="cpu"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, dropout=0))
    path = tmp_path_factory.mktemp("m") / "model.pt"
    save_checkpoint(path, model)
    return path, model.eval()


@pytest.mark.parametrize("source", ["zarr", "tiff"])
def test_predict_matches_in_memory_tiling(model_file, ingested, small_stack, tmp_path, source):
    path, model = model_file
    src = ingested[0] if source == "zarr" else small_stack[0] / "images.tif"
    out = predict(path, src, tmp_path / "p.ome.zarr", block=(2, 32, 32), dtype="float32")
    probs = open_image(out)
    assert probs.axes == "czyx" and probs.shape == (2, 3, 96, 80)
    assert tuple(probs.array.chunks) == (2, 2, 32, 32)
    image = open_image(src)
    expected = predict_array(TileInferer(model, torch.device("cpu")), image.array[:], image_stats(image), 32)
    np.testing.assert_allclose(probs.array[:], expected, atol=1e-5)
    if source == "zarr":
        assert probs.voxel_size == (50.0, 4.0, 4.0)


def test_uint8_probabilities_and_bad_dtype(model_file, ingested, tmp_path):
    path, _ = model_file
    out = predict(path, ingested[0], tmp_path / "u.ome.zarr", dtype="uint8")
    p = decode_probabilities(open_image(out).array[:])
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_allclose(p.sum(0), 1.0, atol=2 / 255)
    with pytest.raises(ValueError, match="predict.dtype"):
        predict(path, ingested[0], tmp_path / "x.ome.zarr", dtype="int8")
    assert not (tmp_path / "x.ome.zarr").exists()


def test_segment_labels_are_unique_across_slices():
    cell = np.zeros((2, 5, 5), bool)
    cell[:, 0, 0] = cell[:, 4, 4] = True
    labels, offset = label_slab(cell, 4, 10)
    assert offset == 14 and sorted(np.unique(labels)) == [0, 11, 12, 13, 14]


def test_segment_evaluate_report(model_file, ingested, tmp_path):
    path, _ = model_file
    probs = predict(path, ingested[0], tmp_path / "p.ome.zarr")
    seg = open_image(segment_volume(probs, tmp_path / "s.ome.zarr", threshold=0.5))
    assert seg.dtype == np.uint32 and seg.shape == (3, 96, 80)
    cell = decode_probabilities(open_image(probs).array[1]) > 0.5
    np.testing.assert_array_equal(seg.array[:] > 0, cell)
    frame = evaluate_volume(tmp_path / "s.ome.zarr", ingested[1], tmp_path / "m.csv", name="v")
    assert list(frame["slice"]) == [0, 1, 2]
    metrics = frame.drop(columns=["volume", "slice"])
    assert np.isfinite(metrics.to_numpy()).all() and (metrics.to_numpy() >= 0).all() and (metrics.to_numpy() <= 1).all()
    paths = write_report([tmp_path / "m.csv", tmp_path / "m.csv"], ["a", "b"], tmp_path / "report")
    summary = pd.read_csv(paths[1])
    assert list(summary["experiment"]) == ["a", "b"] and (summary["slices"] == 3).all()
    assert summary.loc[0, "rand_error"] == pytest.approx(frame["rand_error"].mean(), rel=1e-5)


def test_segment_and_evaluate_refuse_mismatches(ingested, tmp_path):
    with pytest.raises(ValueError, match="czyx"):
        segment_volume(ingested[0], tmp_path / "s.ome.zarr")
    with pytest.raises(ValueError, match="threshold"):
        segment_volume(ingested[0], tmp_path / "s.ome.zarr", threshold=1.5)


def test_summary_statistics():
    frame = pd.DataFrame(
        {"experiment": ["e"] * 2, "fold": [None] * 2, "volume": ["v"] * 2, "slice": [0, 1], "rand_error": [0.1, 0.3]}
    )
    s = summarize(frame)
    assert s.loc[0, "rand_error"] == pytest.approx(0.2) and s.loc[0, "rand_error_std"] == pytest.approx(0.1)


def test_a_chunk_deleted_from_an_input_or_probability_store_stops_predict_and_segment(model_file, ingested, tmp_path):
    import shutil

    from unetflow.store import MissingChunkError

    path, _ = model_file
    images = tmp_path / "images.ome.zarr"
    shutil.copytree(ingested[0], images)
    probs = predict(path, images, tmp_path / "p.ome.zarr")
    shutil.rmtree(probs / "0" / "c" / "0" / "1")  # slice 1 (every class lies in one chunk)
    with pytest.raises(MissingChunkError, match=r"p\.ome\.zarr: chunk 0/c/0/1/[01]/[01] is missing"):
        segment_volume(probs, tmp_path / "s.ome.zarr")
    assert not (tmp_path / "s.ome.zarr").exists()
    shutil.rmtree(images / "0" / "c" / "2")
    with pytest.raises(MissingChunkError, match=r"images\.ome\.zarr: chunk 0/c/2/[01]/[01] is missing"):
        predict(path, images, tmp_path / "q.ome.zarr")
