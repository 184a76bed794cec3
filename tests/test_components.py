"""Segmentation unit by unit across jobs (label, merge, relabel): equal to labelling the whole volume at once, for
every connectivity, with cells crossing several units along every axis and the minimum size applied to joined
cells."""

import numpy as np
import pytest
from scipy import ndimage

from unetflow.components import connecting_axes, label_unit
from unetflow.labels import connectivity_structure
from unetflow.stages import segment
from unetflow.store import atomic_output, create_image, open_image


def _probabilities(path, cell, chunks=(2, 3, 8, 8)):
    with atomic_output(path) as tmp:
        create_image(tmp, (2, *cell.shape), np.float32, chunks, "czyx")[:] = np.stack([1.0 - cell, cell]).astype("f4")
        from unetflow.store import set_attrs

        set_attrs(tmp, {"model_dims": 2})
    return path


def _whole(cell, structure, min_size):
    labels, n = ndimage.label(cell, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    labels[(sizes < min_size)[labels]] = 0
    return labels


def _same_partition(a, b):
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _volume():
    # Thin, winding cells: many cross two or more units along every axis, several touch only at edges or corners.
    rng = np.random.default_rng(7)
    return ndimage.binary_opening(rng.random((9, 30, 27)) > 0.5, structure=np.ones((1, 1, 1))) & (
        rng.random((9, 30, 27)) > 0.2
    )


@pytest.mark.parametrize(("dims", "connectivity"), [(2, 4), (2, 8), (3, 6), (3, 18), (3, 26)])
def test_units_equal_whole_volume_labelling_with_the_minimum_size(tmp_path, dims, connectivity):
    cell = _volume()
    probs = _probabilities(tmp_path / "p.ome.zarr", cell)
    structure = segment.structure_for(dims, connectivity)
    for min_size in (0, 5):
        out = segment.segment_volume(
            probs, tmp_path / f"s{min_size}.ome.zarr", dims=dims, connectivity=connectivity, min_size=min_size
        )
        got = open_image(out)
        expected = _whole(cell, structure, min_size)
        _same_partition(got.array[:], expected)
        n = len(np.unique(expected)) - 1
        assert got.attrs["segments"] == n and sorted(np.unique(got.array[:]))[1:] == list(range(1, n + 1))
        if min_size:
            small = np.bincount(ndimage.label(cell, structure=structure)[0].ravel())[1:] < min_size
            assert small.any(), "the case should drop some cells"


def test_a_segmentation_split_over_jobs_equals_one_job_and_resumes(tmp_path):
    cell = _volume()
    probs = _probabilities(tmp_path / "p.ome.zarr", cell)
    one = open_image(segment.segment_volume(probs, tmp_path / "one.ome.zarr", dims=3, connectivity=26)).array[:]
    job = segment.SegmentJob(str(probs), str(tmp_path / "split.ome.zarr"), dims=3, connectivity=26)
    assert segment.label(job, (0, 3), limit=5) == 5  # 48 units (3 x 4 x 4), every third: 16 in all
    assert segment.label(job, (0, 3)) == 11
    with pytest.raises(RuntimeError, match="32 units are not labelled yet"):
        segment.merge(job)
    assert segment.label(job, (0, 3)) == 0  # recorded: nothing to redo
    assert segment.label(job, (1, 3)) + segment.label(job, (2, 3)) == 32
    segment.merge(job)
    assert segment.relabel(job, (1, 2)) == 24
    with pytest.raises(RuntimeError, match="24 files are not done yet"):
        segment.gather(job)
    segment.relabel(job, (0, 2))
    split = open_image(segment.gather(job)).array[:]
    assert np.array_equal(split, one)
    assert not job.units.exists() and not job.store.exists()


def test_a_unit_numbers_its_complete_cells_first_and_keeps_its_faces():
    mask = np.zeros((3, 6, 6), bool)
    mask[1, 2:4, 2:4] = True  # inside: complete
    mask[1, 0, 0:2] = True  # on the face y = 0
    mask[2, 5, 5] = True  # on three faces
    structure = connectivity_structure(3, 6)
    labels, summary = label_unit(mask, structure, min_size=0)
    assert summary.complete == 1 and labels[1, 2, 2] == 1
    assert sorted(np.unique(labels[1, 0, :2])) == [2] and labels[2, 5, 5] == 3
    assert list(summary.face_sizes) == [2, 1] and set(summary.faces) == {
        f"{s}{a}" for s in ("low", "high") for a in range(3)
    }
    assert connecting_axes(segment.structure_for(2, 8)) == (1, 2)


def test_segment_refuses_a_step_out_of_order(tmp_path):
    probs = _probabilities(tmp_path / "p.ome.zarr", _volume())
    job = segment.SegmentJob(str(probs), str(tmp_path / "s.ome.zarr"))
    with pytest.raises(RuntimeError, match="run `segment --phase label` first"):
        segment.merge(job)
    segment.label(job)
    with pytest.raises(RuntimeError, match="run `segment --phase merge` first"):
        segment.relabel(job)


def _merged(root, mask, unit, structure):
    from unetflow.blocks import block_grid
    from unetflow.components import UnitStore

    grid = block_grid(mask.shape, unit, (0,) * mask.ndim, unit)
    UnitStore.create(root, grid, unit, {})
    cells = UnitStore(root, grid)
    for block in grid:
        cells.label(block, mask[block.write], structure, 0)
    numbering = cells.merge(structure, 0)
    return numbering, cells.cells_in(tuple(slice(0, s) for s in mask.shape), numbering)


def _in_units(tmp_path, mask, unit, structure):
    """Label a mask unit by unit through a UnitStore (every step in this process) and read it back whole."""
    from unetflow.blocks import block_grid
    from unetflow.components import UnitStore

    numbering, whole = _merged(tmp_path / "cells", mask, unit, structure)
    grid = block_grid(mask.shape, unit, (0,) * mask.ndim, unit)
    cells = UnitStore(tmp_path / "cells", grid)
    for block in grid:  # a unit relabelled alone reads the same ids
        assert np.array_equal(cells.relabel(block, numbering), whole[block.write])
    return whole, numbering.count


@pytest.mark.parametrize(
    ("shape", "unit", "rank"),
    [((60, 70), (13, 17), 1), ((60, 70), (13, 17), 2), ((9, 30, 31), (4, 7, 9), 1), ((9, 30, 31), (4, 7, 9), 3)],
)
def test_units_equal_whole_array_labelling_in_2d_and_3d_arrays(tmp_path, shape, unit, rank):
    mask = np.random.default_rng(0).random(shape) > 0.45
    structure = ndimage.generate_binary_structure(len(shape), rank)
    expected, n = ndimage.label(mask, structure)
    got, count = _in_units(tmp_path, mask, unit, structure)
    assert count == n and got.max() == n
    _same_partition(got, expected)
    # any region reads the ids of the whole
    assert count == len(np.unique(got)) - 1


def test_an_empty_mask_has_no_cells(tmp_path):
    got, count = _in_units(tmp_path, np.zeros((4, 4), bool), (2, 2), np.ones((3, 3), bool))
    assert count == 0 and not got.any()


def test_the_merge_tree_joins_per_slice_cells_within_a_z_row_and_3d_cells_across_the_volume():
    from unetflow.cell_merge import MergeTree

    per_slice, volume = MergeTree((9, 4, 4), (1, 2)), MergeTree((9, 4, 4), (0, 1, 2))
    assert per_slice.depth == 2 and per_slice.groups(1).counts == (9, 2, 2) and per_slice.groups(2).counts == (9, 1, 1)
    assert volume.depth == 4 and volume.groups(1).counts == (5, 2, 2) and volume.groups(4).counts == (1, 1, 1)
    assert MergeTree((3, 1, 1), (1, 2)).depth == 1  # one unit per slice: its face cells still close at level 1


def test_per_slice_and_3d_cells_get_one_table_per_level_1_group(tmp_path):
    mask = _volume()  # 9 x 30 x 27 in units of 1 x 8 x 8: 9 x 4 x 4 units
    for dims, connectivity, tables in ((2, 8, 9 * 2 * 2), (3, 26, 5 * 2 * 2)):
        structure = segment.structure_for(dims, connectivity)
        numbering, whole = _merged(tmp_path / f"d{dims}", mask, (1, 8, 8), structure)
        assert len(list((tmp_path / f"d{dims}" / "tables").glob("*.npz"))) == tables
        _same_partition(whole, _whole(mask, structure, 0))


def test_a_group_of_the_tree_holds_the_cells_on_its_childrens_faces_not_the_volumes(tmp_path, monkeypatch):
    from unetflow import cell_merge

    held = []
    save = cell_merge._Step.save
    monkeypatch.setattr(cell_merge._Step, "save", lambda step, path: (held.append(len(step.nodes)), save(step, path)))
    period = (np.arange(32) % 8) >= 2  # columns of 6 x 6 px through all 16 slices, on every unit's faces
    mask = np.broadcast_to(period[:, None] & period[None, :], (16, 32, 32)).copy()
    numbering, whole = _merged(tmp_path / "c", mask, (1, 8, 8), segment.structure_for(3, 6))
    assert numbering.count == 16 and numbering.face_cells == 16 * 16
    assert max(held) == 2 * 16  # the top group: the columns that cross its middle plane, from both halves
    _same_partition(whole, _whole(mask, segment.structure_for(3, 6), 0))
