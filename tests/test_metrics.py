import numpy as np
import pytest

from unetflow.metrics import overlap_scores, pixel_error, rand_error, rand_scores, slice_metrics


def test_perfect_segmentation():
    truth = np.array([[1, 1, 0, 2, 2]])
    assert rand_scores(truth, truth) == (0.0, 1.0, 1.0)


def test_merge_lowers_precision_by_hand():
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 5, 5, 5]])
    # foreground pixels: 4; p_ij = [2, 2] in one column; sum p^2 = 8; sum s^2 = 16; sum t^2 = 8
    error, precision, recall = rand_scores(pred, truth)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(1.0)
    assert error == pytest.approx(1 - 2 * 0.5 / 1.5)


def test_predicted_boundary_pixels_are_singletons_by_hand():
    truth = np.array([[1, 1, 1, 1]])
    pred = np.array([[3, 3, 0, 0]])
    # p = {(1,3): 2} plus two singletons: sum p^2 = 4 + 2 = 6; sum s^2 = 4 + 2 = 6; sum t^2 = 16
    error, precision, recall = rand_scores(pred, truth)
    assert precision == pytest.approx(1.0) and recall == pytest.approx(6 / 16)
    assert error == pytest.approx(1 - 2 * (6 / 16) / (1 + 6 / 16))


def test_split_by_hand_and_background_dropped():
    truth = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[1, 1, 2, 2, 9, 9]])  # a split; predictions on truth background are ignored
    error, precision, recall = rand_scores(pred, truth)
    assert precision == pytest.approx(1.0) and recall == pytest.approx(0.5)
    assert error == pytest.approx(1 / 3)


def test_no_truth_cells_is_zero_error():
    assert rand_error(np.ones((3, 3), int), np.zeros((3, 3), int)) == 0.0


def test_pixel_error_and_overlap():
    truth = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 0, 0]], bool)
    assert pixel_error(pred, truth) == 0.25
    assert overlap_scores(pred, truth) == (pytest.approx(0.5), pytest.approx(2 / 3))
    assert overlap_scores(np.zeros(3, bool), np.zeros(3, bool)) == (1.0, 1.0)


def test_slice_metrics_in_range():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (32, 32))
    pred = rng.integers(0, 5, (32, 32))
    row = slice_metrics(pred > 0, pred, truth > 0, truth)
    assert all(0 <= v <= 1 for v in row.values())
