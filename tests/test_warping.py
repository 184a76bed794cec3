"""The warping error on cases whose answer is known, and the two properties that define the warped truth: it has
the truth's topology, and no pixel where it still differs from the prediction could be flipped without changing
that topology."""

import numpy as np
import pytest
from scipy import ndimage

from unetflow.warping import simple_in_3d, simple_points, warp, warping_error

FOUR, EIGHT = ndimage.generate_binary_structure(2, 1), ndimage.generate_binary_structure(2, 2)


def _two_cells():
    truth = np.zeros((20, 20), bool)
    truth[2:18, 2:9] = True
    truth[2:18, 11:18] = True  # two cells, a 2-pixel membrane (columns 9 and 10) between them
    return truth


def _pixels(truth, prediction, foreground=4):
    return round(warping_error(truth, prediction, foreground) * truth.size)


def test_a_shifted_or_thickened_boundary_costs_nothing():
    truth = _two_cells()
    assert _pixels(truth, np.roll(truth, 1, axis=1)) == 0
    assert _pixels(truth, ndimage.binary_erosion(truth)) == 0
    assert _pixels(truth, truth) == 0


def test_a_merge_a_split_a_hole_and_a_missing_cell_cost_what_they_must():
    truth = _two_cells()
    merged = truth.copy()
    merged[8:10, 9:11] = True  # a 2 x 2 gap in the membrane joins the cells: one pixel per row must stay
    assert _pixels(truth, merged) == 2
    split = truth.copy()
    split[10, 2:9] = False  # a line across the left cell: all but one of its pixels can go
    assert _pixels(truth, split) == 1
    hole = truth.copy()
    hole[5, 5] = False
    assert _pixels(truth, hole) == 1
    missing = truth.copy()
    missing[:, 11:] = False  # the right cell shrinks to nothing but its last pixel
    assert _pixels(truth, missing) == 1


def test_connectivity_pair_decides_whether_a_diagonal_joins():
    truth = np.zeros((9, 9), bool)
    truth[1:4, 1:4] = True
    truth[4:7, 4:7] = True  # two squares that touch at a corner: two 4-connected cells, one 8-connected cell
    prediction = truth.copy()
    prediction[3, 4] = True  # fills the corner: one cell whichever the connectivity
    assert _pixels(truth, prediction, foreground=4) == 1  # a merge of two cells
    assert _pixels(truth, prediction, foreground=8) == 0  # the same one cell
    with pytest.raises(ValueError, match="4 or 8"):
        simple_points(6)


def _topology(image, foreground):
    structures = (FOUR, EIGHT) if foreground == 4 else (EIGHT, FOUR)
    padded = np.pad(image, 1)  # the outside is background, one component with the border
    return ndimage.label(padded, structures[0])[1], ndimage.label(~padded, structures[1])[1]


@pytest.mark.parametrize("foreground", [4, 8])
def test_the_warped_truth_keeps_the_topology_and_leaves_no_simple_mismatch(foreground):
    rng = np.random.default_rng(foreground)
    table = simple_points(foreground)
    for _ in range(5):
        truth = ndimage.binary_opening(rng.random((48, 40)) > 0.45)
        prediction = ndimage.binary_opening(rng.random((48, 40)) > 0.45)
        warped = warp(truth, prediction, foreground)
        assert _topology(warped, foreground) == _topology(truth, foreground)
        padded = np.pad(warped, 1).astype(int)
        for y, x in zip(*np.nonzero(warped != prediction), strict=True):
            code = sum(padded[y + dy, x + dx] << (3 * dy + dx) for dy in range(3) for dx in range(3))
            assert not table[code], (y, x)


# 3D: the (26, 6) and (6, 26) pairs.

SIX, TWENTY_SIX = ndimage.generate_binary_structure(3, 1), ndimage.generate_binary_structure(3, 3)


def _code(patch):
    return int((patch.ravel().astype(np.int64) << np.arange(27)).sum())


def test_3d_simple_points_agree_with_lees_euler_criterion():
    """Lee, Kashyap and Chu (1994): for 26-connected objects, a voxel is simple when removing it keeps the Euler
    number of its neighbourhood and leaves the neighbours one 26-component; checked with skimage on patterns of
    every density."""
    from skimage.measure import euler_number

    rng = np.random.default_rng(3)
    patterns = rng.random((1500, 27)) < np.repeat([0.2, 0.4, 0.5, 0.6, 0.8], 300)[:, None]
    ours = simple_in_3d((patterns.astype(np.int64) << np.arange(27)).sum(axis=1), foreground=26)
    for pattern, simple in zip(patterns, ours, strict=True):
        cube = pattern.reshape(3, 3, 3)
        with_centre, without = cube.copy(), cube.copy()
        with_centre[1, 1, 1], without[1, 1, 1] = True, False
        euler_kept = euler_number(np.pad(with_centre, 1), 3) == euler_number(np.pad(without, 1), 3)
        assert simple == (euler_kept and ndimage.label(without, TWENTY_SIX)[1] == 1)
    assert 0.2 < ours.mean() < 0.6  # both answers are exercised


def test_3d_simple_points_of_known_shapes():
    plate = np.zeros((3, 3, 3), bool)
    plate[1] = True  # removing the middle of a plate pierces it: a tunnel in (26, 6), a cavity joined in (6, 26)
    line_end = np.zeros((3, 3, 3), bool)
    line_end[1, 1, 2] = True
    solid = np.ones((3, 3, 3), bool)  # removing the inside of a solid makes a cavity
    alone = np.zeros((3, 3, 3), bool)  # removing an isolated voxel removes an object
    codes = np.array([_code(c) for c in (plate, line_end, solid, alone)])
    for foreground in (6, 26):
        assert simple_in_3d(codes, foreground).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="6 or 26 in 3D"):
        warp(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), foreground=4)


def _two_cells_3d():
    truth = np.zeros((8, 16, 16), bool)
    truth[1:7, 2:14, 2:7] = True
    truth[1:7, 2:14, 9:14] = True  # two cells, a 2-voxel membrane (x 7 and 8) between them
    return truth


def _voxels(truth, prediction, foreground=None):
    return round(warping_error(truth, prediction, foreground) * truth.size)


def test_3d_a_shift_costs_nothing_and_a_merge_a_split_and_a_cavity_cost_what_they_must():
    truth = _two_cells_3d()
    assert _voxels(truth, np.roll(truth, 1, axis=2)) == 0
    assert _voxels(truth, ndimage.binary_erosion(truth)) == 0
    merged = truth.copy()
    merged[3:5, 6:8, 7:9] = True  # a 2 x 2 x 2 gap in the membrane joins the cells: one voxel per row in x must stay
    assert _voxels(truth, merged) == 4
    split = truth.copy()
    split[:, 7, :] = False  # a plane across both cells splits each: all but one voxel per cell can go
    assert _voxels(truth, split) == 2
    cavity = truth.copy()
    cavity[3, 5, 4] = False  # a hole inside the left cell
    assert _voxels(truth, cavity) == 1


def test_3d_connectivity_pair_decides_whether_an_edge_joins():
    truth = np.zeros((6, 6, 6), bool)
    truth[1:3, 1:3, 1:3] = True
    truth[3:5, 3:5, 1:3] = True  # two blocks touching along an edge: two 6-connected cells, one 26-connected cell
    prediction = truth.copy()
    prediction[2, 3, 1:3] = True  # a face contact: one cell whichever the pair
    assert _voxels(truth, prediction, foreground=6) >= 1
    assert _voxels(truth, prediction, foreground=26) == 0


@pytest.mark.parametrize("foreground", [6, 26])
def test_3d_the_warped_truth_keeps_the_topology_and_leaves_no_simple_mismatch(foreground):
    from skimage.measure import euler_number

    rng = np.random.default_rng(foreground)
    cells, background = (SIX, TWENTY_SIX) if foreground == 6 else (TWENTY_SIX, SIX)

    def topology(volume):
        padded = np.pad(volume, 1)
        return (
            ndimage.label(padded, cells)[1],
            ndimage.label(~padded, background)[1],
            euler_number(padded, 1 if foreground == 6 else 3),
        )

    for _ in range(3):
        truth = ndimage.binary_opening(rng.random((12, 20, 18)) > 0.45)
        prediction = ndimage.binary_opening(rng.random((12, 20, 18)) > 0.45)
        warped = warp(truth, prediction, foreground)
        assert topology(warped) == topology(truth)
        assert (warped != prediction).any()
        padded = np.pad(warped, 1)
        wrong = np.argwhere(warped != prediction)
        codes = [_code(padded[z : z + 3, y : y + 3, x : x + 3]) for z, y, x in wrong]
        assert not simple_in_3d(np.array(codes), foreground).any()
