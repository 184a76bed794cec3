"""The warping error on cases whose answer is known, and the two properties that define the warped truth: it has
the truth's topology, and no pixel where it still differs from the prediction could be flipped without changing
that topology."""

import numpy as np
import pytest
from scipy import ndimage

from unetflow.warping import simple_points, warp, warping_error

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
