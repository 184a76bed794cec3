import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from unetflow.components import label


@pytest.mark.parametrize(
    ("shape", "chunks", "rank"),
    [((60, 70), (13, 17), 1), ((60, 70), (13, 17), 2), ((9, 30, 31), (4, 7, 9), 1), ((9, 30, 31), (4, 7, 9), 3)],
)
def test_chunked_components_equal_whole_array(shape, chunks, rank):
    mask = np.random.default_rng(0).random(shape) > 0.45
    structure = ndimage.generate_binary_structure(len(shape), rank)
    expected, n = ndimage.label(mask, structure)
    got = label(da.from_array(mask, chunks=chunks), structure).compute()
    assert got.max() == n
    # the same partition: a one-to-one map between the two labellings
    assert len(set(zip(got.ravel(), expected.ravel(), strict=True))) == n + 1
    np.testing.assert_array_equal(got > 0, expected > 0)


def test_per_slice_structure_keeps_slices_apart():
    mask = np.ones((3, 8, 8), bool)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    got = label(da.from_array(mask, chunks=(1, 3, 5)), structure).compute()
    assert sorted(np.unique(got)) == [1, 2, 3]


def test_empty_mask():
    assert label(da.zeros((4, 4), dtype=bool, chunks=2), np.ones((3, 3), bool)).compute().max() == 0
