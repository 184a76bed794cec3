import numpy as np
import pytest
import tifffile

from unetflow.stages.ingest import ingest, resolve_sources
from unetflow.store import open_image, partial_path


def test_stack_roundtrip_with_metadata(small_stack, ingested):
    _, image, labels = small_stack
    img, lab = open_image(ingested[0]), open_image(ingested[1])
    np.testing.assert_array_equal(img.array[:], image)
    np.testing.assert_array_equal(lab.array[:], labels)
    assert img.voxel_size == (50.0, 4.0, 4.0)
    assert tuple(img.array.chunks) == (1, 64, 64)
    assert lab.attrs["label_convention"] == "binary255"
    stats = img.attrs["intensity"]
    assert abs(stats["mean"] - image.mean()) < 1e-6 and abs(stats["std"] - image.std()) < 1e-6


def test_folder_glob_and_z_range(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    for i in range(3):
        tifffile.imwrite(tmp_path / f"part{i}.tif", data[2 * i : 2 * i + 2])
    assert len(resolve_sources(tmp_path)) == 3
    whole = ingest(tmp_path, tmp_path / "a.ome.zarr", chunks=(4, 8, 8))
    np.testing.assert_array_equal(open_image(whole).array[:], data)
    part = ingest(str(tmp_path / "part*.tif"), tmp_path / "b.ome.zarr", z_range=(1, 5), chunks=(3, 8, 8))
    np.testing.assert_array_equal(open_image(part).array[:], data[1:5])
    with pytest.raises(ValueError, match=r"z_range \[4, 9\)"):
        ingest(tmp_path, tmp_path / "c.ome.zarr", z_range=(4, 9))


def test_bad_labels_fail_and_leave_nothing(tmp_path):
    tifffile.imwrite(tmp_path / "bad.tif", np.array([[[255, 128], [255, 128]]], np.uint8))
    out = tmp_path / "labels.ome.zarr"
    with pytest.raises(ValueError, match=r"bad.tif.*\[128, 255\]"):
        ingest(tmp_path / "bad.tif", out, kind="labels")
    assert not out.exists() and not partial_path(out).exists()


def test_sixteen_bit_instance_labels(tmp_path):
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, :4] = 1000
    labels[:, 5:] = 40000
    tifffile.imwrite(tmp_path / "inst.tif", labels)
    with pytest.raises(ValueError, match="label_convention: instances"):
        ingest(tmp_path / "inst.tif", tmp_path / "l.ome.zarr", kind="labels")
    out = ingest(tmp_path / "inst.tif", tmp_path / "l.ome.zarr", kind="labels", label_convention="instances")
    img = open_image(out)
    assert img.dtype == np.uint16 and img.attrs["label_convention"] == "instances"


def test_mismatched_files_and_missing_sources_are_named(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((1, 8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((1, 9, 8), np.uint8))
    with pytest.raises(ValueError, match="b.tif"):
        ingest(tmp_path, tmp_path / "x.ome.zarr")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        ingest(tmp_path / "missing.tif", tmp_path / "y.ome.zarr")
    with pytest.raises(FileNotFoundError, match="the glob matches no .tif or .tiff file"):
        ingest(tmp_path / "nothing*.tif", tmp_path / "z.ome.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without .tif or .tiff files"):
        ingest(tmp_path / "empty", tmp_path / "z.ome.zarr")
    with pytest.raises(FileNotFoundError, match="expected a .tif or .tiff file"):
        ingest(tmp_path / "notes.txt", tmp_path / "z.ome.zarr")


def test_color_tiff_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="rgb.tif.*grayscale"):
        ingest(tmp_path / "rgb.tif", tmp_path / "x.ome.zarr")


def _stack(tmp_path, name="full.tif", dtype=np.uint8):
    data = np.random.default_rng(0).integers(0, 255, (5, 64, 64)).astype(dtype)
    tifffile.imwrite(tmp_path / name, data, photometric="minisblack")
    return tmp_path / name, data


def test_a_truncated_tiff_is_refused_naming_the_file(tmp_path):
    full, _ = _stack(tmp_path)
    raw = full.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 100):
        truncated = tmp_path / f"cut{cut}.tif"
        truncated.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=rf"cut{cut}\.tif: .*(truncated|damaged)"):
            ingest(truncated, tmp_path / "o.ome.zarr")
        assert not (tmp_path / "o.ome.zarr").exists() and not partial_path(tmp_path / "o.ome.zarr").exists()


def test_a_garbage_or_empty_tiff_names_the_file(tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + bytes(range(256)) * 2)
    with pytest.raises(ValueError, match=r"garbage\.tif: not a readable TIFF"):
        ingest(garbage, tmp_path / "o.ome.zarr")


def test_non_finite_pixels_are_refused_naming_the_slice(tmp_path):
    path, data = _stack(tmp_path, "float.tif", np.float32)
    data[3, 10, 10] = np.nan
    tifffile.imwrite(path, data, photometric="minisblack")
    with pytest.raises(ValueError, match=r"float\.tif: slice 3 holds NaN"):
        ingest(path, tmp_path / "o.ome.zarr", chunks=(2, 64, 64))
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_tiff_with_no_slices_names_the_file(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a zero-size TIFF is nonconformant
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"empty\.tif: holds no slices"):
        ingest(tmp_path / "empty.tif", tmp_path / "o.ome.zarr")


@pytest.mark.parametrize("compression", ["lzw", "zlib", "packbits", "zstd"])
def test_compressed_tiffs_ingest_as_their_pixels(tmp_path, compression):
    data = np.random.default_rng(1).integers(0, 255, (3, 40, 36)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="minisblack", compression=compression)
    out = ingest(tmp_path / "c.tif", tmp_path / "c.ome.zarr", chunks=(2, 40, 36))
    np.testing.assert_array_equal(open_image(out).array[:], data)


# Zarr stores used in place -----------------------------------------------------------------------------------

OME04_AXES = [
    {"name": "t", "type": "time"},
    {"name": "c", "type": "channel"},
    *({"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"),
]


def _zarr_sources(tmp_path):
    """The same 5 x 40 x 30 volume as a plain zarr v2 array and as an OME-Zarr 0.4 (t, c, z, y, x) image."""
    import zarr

    data = np.random.default_rng(0).integers(0, 255, (5, 40, 30)).astype(np.uint8)
    zarr.create_array(str(tmp_path / "plain.zarr"), data=data, chunks=(1, 20, 30), zarr_format=2)
    group = zarr.open_group(str(tmp_path / "ome04.zarr"), mode="w", zarr_format=2)
    scale = [{"type": "scale", "scale": [1, 1, 0.04, 0.005, 0.005]}]
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": OME04_AXES, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
    ]
    group.create_array("0", data=data[None, None], chunks=(1, 1, 1, 20, 30))
    return data


def test_zarr_images_are_used_in_place_with_their_own_scale(tmp_path):
    data = _zarr_sources(tmp_path)
    for name, voxel, unit in (("plain", (50.0, 4.0, 4.0), "nanometer"), ("ome04", (0.04, 0.005, 0.005), "micrometer")):
        out = ingest(tmp_path / f"{name}.zarr", tmp_path / f"{name}-ref.ome.zarr", voxel_size=(50, 4, 4))
        assert sorted(p.name for p in out.rglob("*")) == ["zarr.json"]  # a reference: nothing copied
        image = open_image(out)
        assert image.axes == "zyx" and image.shape == data.shape
        assert image.voxel_size == voxel and image.unit == unit
        np.testing.assert_array_equal(image.array[:], data)
        np.testing.assert_array_equal(image.array[1:3, 5:9, 2], data[1:3, 5:9, 2])
        # Ten chunks, all in the sample: the statistics are exact.
        assert image.attrs["intensity"]["mean"] == pytest.approx(data.mean())
        assert image.attrs["intensity"]["std"] == pytest.approx(data.std())
    window = open_image(ingest(tmp_path / "ome04.zarr", tmp_path / "w.ome.zarr", z_range=(1, 3)))
    np.testing.assert_array_equal(window.array[:], data[1:3])


def test_a_changed_store_changes_the_reference_fingerprint(tmp_path):
    import zarr

    _zarr_sources(tmp_path)
    first = open_image(ingest(tmp_path / "plain.zarr", tmp_path / "a.ome.zarr")).attrs["provenance"]["fingerprint"]
    array = zarr.open_array(str(tmp_path / "plain.zarr"), mode="r+")
    array[0, 0, 0] = 255 - array[0, 0, 0]
    second = open_image(ingest(tmp_path / "plain.zarr", tmp_path / "b.ome.zarr")).attrs["provenance"]["fingerprint"]
    assert first != second


def test_zarr_labels_are_copied_and_checked(tmp_path):
    import zarr

    labels = np.zeros((3, 20, 20), np.uint8)
    labels[:, 5:15, 5:15] = 255
    zarr.create_array(str(tmp_path / "labels.zarr"), data=labels, chunks=(1, 10, 10))
    out = ingest(tmp_path / "labels.zarr", tmp_path / "l.ome.zarr", kind="labels", chunks=(1, 20, 20))
    image = open_image(out)
    assert image.attrs["label_convention"] == "binary255" and "reference" not in image.attrs
    np.testing.assert_array_equal(image.array[:], labels)
    zarr.create_array(str(tmp_path / "image.zarr"), data=np.arange(1200, dtype=np.uint8).reshape(3, 20, 20))
    with pytest.raises(ValueError, match="image.zarr"):
        ingest(tmp_path / "image.zarr", tmp_path / "bad.ome.zarr", kind="labels")
    assert not (tmp_path / "bad.ome.zarr").exists() and not partial_path(tmp_path / "bad.ome.zarr").exists()


def test_a_store_given_by_url_is_read_in_place(tmp_path):
    import functools
    import http.server
    import threading

    data = _zarr_sources(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ome04.zarr"
        image = open_image(ingest(url, tmp_path / "url.ome.zarr"))
        assert image.attrs["reference"] == url and image.voxel_size == (0.04, 0.005, 0.005)
        np.testing.assert_array_equal(image.array[:], data)
    finally:
        server.shutdown()


def test_a_zarr_store_that_is_no_volume_is_named(tmp_path):
    import zarr

    zarr.create_array(str(tmp_path / "rgb.zarr"), data=np.zeros((3, 4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"rgb.zarr.*zyx"):
        ingest(tmp_path / "rgb.zarr", tmp_path / "o.ome.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ValueError, match="empty.zarr"):
        ingest(tmp_path / "empty.zarr", tmp_path / "o.ome.zarr")


def test_a_copy_split_over_jobs_equals_one_job_and_resumes(tmp_path):
    from unetflow.stages.ingest import IngestJob, copy_slabs, finish

    data = np.random.default_rng(2).integers(0, 255, (7, 30, 40)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    one = open_image(ingest(tmp_path / "s.tif", tmp_path / "one.ome.zarr", chunks=(2, 16, 16), z_range=(1, 7)))
    job = IngestJob(str(tmp_path / "s.tif"), str(tmp_path / "split.ome.zarr"), chunks=(2, 16, 16), z_range=(1, 7))
    assert copy_slabs(job, (1, 2)) == 1  # 3 slabs of 2 slices: the second
    with pytest.raises(RuntimeError, match="2 slabs are not copied yet"):
        finish(job)
    assert copy_slabs(job, (1, 2)) == 0 and copy_slabs(job, (0, 2)) == 2
    split = open_image(finish(job))
    np.testing.assert_array_equal(split.array[:], data[1:7])
    assert split.attrs["provenance"] == one.attrs["provenance"] and split.attrs["intensity"] == one.attrs["intensity"]
    assert split.attrs["intensity"]["mean"] == pytest.approx(data[1:7].mean())
    assert not partial_path(tmp_path / "split.ome.zarr").exists()


def test_a_copy_of_other_sources_is_discarded_and_bad_labels_found_at_the_end(tmp_path):
    from unetflow.stages.ingest import IngestJob, copy_slabs, finish

    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 255
    labels[3, 0, 0] = 7  # a value no binary convention has, in the last slab only
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    job = IngestJob(str(tmp_path / "l.tif"), str(tmp_path / "l.ome.zarr"), kind="labels", chunks=(2, 8, 8))
    copy_slabs(job, (0, 2))
    tifffile.imwrite(tmp_path / "l.tif", labels[:, ::-1], photometric="minisblack")  # the source changed
    copy_slabs(job, (1, 2))
    with pytest.raises(RuntimeError, match="1 slabs are not copied yet"):  # the first copy was discarded
        finish(job)
    copy_slabs(job, (0, 2))
    with pytest.raises(ValueError, match=r"l\.tif: labels with the values \[0, 7, 255\]"):
        finish(job)
    assert not job.store.exists() and not (tmp_path / "l.ome.zarr").exists()
