"""The seeded watershed splits cells that a threshold joins through a thin bridge, keeps seedless cells, and in the
segment stage gives the same ids' partition whichever job split; it refuses what it cannot do per slice."""

import numpy as np
import pytest
from scipy import ndimage

from unetflow.watershed import seeded_watershed


def _bridged():
    cell = np.full((20, 30), 0.1)
    cell[2:18, 2:14] = 0.95
    cell[2:18, 16:28] = 0.95
    cell[9:11, 14:16] = 0.6  # a weak membrane: above a threshold of 0.5
    return cell


@pytest.mark.parametrize("seeds", ["probability", "distance"])
def test_a_bridge_between_two_cells_is_cut_where_the_membrane_is_likeliest(seeds):
    cell = _bridged()
    assert ndimage.label(cell > 0.5)[1] == 1  # the threshold alone merges them
    labels = seeded_watershed(cell, 0.5, seeds=seeds, seed_distance=3)
    assert len(np.unique(labels)) == 3 and labels[5, 5] != labels[5, 20]
    assert np.array_equal(labels > 0, cell > 0.5)  # the mask is the threshold's: only its partition changes


def test_a_cell_without_a_seed_is_kept_whole():
    cell = _bridged()
    cell[2:18, 16:28] = 0.7  # the right cell never reaches the seed threshold
    cell[9:11, 14:16] = 0.1
    labels = seeded_watershed(cell, 0.5, seeds="probability", seed_threshold=0.9)
    assert len(np.unique(labels)) == 3 and (labels[2:18, 16:28] == labels[5, 20]).all()


def test_the_watershed_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="per slice"):
        seeded_watershed(np.zeros((2, 4, 4)), 0.5)
    with pytest.raises(ValueError, match="seeds must be one of"):
        seeded_watershed(np.zeros((4, 4)), 0.5, seeds="maxima")


def test_the_segment_stage_uses_the_watershed_per_slice(tmp_path):
    from unetflow.stages.segment import segment_volume
    from unetflow.store import atomic_output, create_image, open_image, set_attrs

    cell = np.stack([_bridged(), _bridged()[::-1]]).astype(np.float32)
    path = tmp_path / "p.ome.zarr"
    with atomic_output(path) as tmp:
        create_image(tmp, (2, *cell.shape), np.float32, (2, 1, 20, 30), "czyx")[:] = np.stack([1 - cell, cell])
        set_attrs(tmp, {"model_dims": 2})
    plain = open_image(segment_volume(path, tmp_path / "c.ome.zarr")).array[:]
    split = open_image(segment_volume(path, tmp_path / "w.ome.zarr", method="watershed")).array[:]
    assert plain.max() == 2 and split.max() == 4 and np.array_equal(plain > 0, split > 0)
    assert len(np.unique(split[0])) == len(np.unique(split[1])) == 3  # two cells per slice, ids distinct
    kept = open_image(segment_volume(path, tmp_path / "m.ome.zarr", method="watershed", min_size=150)).array[:]
    assert kept.max() == 4  # cells of 16 x 12 pixels and a little more: the min size applies to the watershed's cells
    gone = open_image(segment_volume(path, tmp_path / "g.ome.zarr", method="watershed", min_size=300)).array[:]
    assert gone.max() == 0
    with pytest.raises(ValueError, match="watershed runs per whole slice: it needs segment.dims 2"):
        segment_volume(path, tmp_path / "x.ome.zarr", method="watershed", dims=3, connectivity=6)
    tiled = tmp_path / "t.ome.zarr"
    with atomic_output(tiled) as tmp:
        create_image(tmp, (2, *cell.shape), np.float32, (2, 1, 10, 30), "czyx")[:] = np.stack([1 - cell, cell])
        set_attrs(tmp, {"model_dims": 2})
    with pytest.raises(ValueError, match="probability files of whole slices"):
        segment_volume(tiled, tmp_path / "y.ome.zarr", method="watershed")
