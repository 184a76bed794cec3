"""predict -> segment -> evaluate -> report on a tiny trained model, through the library."""

import numpy as np
import pandas as pd
import pytest
import torch

from unetflow.inference.inferer import TileInferer, predict_array
from unetflow.intensity import image_stats
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
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
    file = min(p for p in (probs / "0" / "c").rglob("*") if p.is_file())
    file.unlink()  # the first output file (a zarr shard of blocks)
    key = file.relative_to(probs).as_posix()
    with pytest.raises(MissingChunkError, match=rf"p\.ome\.zarr: chunk {key} is missing"):
        segment_volume(probs, tmp_path / "s.ome.zarr")
    assert not (tmp_path / "s.ome.zarr").exists()
    shutil.rmtree(images / "0" / "c" / "2")
    with pytest.raises(MissingChunkError, match=r"images\.ome\.zarr: chunk 0/c/2/[01]/[01] is missing"):
        predict(path, images, tmp_path / "q.ome.zarr")


def _probability_store(path, cell, chunks=(2, 3, 8, 8)):
    from unetflow.store import atomic_output, create_image

    with atomic_output(path) as tmp:
        create_image(tmp, (2, *cell.shape), np.float32, chunks, "czyx")[:] = np.stack([1.0 - cell, cell]).astype("f4")
    return path


def _same_partition(a, b):
    """Equal up to the numbering: the pairs of ids overlap one to one, and the background agrees."""
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_blockwise_segmentation_equals_whole_volume_labelling_in_2d_and_3d(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(3)
    cell = ndimage.binary_opening(rng.random((9, 30, 27)) > 0.45)  # many objects crossing chunk faces
    probs = _probability_store(tmp_path / "p.ome.zarr", cell)
    per_slice = open_image(segment_volume(probs, tmp_path / "s2.ome.zarr", dims=2)).array[:]
    expected = np.stack([ndimage.label(s)[0] + 1000 * k * (s > 0) for k, s in enumerate(cell)])
    _same_partition(per_slice, expected)
    in_3d = open_image(segment_volume(probs, tmp_path / "s3.ome.zarr", dims=3, connectivity=6)).array[:]
    _same_partition(in_3d, ndimage.label(cell)[0])
    assert in_3d.dtype == np.uint32 and in_3d.max() == ndimage.label(cell)[1]
    assert tuple(open_image(tmp_path / "s3.ome.zarr").array.chunks) == (3, 8, 8)  # tiled in y and x
    with pytest.raises(ValueError, match="segment.connectivity 6 is for 3D"):
        segment_volume(probs, tmp_path / "bad.ome.zarr", dims=2, connectivity=6)


def test_cells_below_the_minimum_size_are_dropped(tmp_path):
    cell = np.zeros((2, 20, 20), bool)
    cell[:, 2:12, 2:12] = True  # 200 voxels in 3D
    cell[0, 15:17, 15:17] = True  # 4 voxels
    probs = _probability_store(tmp_path / "p.ome.zarr", cell)
    kept = open_image(segment_volume(probs, tmp_path / "s.ome.zarr", dims=3, connectivity=6, min_size=10))
    assert sorted(np.unique(kept.array[:])) == [0, 1] and kept.attrs["segments"] == 1
    assert not kept.array[0, 15:17, 15:17].any()


def test_a_3d_segmentation_is_judged_against_cells_connected_in_3d(tmp_path):
    """One tube through every slice: a 3D segment of it is perfect against 3D truth (volume Rand error 0)."""
    from unetflow.stages.ingest import ingest

    cell = np.zeros((4, 16, 16), bool)
    cell[:, 4:10, 4:10] = True
    import tifffile

    tifffile.imwrite(tmp_path / "gt.tif", (cell * 255).astype(np.uint8), photometric="minisblack")
    truth = ingest(tmp_path / "gt.tif", tmp_path / "gt.ome.zarr", "labels", chunks=(1, 8, 8))
    probs = _probability_store(tmp_path / "p.ome.zarr", cell, chunks=(2, 1, 8, 8))
    segment_volume(probs, tmp_path / "s.ome.zarr", dims=3, connectivity=6)
    evaluate_volume(tmp_path / "s.ome.zarr", truth, tmp_path / "m.csv", name="v", volume_out=tmp_path / "v.csv")
    assert pd.read_csv(tmp_path / "v.csv").loc[0, ["rand_error", "info_error", "warping_error"]].tolist() == [0, 0, 0]
    segment_volume(probs, tmp_path / "s2.ome.zarr", dims=2)  # four objects, one per slice, against per-slice truth
    evaluate_volume(tmp_path / "s2.ome.zarr", truth, tmp_path / "m2.csv", name="v", volume_out=tmp_path / "v2.csv")
    assert pd.read_csv(tmp_path / "v2.csv").loc[0, "rand_error"] == pytest.approx(0.0)
    assert pd.read_csv(tmp_path / "v.csv").loc[0, "warping_error_3d"] == 0  # the tube, whole in 3D
    assert np.isnan(pd.read_csv(tmp_path / "v2.csv").loc[0, "warping_error_3d"])  # per-slice cells: no 3D topology


def test_the_report_refuses_files_that_are_not_its_csvs(tmp_path):
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"x\.csv: not a unetflow metrics CSV"):
        write_report([tmp_path / "x.csv"], ["e"], tmp_path / "r")
    pd.DataFrame({"volume": ["v"] * 2, "slice": [0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match=r"m\.csv: not a unetflow volume metrics CSV \(1 row"):
        write_report([tmp_path / "m.csv"], ["e"], tmp_path / "r", [tmp_path / "m.csv"])
    with pytest.raises(ValueError, match="one run name per metrics file"):
        write_report([tmp_path / "m.csv"], ["e", "f"], tmp_path / "r")


def test_evaluation_in_tiles_equals_whole_slices(tmp_path):
    """Cells that cross tile borders in y and x: per-slice and volume metrics equal the whole-slice computation."""
    import tifffile
    from scipy import ndimage

    from unetflow.stages.ingest import ingest

    rng = np.random.default_rng(5)
    truth = ndimage.binary_opening(rng.random((3, 40, 37)) > 0.35)
    tifffile.imwrite(tmp_path / "gt.tif", (truth * 255).astype(np.uint8), photometric="minisblack")
    gt = ingest(tmp_path / "gt.tif", tmp_path / "gt.ome.zarr", "labels", chunks=(1, 16, 16))
    predicted = truth.copy()
    predicted[:, ::9, :] = False  # cut some cells, merge none
    predicted[:, :, 20] = True  # merge others across a column
    for dims in (2, 3):
        cells = _probability_store(tmp_path / f"p{dims}.ome.zarr", predicted)
        seg = segment_volume(cells, tmp_path / f"s{dims}.ome.zarr", dims=dims, connectivity=6 if dims == 3 else 4)
        frames = {}
        for tile in ((1, 2048, 2048), (1, 7, 11)):
            key = tile[1]
            frames[key] = evaluate_volume(
                seg,
                gt,
                tmp_path / f"m{dims}-{key}.csv",
                name="v",
                volume_out=tmp_path / f"v{dims}-{key}.csv",
                tile=tile,
            )
        pd.testing.assert_frame_equal(frames[2048], frames[7])
        whole, tiled = (pd.read_csv(tmp_path / f"v{dims}-{k}.csv") for k in (2048, 7))
        pd.testing.assert_frame_equal(whole, tiled)
        assert 0 < whole.loc[0, "rand_error"] < 1
        # the warping error of each whole slice, and of the volume its pixel-weighted mean
        from unetflow.warping import warping_error

        labels = open_image(seg).array[:]
        each = [warping_error(truth[z], labels[z] > 0) for z in range(3)]
        assert list(frames[2048]["warping_error"]) == pytest.approx(each) and max(each) > 0
        assert whole.loc[0, "warping_error"] == pytest.approx(np.mean(each), rel=1e-5)  # CSVs keep 7 digits
        if dims == 3:  # and in 3D, of the whole volume, cells 6-connected
            in_3d = warping_error(truth, labels > 0, foreground=6)
            assert whole.loc[0, "warping_error_3d"] == pytest.approx(in_3d, rel=1e-5) and in_3d > 0


def test_the_threshold_sweep_reports_each_metrics_best_and_where(tmp_path):
    """Membranes predicted at 0.3 merge cells at the configured 0.5; the sweep finds the thresholds that split them
    again, and its best equals evaluating the segmentation made at that threshold."""
    import tifffile

    from unetflow.stages.ingest import ingest

    truth = np.ones((2, 24, 24), bool)
    truth[:, :, 11:13] = False  # two cells per slice
    tifffile.imwrite(tmp_path / "gt.tif", (truth * 255).astype(np.uint8), photometric="minisblack")
    gt = ingest(tmp_path / "gt.tif", tmp_path / "gt.ome.zarr", "labels", chunks=(1, 8, 8))
    cell = np.where(truth, 0.9, 0.6).astype(np.float32)  # membranes that a threshold of 0.5 misses
    probs = _probability_store(tmp_path / "p.ome.zarr", cell)
    seg = segment_volume(probs, tmp_path / "s.ome.zarr", threshold=0.5)
    evaluate_volume(
        seg,
        gt,
        tmp_path / "m.csv",
        name="v",
        volume_out=tmp_path / "v.csv",
        probabilities=probs,
        thresholds=[0.3, 0.7, 0.8],
        segment_settings={"connectivity": 4, "dims": 2, "min_size": 0},
        sweep_out=tmp_path / "sweep.csv",
    )
    row = pd.read_csv(tmp_path / "v.csv").loc[0]
    sweep = pd.read_csv(tmp_path / "sweep.csv").set_index("threshold")
    assert list(sweep.index) == [0.3, 0.7, 0.8] and sweep.loc[0.7, "rand_error"] == pytest.approx(0.0)
    assert sweep.loc[0.3, "rand_error"] > 0.3 and sweep.loc[0.3, "rand_merge"] < 1  # merged: the merge part shows it
    assert sweep["rand_error"].min() == pytest.approx(row["rand_error_best"])
    assert row["rand_error"] > 0.3 and row["warping_error"] > 0  # merged at 0.5
    assert row["rand_error_best"] == pytest.approx(0.0) and row["rand_error_best_threshold"] == 0.7
    assert row["pixel_error_best"] == pytest.approx(0.0) and row["warping_error_best"] == pytest.approx(0.0)
    again = segment_volume(probs, tmp_path / "s7.ome.zarr", threshold=0.7)
    evaluate_volume(again, gt, tmp_path / "m7.csv", name="v", volume_out=tmp_path / "v7.csv")
    assert pd.read_csv(tmp_path / "v7.csv").loc[0, "info_error"] == pytest.approx(row["info_error_best"], abs=1e-6)
    with pytest.raises(ValueError, match="needs the probabilities"):
        evaluate_volume(seg, gt, tmp_path / "x.csv", thresholds=[0.5])
    with pytest.raises(ValueError, match="volume_out"):
        evaluate_volume(seg, gt, tmp_path / "x.csv", probabilities=probs, thresholds=[0.5], sweep_out=tmp_path / "y")
    # No sweep: an empty table with the volume's columns, which the report reads as no thresholds to choose from.
    evaluate_volume(
        seg, gt, tmp_path / "m0.csv", name="v", volume_out=tmp_path / "v0.csv", sweep_out=tmp_path / "s0.csv"
    )
    empty = pd.read_csv(tmp_path / "s0.csv")
    assert empty.empty and {"threshold", "rand_error", "rand_merge"} <= set(empty.columns)
    paths = write_report(
        [tmp_path / "m0.csv"] * 2, ["cv/fold0", "cv/fold1"], tmp_path / "r0", None, [tmp_path / "s0.csv"] * 2
    )
    assert pd.read_csv(tmp_path / "r0" / "threshold_choice.csv").empty and len(paths) == 6


def test_the_threshold_is_chosen_across_folds_and_scored_on_folds_that_did_not_choose_it():
    from unetflow.stages.report import threshold_choice, threshold_sweep

    errors = {  # fold -> Rand error at thresholds 0.3, 0.5, 0.7
        0: [0.10, 0.05, 0.08],
        1: [0.04, 0.06, 0.09],
        2: [0.12, 0.07, 0.02],
    }
    rows = [
        {"experiment": "cv", "fold": f, "volume": "v", "threshold": t, "rand_error": e, "rand_merge": 1 - e}
        | {"pixel_error": 0.1 * t + 0.01 * f}
        for f, values in errors.items()
        for t, e in zip([0.3, 0.5, 0.7], values, strict=True)
    ]
    rows.append(
        {"experiment": "plain", "fold": None, "volume": "v", "threshold": 0.5, "rand_error": 0.5, "pixel_error": 0}
    )
    sweeps = pd.DataFrame(rows).astype({"fold": "Int64"})
    table = threshold_sweep(sweeps).set_index("threshold")
    assert list(table["experiment"]) == ["cv"] * 3 and set(table["folds"]) == {3}
    assert table.loc[0.5, "rand_error_mean"] == pytest.approx(0.06) and table.loc[0.5, "rand_error_worst"] == 0.07
    assert table.loc[0.3, "rand_merge_worst"] == pytest.approx(0.88)  # a score's worst fold is its lowest
    (choice,) = threshold_choice(sweeps).to_dict("records")
    # Means 0.0867, 0.06, 0.0633: 0.5. Without fold 0: 0.08, 0.065, 0.055 -> 0.7 (fold 0 scores 0.08 there);
    # without fold 1: 0.11, 0.06, 0.05 -> 0.7 (0.09); without fold 2: 0.07, 0.055, 0.085 -> 0.5 (0.07).
    assert choice["threshold"] == 0.5 and choice["rand_error_mean"] == pytest.approx(0.06)
    assert choice["rand_error_worst"] == pytest.approx(0.07)
    assert choice["pixel_error_mean"] == pytest.approx(0.06) and choice["pixel_error_worst"] == pytest.approx(0.07)
    assert choice["nested_thresholds"] == "0.7 0.7 0.5"
    assert choice["nested_rand_error_mean"] == pytest.approx(0.08) and choice["nested_rand_error_worst"] == 0.09
    uneven = sweeps[~((sweeps["fold"] == 2) & (sweeps["threshold"] == 0.7))]
    assert threshold_choice(uneven).empty  # folds swept at different thresholds: no choice across them
