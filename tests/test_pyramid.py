"""Multiscale pyramids written file by file by the tasks that write full resolution: equal to downsampling the
whole volume, labels only ever holding full-resolution ids, listed in the OME-Zarr metadata."""

import numpy as np
import pytest
import zarr

from unetflow.blocks import block_grid
from unetflow.pyramid import downsample, level_count, levels_of
from unetflow.store import create_image, levels_in, write_levels


def test_levels_stop_at_the_smallest_side_and_where_files_no_longer_halve():
    assert level_count((22400, 22400), (4096, 4096)) == 6
    assert level_count((22400, 22400), (768, 768)) == 6
    assert level_count((22400, 22400), (1536, 256)) == 6  # 256 = 2^8
    assert level_count((22400, 22400), (96, 96)) == 5  # 96 = 2^5 x 3
    assert level_count((500, 1000), (512, 512)) == 0  # 250 < 256
    assert level_count((600, 1000), (512, 512)) == 1


def test_means_average_what_an_edge_window_holds_and_labels_keep_their_ids():
    data = np.arange(15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_allclose(downsample(data, labels=False), [[3, 5, 6.5], [10.5, 12.5, 14]])
    assert downsample(np.array([[1, 3], [3, 3]], np.uint8), labels=False).tolist() == [[2]]  # 2.5 rounds to even
    labels = np.random.default_rng(0).integers(0, 9, (2, 7, 9))
    for level in levels_of(labels, 2, labels=True):
        assert set(np.unique(level)) <= set(np.unique(labels))


@pytest.mark.parametrize("labels", [False, True])
def test_levels_written_file_by_file_equal_the_whole_volume_downsampled(tmp_path, labels):
    shape, files = (2, 1100, 1030), (2, 512, 256)
    data = np.random.default_rng(1).integers(0, 200, shape).astype(np.uint16)
    count = level_count(shape[-2:], files[-2:])
    assert count == 2
    create_image(
        tmp_path / "p.ome.zarr", shape, np.uint16, (2, 128, 128), "zyx", (50, 4, 4), shards=files, levels=count
    )
    arrays = levels_in(tmp_path / "p.ome.zarr")
    for f in block_grid(shape, files, (0, 0, 0), files):
        write_levels(arrays, f.write, data[f.write], labels)
    group = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    for k, expected in enumerate(levels_of(data, count, labels), start=1):
        np.testing.assert_array_equal(group[str(k)][:], expected)
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    assert datasets[2]["coordinateTransformations"][0]["scale"] == [50.0, 16.0, 16.0]
    assert group.attrs["ome"]["multiscales"][0]["name"] == "p.ome.zarr"


def test_predict_and_segment_write_their_pyramids(tmp_path):
    import torch

    from unetflow.models import UNet, UNetConfig
    from unetflow.models.checkpoint import save_checkpoint
    from unetflow.stages.predict import PredictJob, predict_volume
    from unetflow.stages.segment import segment_volume

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", UNet(UNetConfig(base_width=2, levels=2, dropout=0)))
    data = np.random.default_rng(2).integers(0, 255, (1, 600, 530)).astype(np.uint8)
    create_image(tmp_path / "v.ome.zarr", data.shape, np.uint8, (1, 256, 256))[:] = data
    job = PredictJob(str(tmp_path / "m.pt"), str(tmp_path / "v.ome.zarr"), str(tmp_path / "p.ome.zarr"), (1, 128, 128),
                     "float32", file_mb=0.5, device="cpu", threads=1)  # fmt: skip
    probs = zarr.open_group(str(predict_volume(job)), mode="r")
    assert probs["0"].shards[-2:] == (256, 256) and probs["1"].shape == (2, 1, 300, 265)
    np.testing.assert_array_equal(probs["1"][:], levels_of(probs["0"][:], 1, labels=False)[0])
    cells = zarr.open_group(str(segment_volume(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr")), mode="r")
    np.testing.assert_array_equal(cells["1"][:], cells["0"][:, ::2, ::2])
    assert [d["path"] for d in cells.attrs["ome"]["multiscales"][0]["datasets"]] == ["0", "1"]
    assert cells.attrs["ome"]["multiscales"][0]["name"] == "s.ome.zarr"  # not its temporary name


def test_levels_computed_in_strips_equal_levels_of_the_whole():
    data = np.random.default_rng(4).integers(0, 255, (2, 301, 77)).astype(np.uint8)
    whole = []
    current = data
    for _ in range(3):
        current = downsample(current, labels=False)
        whole.append(current)
    for got, expected in zip(levels_of(data, 3, labels=False, strip=5), whole, strict=True):
        np.testing.assert_array_equal(got, expected)
