import numpy as np
import pytest
import tifffile
import zarr

from unetflow.image import as_zyx
from unetflow.store import atomic_output, create_image, open_image, partial_path, set_attrs


def test_ome_zarr_roundtrip(tmp_path):
    path = tmp_path / "x.ome.zarr"
    a = create_image(path, (4, 10, 12), "uint16", (1, 10, 12), "zyx", (50, 4, 4), attrs={"kind": "image"})
    a[:] = np.arange(480, dtype=np.uint16).reshape(4, 10, 12)
    set_attrs(path, {"extra": 1})
    img = open_image(path)
    assert img.axes == "zyx" and img.voxel_size == (50.0, 4.0, 4.0)
    assert img.attrs == {"kind": "image", "extra": 1}
    np.testing.assert_array_equal(img.array[2], a[2])
    ome = zarr.open_group(str(path), mode="r").attrs["ome"]
    assert ome["version"] == "0.5"
    assert [ax["name"] for ax in ome["multiscales"][0]["axes"]] == ["z", "y", "x"]
    assert img.array.metadata.zarr_format == 3


def test_channel_axis_metadata(tmp_path):
    create_image(tmp_path / "p.ome.zarr", (2, 3, 8, 8), "float16", (2, 1, 8, 8), "czyx", (50, 4, 4))
    img = open_image(tmp_path / "p.ome.zarr")
    assert img.axes == "czyx" and img.voxel_size == (50.0, 4.0, 4.0) and img.spatial_shape == (3, 8, 8)


def test_tiff_is_opened_lazily(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (5, 16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", data)
    img = open_image(tmp_path / "s.tif")
    assert img.shape == (5, 16, 16) and img.axes == "zyx"
    np.testing.assert_array_equal(np.asarray(img.array[3, 2:5]), data[3, 2:5])


def test_single_slice_tiff_as_volume(tmp_path):
    data = np.arange(64, dtype=np.uint8).reshape(8, 8)
    tifffile.imwrite(tmp_path / "one.tif", data)
    vol = as_zyx(open_image(tmp_path / "one.tif"))
    assert vol.shape == (1, 8, 8)
    np.testing.assert_array_equal(vol.array[0:1, 2:4, :], data[None, 2:4])


def test_missing_and_foreign_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        open_image(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(ValueError, match="multiscales"):
        open_image(tmp_path / "g.zarr")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        create_image(tmp, (1, 4, 4), "uint8", (1, 4, 4))
        raise RuntimeError("boom")
    assert not out.exists() and not partial_path(out).exists()
    with atomic_output(out) as tmp:
        create_image(tmp, (1, 4, 4), "uint8", (1, 4, 4))
    assert out.exists() and not partial_path(out).exists()


def test_unfinished_outputs_are_refused_by_every_reader(tmp_path):
    from unetflow.store import atomic_output, create_image, open_image, set_attrs

    with pytest.raises(ValueError, match="unfinished output"), atomic_output(tmp_path / "a.ome.zarr") as tmp:
        create_image(tmp, (2, 8, 8), "uint8", (1, 8, 8))
        open_image(tmp)  # a stage handed the .partial store
    half = tmp_path / "half.ome.zarr"
    create_image(half, (2, 8, 8), "uint8", (1, 8, 8))
    set_attrs(half, {"provenance": {"fingerprint": "x"}})  # ours, but never marked complete
    with pytest.raises(ValueError, match="no 'complete' mark"):
        open_image(half)


def test_a_chunk_missing_from_a_complete_store_is_named_not_read_as_zeros(tmp_path):
    import shutil

    from unetflow.store import MissingChunkError, atomic_output, create_image, open_image

    out = tmp_path / "w.ome.zarr"
    with atomic_output(out) as tmp:
        create_image(tmp, (3, 8, 8), "float32", (1, 8, 8))[:] = 0  # all chunks equal the fill value
    chunks = sorted((out / "0" / "c").rglob("*"))
    assert sum(c.is_file() for c in chunks) == 3  # written although empty
    assert np.array_equal(open_image(out).array[:], np.zeros((3, 8, 8)))
    shutil.rmtree(out / "0" / "c" / "1")
    with pytest.raises(MissingChunkError, match=r"w\.ome\.zarr: chunk 0/c/1/0/0 is missing"):
        open_image(out).array[1]


def test_a_corrupt_chunk_is_named_with_its_store_and_key(tmp_path):
    from unetflow.store import atomic_output, create_image, open_image

    out = tmp_path / "c.ome.zarr"
    with atomic_output(out) as tmp:
        create_image(tmp, (3, 8, 8), "float32", (1, 8, 8))[:] = np.random.default_rng(0).random((3, 8, 8))
    (out / "0" / "c" / "1" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 5)
    image = open_image(out)
    np.testing.assert_array_equal(image.array[0].shape, (8, 8))  # other chunks still read
    with pytest.raises(ValueError, match=r"c\.ome\.zarr: cannot read chunk 0/c/1/0/0 \(RuntimeError: Zstd"):
        image.array[1]
    with pytest.raises(ValueError, match=r"chunk 0/c/0/0/0, 0/c/1/0/0, 0/c/2/0/0"):
        image.array[:]
