from pathlib import Path

import numpy as np
import pytest
import tifffile

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
