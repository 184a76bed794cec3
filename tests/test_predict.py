"""Block-wise prediction into OME-Zarr: resumable after a kill, sharded with a gather step, automatic block size,
test-time augmentation and dask.distributed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import unetflow.stages.predict as predict
from unetflow.blocks import DONE_DIR, count_done
from unetflow.executor import SchedulerSpec
from unetflow.inference.budget import activation_bytes, auto_block
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
from unetflow.stages.predict import PredictJob, finalize, predict_volume
from unetflow.store import create_image, open_image, partial_path

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, UNet(UNetConfig(base_width=4, levels=3, dropout=0)))
    return str(path)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A 24 x 70 x 53 zarr volume: 24 x 3 x 4 = 288 blocks of 1 x 24 x 16."""
    path = tmp_path_factory.mktemp("vol") / "v.ome.zarr"
    data = np.random.default_rng(0).integers(0, 255, (24, 70, 53)).astype(np.uint8)
    create_image(path, data.shape, np.uint8, (8, 70, 53))[:] = data
    return str(path)


# Files of one slice each (3 x 4 blocks of 1 x 24 x 16, two float32 classes: 36 KiB), 24 in all.
SLICE_FILES = 0.04


def job(model, source, out, block=(1, 24, 16), **kw):
    kw.setdefault("file_mb", SLICE_FILES)
    return PredictJob(model, source, str(out), block, kw.pop("dtype", "float32"), device="cpu", threads=1, **kw)


def read(path):
    return np.asarray(open_image(path).array[:])


def test_killed_run_resumes_bit_for_bit(model_path, volume, tmp_path):
    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr")))
    out = tmp_path / "p.ome.zarr"
    cmd = [sys.executable, "-m", "unetflow", "predict", model_path, volume, "--out", str(out)]
    # eager as in this process (conftest): the run is compared bit for bit with the in-process reference
    settings = f'{{"block": [1, 24, 16], "dtype": "float32", "file_mb": {SLICE_FILES}, "engine": "eager"}}'
    cmd += ["--settings", settings, "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600  # generous: a loaded machine may take long to import torch
    while time.time() < deadline and proc.poll() is None:
        if count_done(partial_path(out)) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    finished = count_done(partial_path(out))
    assert 5 <= finished < 24
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert f"{24 - finished} of 24 files to compute" in rerun.stdout
    assert np.array_equal(read(out), reference)
    assert not partial_path(out).exists() and not (out / DONE_DIR).exists()


def test_shards_cover_every_block_once_and_gather_checks(model_path, volume, tmp_path):
    out = tmp_path / "s.ome.zarr"
    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr")))
    predict_volume(job(model_path, volume, out), shard=(0, 3))
    predict_volume(job(model_path, volume, out), shard=(2, 3))
    with pytest.raises(RuntimeError, match="8 files are not done yet"):
        finalize(out)
    assert not out.exists()
    assert predict_volume(job(model_path, volume, out), shard=(1, 3)) == partial_path(out)
    assert np.array_equal(read(finalize(out)), reference)
    attrs = zarr.open_group(str(out), mode="r").attrs["unetflow"]
    assert attrs["complete"] is True and attrs["block"] == [1, 24, 16]


def test_blocks_are_stored_in_files_of_file_mb_with_the_same_values(model_path, volume, tmp_path):
    one = read(predict_volume(job(model_path, volume, tmp_path / "one.ome.zarr", file_mb=0.001)))  # a block each
    out = predict_volume(job(model_path, volume, tmp_path / "few.ome.zarr", file_mb=0.3))
    array = zarr.open_group(str(out), mode="r")["0"]
    # 0.3 MiB holds 8 slices of 72 x 64 voxels (3 x 4 blocks) in two float32 classes: 3 files for 24 slices.
    assert array.shards == (2, 8, 72, 64) and array.chunks == (2, 1, 24, 16)
    files = [f for f in (out / "0" / "c").rglob("*") if f.is_file()]
    assert len(files) == 3
    assert np.array_equal(read(out), one)
    ones = [f for f in (tmp_path / "one.ome.zarr" / "0" / "c").rglob("*") if f.is_file()]
    assert len(ones) == 288


def test_partial_output_from_other_settings_is_discarded(model_path, volume, tmp_path):
    out = tmp_path / "o.ome.zarr"
    predict_volume(job(model_path, volume, out, dtype="uint8"), shard=(0, 2))
    first = zarr.open_group(str(partial_path(out)), mode="r").attrs["unetflow"]["provenance"]["fingerprint"]
    final = predict_volume(job(model_path, volume, out, dtype="float32"))
    assert zarr.open_group(str(final), mode="r").attrs["unetflow"]["provenance"]["fingerprint"] != first
    assert read(final).dtype == np.float32
    assert list(tmp_path.iterdir()) == [out]


def test_gather_without_shards_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no partial output"):
        finalize(tmp_path / "none.ome.zarr")


def test_tta_is_equivariant_and_changes_the_result(model_path, tmp_path):
    # Sides that are multiples of the pooling step: flipping the volume flips every tile's pooling grid alike.
    data = np.random.default_rng(1).normal(size=(2, 48, 32)).astype(np.float32)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    zarr.create_array(str(a), data=data)
    zarr.create_array(str(b), data=np.ascontiguousarray(data[:, ::-1, :].swapaxes(1, 2)))
    pa = read(predict_volume(job(model_path, str(a), tmp_path / "pa.ome.zarr", tta=True, block=(1, 16, 16))))
    pb = read(predict_volume(job(model_path, str(b), tmp_path / "pb.ome.zarr", tta=True, block=(1, 16, 16))))
    np.testing.assert_allclose(pb, pa[:, :, ::-1, :].swapaxes(2, 3), atol=1e-5)
    plain = read(predict_volume(job(model_path, str(a), tmp_path / "pc.ome.zarr", block=(1, 16, 16))))
    assert np.abs(plain - pa).max() > 1e-3


def test_automatic_block_fits_the_budget_and_grows_with_it(model_path, volume):
    model = UNet(UNetConfig(base_width=8, levels=4))
    shape = (30, 2048, 2048)
    small = auto_block(model, shape, 64 * 2**20, 4)
    large = auto_block(model, shape, 1024 * 2**20, 4)
    assert small[0] == large[0] == 4
    assert all(s % 8 == 0 for s in small[1:]) and large[1] > small[1]
    inputs = [g.window(n)[0] for g, n in zip(model.geometries, large[1:], strict=True)]
    assert activation_bytes(model, inputs, 4, 4) <= 1024 * 2**20
    # Blocks are evened out: 2048 splits into equal blocks, not one big one and a sliver.
    assert 2048 % large[1] == 0 or -(-2048 // large[1]) * large[1] - 2048 < 8 * -(-2048 // large[1])
    assert auto_block(model, (3, 40, 50), 1024 * 2**20, 4) == (3, 40, 56)
    with pytest.raises(ValueError, match=r"predict.memory_budget_mb \(--memory-mb\) is too small"):
        auto_block(model, shape, 1e5, 4)
    chosen = predict_volume(job(model_path, volume, volume + ".auto.ome.zarr", block=(0, 0, 0)), memory_mb=64)
    group = zarr.open_group(str(chosen), mode="r")
    assert group.attrs["unetflow"]["block"] == [4, 72, 56]  # whole slices, padded to the pooling grid
    assert tuple(group["0"].chunks) == (2, 4, 70, 53)  # the store clips chunks to the volume


def test_scheduler_settings_are_checked():
    with pytest.raises(ValueError, match="predict.scheduler"):
        SchedulerSpec("mpi")
    with pytest.raises(ValueError, match="predict.workers"):
        SchedulerSpec("threads", 0)


def test_distributed_local_cluster_matches_threads(model_path, volume, tmp_path):
    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr", block=(4, 48, 32))))
    out = predict_volume(job(model_path, volume, tmp_path / "d.ome.zarr", block=(4, 48, 32)), SchedulerSpec("local", 2))
    assert np.array_equal(read(out), reference)


def test_local_cluster_workers_start_with_the_environment_asked_for():
    """Predict asks for the allocator settings of `unetflow.runtime` where its engine allocates from the heap on
    CPU; the LocalCluster's worker processes read them at their start (dask's own default trims at once)."""
    from unetflow.executor import run_tasks
    from unetflow.inference.engines import wants_freed_memory_kept
    from unetflow.runtime import KEEP_FREED_ENV

    def kept(job, item) -> int:  # 1 where this task's worker process started with the settings
        return int(all(os.environ.get(name) == value for name, value in job.items()))

    spec = SchedulerSpec("local", 1)
    assert run_tasks(kept, KEEP_FREED_ENV, [0, 1], spec, worker_env=KEEP_FREED_ENV) == 2
    assert run_tasks(kept, KEEP_FREED_ENV, [0, 1], spec) == 0
    assert wants_freed_memory_kept("eager", torch.device("cpu"))
    assert wants_freed_memory_kept("compile", torch.device("cpu"))
    assert not wants_freed_memory_kept("openvino", torch.device("cpu"))
    assert not wants_freed_memory_kept("eager", torch.device("cuda"))


def test_distributed_scheduler_address(model_path, volume, tmp_path):
    from distributed import LocalCluster

    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr", block=(8, 72, 56))))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        spec = SchedulerSpec(cluster.scheduler_address, 1)
        out = predict_volume(job(model_path, volume, tmp_path / "a.ome.zarr", block=(8, 72, 56)), spec)
    assert np.array_equal(read(out), reference)


def test_local_cluster_workers_spread_over_gpus():
    from unetflow.stages.predict import worker_device

    assert [worker_device("auto", n, 4) for n in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    assert worker_device("cuda:2", 1, 4) == "cuda:2" and worker_device("cpu", 1, 4) == "cpu"
    assert worker_device("auto", "tcp-worker", 4) == "auto" and worker_device("auto", 1, 1) == "auto"


def test_precision_is_part_of_the_result(model_path, volume, tmp_path):
    out = tmp_path / "o.ome.zarr"
    fp32 = read(predict_volume(job(model_path, volume, out, block=(24, 72, 56))))
    attrs = zarr.open_group(str(out), mode="r").attrs["unetflow"]
    assert attrs["precision"] == "fp32"  # what `auto` means on a CPU, recorded
    bf16 = read(predict_volume(job(model_path, volume, tmp_path / "b.ome.zarr", block=(24, 72, 56), precision="bf16")))
    assert 0 < np.abs(bf16 - fp32).max() < 0.05


def test_slice_context_model_predicts_a_volume_like_one_pass(volume, tmp_path):
    from unetflow.inference.inferer import TileInferer, predict_array
    from unetflow.intensity import image_stats

    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, dropout=0, slice_context=2)).eval()
    path = tmp_path / "stacked.pt"
    save_checkpoint(path, model)
    image = open_image(volume)
    expected = predict_array(TileInferer(model, torch.device("cpu")), np.asarray(image.array[:]), image_stats(image))
    for block in ((8, 24, 16), (5, 72, 56)):  # z blocks inside and across the volume's 8-slice chunks
        out = predict_volume(job(str(path), volume, tmp_path / f"{block[0]}.ome.zarr", block=block))
        assert np.abs(read(out) - expected).max() <= 1e-5


@pytest.mark.parametrize("source", ["ingested", "foreign zarr"])
def test_partial_output_of_a_changed_input_is_not_resumed(model_path, tmp_path, source):
    """Half the blocks done (as a killed run leaves them), then the input is rewritten in place: the re-run must
    equal a fresh run on the new input, not mix old and new blocks."""
    import tifffile

    from unetflow.stages.ingest import ingest

    rng = np.random.default_rng(1)
    old, new = (rng.integers(0, 255, (6, 70, 53)).astype(np.uint8) for _ in range(2))
    images = tmp_path / "images.ome.zarr"

    def write(data):
        if source == "ingested":
            tifffile.imwrite(tmp_path / "images.tif", data, photometric="minisblack")
            ingest(tmp_path / "images.tif", images, "image", (1, 1, 1), (2, 70, 53))
        else:
            create_image(images, data.shape, np.uint8, (2, 70, 53))[:] = data

    write(old)
    out = tmp_path / "p.ome.zarr"
    predict_volume(job(model_path, str(images), out), shard=(0, 2))
    assert partial_path(out).exists()
    write(new)
    rerun = read(predict_volume(job(model_path, str(images), out)))
    fresh = read(predict_volume(job(model_path, str(images), tmp_path / "fresh.ome.zarr")))
    assert np.array_equal(rerun, fresh)


def test_non_finite_input_is_refused_naming_the_source_and_block(model_path, tmp_path):
    data = np.random.default_rng(2).random((2, 40, 40)).astype(np.float32)
    data[1, 5, 5] = np.nan
    source = tmp_path / "nan.zarr"
    create_image(source, data.shape, np.float32, (1, 40, 40), attrs={"intensity": {"mean": 0.5, "std": 0.3}})[:] = data
    with pytest.raises(ValueError, match=r"nan\.zarr: input block \(1, 0, 0\) .* NaN"):
        predict_volume(job(model_path, str(source), tmp_path / "p.ome.zarr", block=(1, 48, 48)))
    assert not (tmp_path / "p.ome.zarr").exists()


def test_a_second_prediction_of_the_same_output_refuses_while_the_first_runs(model_path, volume, tmp_path):
    from unetflow.store import exclusive

    out = tmp_path / "p.ome.zarr"
    with exclusive(out), pytest.raises(RuntimeError, match="another job is writing it now"):
        predict_volume(job(model_path, volume, out))
    assert not out.exists()
    predict_volume(job(model_path, volume, out, block=(8, 72, 56)))  # once the first is gone, it runs
    assert out.exists() and not out.with_name(out.name + ".lock").exists()


def test_reads_and_writes_run_beside_the_model(model_path, volume, tmp_path, monkeypatch):
    import threading

    reads, writes = set(), set()
    read_input, write = predict.block_input, predict.write_levels

    def recording_read(*args):
        reads.add(threading.current_thread().name.split("_")[0])
        return read_input(*args)

    def recording_write(*args, **kw):
        writes.add(threading.current_thread().name.split("_")[0])
        return write(*args, **kw)

    monkeypatch.setattr(predict, "block_input", recording_read)
    monkeypatch.setattr(predict, "write_levels", recording_write)
    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr", file_mb=0.2)))
    assert reads == {"read-ahead"} and writes == {"write-behind"}
    monkeypatch.undo()
    assert np.array_equal(reference, read(predict_volume(job(model_path, volume, tmp_path / "plain.ome.zarr"))))


def test_a_failed_write_fails_the_run_and_the_rerun_computes_only_what_is_missing(
    model_path, volume, tmp_path, monkeypatch
):
    reference = read(predict_volume(job(model_path, volume, tmp_path / "ref.ome.zarr")))
    write, calls = predict.write_levels, []

    def failing_write(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("no space left on device")
        return write(*args, **kw)

    monkeypatch.setattr(predict, "write_levels", failing_write)
    out = tmp_path / "p.ome.zarr"
    with pytest.raises(OSError, match="no space left"):
        predict_volume(job(model_path, volume, out))
    assert not out.exists()
    assert count_done(partial_path(out)) == 3  # the groups before the failed one; none after it was written
    monkeypatch.undo()
    assert np.array_equal(read(predict_volume(job(model_path, volume, out))), reference)


def test_freed_memory_is_handed_back_once_per_file_not_per_block(model_path, volume, tmp_path, monkeypatch):
    """A trim after every block made the next block's forward pass fault its pages in again (6% of eager fp32's
    time); once per output file still keeps a long run's memory flat."""
    trims = []
    monkeypatch.setattr(predict, "release_free_memory", lambda: trims.append(1))
    out = predict_volume(job(model_path, volume, tmp_path / "p.ome.zarr", file_mb=0.3))  # 3 files of 96 blocks
    assert len(trims) == 3
    files = [f for f in (out / "0" / "c").rglob("*") if f.is_file()]
    assert len(files) == 3
