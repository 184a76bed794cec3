import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

ROOT = Path(__file__).resolve().parents[1]
ISBI = Path(__import__("os").environ.get("UNETFLOW_ISBI", ROOT.parent / "shared" / "data" / "isbi2012"))


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    if not (ISBI / "train-labels.tif").exists():
        pytest.skip(f"ISBI 2012 data not found at {ISBI}")
    return ISBI


@pytest.fixture(scope="session")
def small_stack(tmp_path_factory):
    """A small synthetic (image, labels) stack written as TIFF, shared by the tests."""
    from unetflow.stages.synthetic import synthesize

    image, labels = synthesize((3, 96, 80), seed=5)
    d = tmp_path_factory.mktemp("stack")
    tifffile.imwrite(d / "images.tif", image, photometric="minisblack")
    tifffile.imwrite(d / "labels.tif", labels, photometric="minisblack")
    return d, image, labels


@pytest.fixture(scope="session")
def ingested(small_stack, tmp_path_factory):
    """The small stack ingested into OME-Zarr: (images path, labels path)."""
    from unetflow.stages.ingest import ingest

    d, _, _ = small_stack
    out = tmp_path_factory.mktemp("zarr")
    images = ingest(d / "images.tif", out / "images.ome.zarr", "image", (50, 4, 4), (1, 64, 64))
    labels = ingest(d / "labels.tif", out / "labels.ome.zarr", "labels", (50, 4, 4), (1, 64, 64))
    return images, labels


def naive_two_nearest(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference d1, d2: one distance transform per cell, the two smallest per pixel."""
    from scipy import ndimage

    n = int(cells.max())
    d = np.full((max(n, 2), *cells.shape), np.inf)
    for i in range(1, n + 1):
        d[i - 1] = ndimage.distance_transform_edt(cells != i)
    d.sort(axis=0)
    return d[0], d[1]


# The tiny pipeline every workflow test runs (a few seconds per stage on one core).
TINY = {
    "results": "results",
    "synthetic": {"seed": 3, "train": [3, 96, 96], "validation": [2, 96, 96], "volume": [2, 100, 120]},
    "datasets": {
        "tiny_train": {
            "images": "results/synthetic/train-images.tif",
            "labels": "results/synthetic/train-labels.tif",
            "voxel_size": [50, 4, 4],
        },
        "tiny_validation": {
            "images": "results/synthetic/validation-images.tif",
            "labels": "results/synthetic/validation-labels.tif",
            "voxel_size": [50, 4, 4],
        },
        "tiny_volume": {"images": "results/synthetic/volume-images.tif", "voxel_size": [50, 4, 4]},
    },
    "experiments": {
        "tiny": {
            "train_on": ["tiny_train"],
            "validate_on": ["tiny_validation"],
            "predict_on": ["tiny_validation", "tiny_volume"],
        }
    },
    "model": {"base_width": 4, "levels": 3, "slice_context": 1},
    "train": {
        "iterations": 8,
        "ema": 0.9,
        "tile": 36,
        "optimizer": "adam",
        "lr": 0.001,
        "validate_every": 4,
        "checkpoint_every": 4,
        "workers": 0,
        "threads": 1,
        "gpus": 0,
    },
    "predict": {"block": [1, 64, 64], "threads": 1},
}


def snakemake(workdir: Path, *args: str, snakefile: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile or ROOT / "Snakefile"),
        "--cores",
        "2",
        "--workflow-profile",
        "none",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=workdir)


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule name -> job count (empty when nothing is to be done)."""
    if "Nothing to be done" in output:
        return {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ") and "count" in line)
    jobs = {}
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run = snakemake(work, "--configfile", "tiny.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    return work


@pytest.fixture
def tiny_model_and_volume(tmp_path):
    """(model.pt, volume) paths: an untrained U-Net (width 4, 3 levels, seed 0) and a random uint8 zarr volume of
    3 x 70 x 53 voxels in one chunk."""
    import torch

    from unetflow.models import UNet, UNetConfig
    from unetflow.models.checkpoint import save_checkpoint
    from unetflow.store import create_image

    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    save_checkpoint(model, UNet(UNetConfig(base_width=4, levels=3, dropout=0)))
    volume = tmp_path / "v.ome.zarr"
    data = np.random.default_rng(0).integers(0, 255, (3, 70, 53)).astype(np.uint8)
    create_image(volume, data.shape, np.uint8, data.shape)[:] = data
    return str(model), str(volume)


def pytest_collection_modifyitems(config, items):
    """Tests that start OpenVINO in this process run last (`make test` runs them in a process of their own): a
    training test after them died with a segmentation fault in CI on a CPU with AMX, and a torch.compile test
    on an AVX2 EPYC (the pipeline runs prediction and training in separate processes)."""
    items.sort(key=lambda item: item.get_closest_marker("openvino") is not None)


@pytest.fixture(autouse=True)
def _openvino_only_in_tests_marked_for_it(request):
    """`predict.engine: auto` (the default) runs eager PyTorch in this process except in tests marked openvino,
    which run apart: OpenVINO's native thread pools stay in the process once started (see above). Commands the
    tests start (`unetflow`, Snakemake's jobs) are processes of their own and run `auto` as users do. A patch of
    its own: a test's `monkeypatch.undo()` leaves it in place."""
    if request.node.get_closest_marker("openvino") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("unetflow.inference.engines.AUTO_ON_CPU", "eager")
        yield
