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


def _random_case(rng, shape):
    truth = rng.integers(0, 6, shape)  # instance ids, 0 = membrane
    pred = rng.integers(0, 5, shape)
    pred[rng.random(shape) < 0.3] = 0  # predicted boundary
    return pred > 0, pred, truth > 0, truth


def _reference(predicted_cell, pred, true_cell, truth):
    """The ISBI definitions written out with a dense contingency matrix (independent of `Counts`)."""
    inside = truth > 0
    t, p = truth[inside], pred[inside]
    table = np.zeros((t.max() + 1, p.max() + 1))
    np.add.at(table, (t[p > 0], p[p > 0]), 1)
    singletons = float((p == 0).sum())
    sum_pij2 = (table**2).sum() + singletons
    precision = sum_pij2 / ((table.sum(0) ** 2).sum() + singletons)
    recall = sum_pij2 / (np.bincount(t) ** 2).sum()
    inter = (predicted_cell & true_cell).sum()
    inter_m = (~predicted_cell & ~true_cell).sum()
    return {
        "pixel_error": float((predicted_cell != true_cell).mean()),
        "rand_error": 1 - 2 * precision * recall / (precision + recall),
        "rand_precision": precision,
        "rand_recall": recall,
        "iou_cell": inter / (predicted_cell | true_cell).sum(),
        "iou_membrane": inter_m / (~predicted_cell | ~true_cell).sum(),
        "dice_cell": 2 * inter / (predicted_cell.sum() + true_cell.sum()),
        "dice_membrane": 2 * inter_m / ((~predicted_cell).sum() + (~true_cell).sum()),
    }


def test_counts_give_the_isbi_definitions_on_random_segmentations():
    from unetflow.metrics import Counts

    rng = np.random.default_rng(4)
    for _ in range(5):
        case = _random_case(rng, (40, 30))
        assert Counts().add(*case).metrics() == pytest.approx(_reference(*case), rel=1e-12)
        assert slice_metrics(*case) == pytest.approx(_reference(*case), rel=1e-12)


def test_counts_summed_block_by_block_equal_the_whole_volume():
    """A volume cut into blocks along every axis: the summed counts give exactly the whole volume's metrics."""
    from unetflow.metrics import Counts

    rng = np.random.default_rng(5)
    case = _random_case(rng, (6, 40, 30))
    whole = Counts().add(*case).metrics()
    total = Counts()
    for z in range(0, 6, 4):
        for y in range(0, 40, 16):
            for x in range(0, 30, 16):
                region = (slice(z, z + 4), slice(y, y + 16), slice(x, x + 16))
                total.merge(Counts().add(*(a[region] for a in case)))
    assert total.metrics() == pytest.approx(whole, rel=1e-12)
    assert whole == pytest.approx(_reference(*case), rel=1e-12)
