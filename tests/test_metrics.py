import numpy as np
import pytest

from unetflow.metrics import overlap_scores, pixel_error, rand_error, rand_scores, slice_metrics


def test_perfect_segmentation():
    truth = np.array([[1, 1, 0, 2, 2]])
    assert rand_scores(truth, truth) == (0.0, 1.0, 1.0)


def test_a_merge_lowers_the_merge_score_by_hand():
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 5, 5, 5]])
    # foreground pixels: 4; p_ij = [2, 2] in one column; sum p^2 = 8; sum s^2 = 16; sum t^2 = 8
    error, merge, split = rand_scores(pred, truth)
    assert merge == pytest.approx(0.5) and split == pytest.approx(1.0)
    assert error == pytest.approx(1 - 2 * 0.5 / 1.5)


def test_predicted_boundary_pixels_are_singletons_by_hand():
    truth = np.array([[1, 1, 1, 1]])
    pred = np.array([[3, 3, 0, 0]])
    # p = {(1,3): 2} plus two singletons: sum p^2 = 4 + 2 = 6; sum s^2 = 4 + 2 = 6; sum t^2 = 16
    error, merge, split = rand_scores(pred, truth)
    assert merge == pytest.approx(1.0) and split == pytest.approx(6 / 16)
    assert error == pytest.approx(1 - 2 * (6 / 16) / (1 + 6 / 16))


def test_split_by_hand_and_background_dropped():
    truth = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[1, 1, 2, 2, 9, 9]])  # a split; predictions on truth background are ignored
    error, merge, split = rand_scores(pred, truth)
    assert merge == pytest.approx(1.0) and split == pytest.approx(0.5)
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
    merge = sum_pij2 / ((table.sum(0) ** 2).sum() + singletons)
    split = sum_pij2 / (np.bincount(t) ** 2).sum()
    n = len(t)
    joint = np.concatenate([table.ravel(), np.ones(int(singletons))]) / n
    columns = np.concatenate([table.sum(0), np.ones(int(singletons))]) / n
    rows = np.bincount(t)[1:] / n
    h = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    mutual = h(columns) + h(rows) - h(joint)
    info_split, info_merge = mutual / h(columns), mutual / h(rows)
    inter = (predicted_cell & true_cell).sum()
    inter_m = (~predicted_cell & ~true_cell).sum()
    return {
        "pixel_error": float((predicted_cell != true_cell).mean()),
        "rand_error": 1 - 2 * merge * split / (merge + split),
        "rand_split": split,
        "rand_merge": merge,
        "info_error": 1 - 2 * info_split * info_merge / (info_split + info_merge),
        "info_split": info_split,
        "info_merge": info_merge,
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


def test_information_scores_by_hand():
    from unetflow.metrics import Counts

    def scores(pred, truth):
        pred, truth = np.array([pred]), np.array([truth])
        return Counts().add(pred > 0, pred, truth > 0, truth).information_scores()

    assert scores([5, 5, 5, 5, 5], [1, 1, 0, 2, 2]) == (1.0, 0.0, 1.0)  # a merge: I = 0 = H(S), H(T) = ln 2
    assert scores([1, 1, 2, 2, 9, 9], [1, 1, 1, 1, 0, 0]) == (1.0, 1.0, 0.0)  # a split: I = 0 = H(T)
    assert scores([3, 3, 4, 4], [1, 1, 2, 2]) == (0.0, 1.0, 1.0)
    # truth (4, 4), prediction (6, 2) of 8 pixels, joint (4, 2, 2)
    h_t = np.log(2)
    h_s = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    mutual = h_s + h_t - -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    split, merge = mutual / h_s, mutual / h_t
    error, got_merge, got_split = scores([1, 1, 1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 2, 2, 2, 2])
    assert (got_split, got_merge) == (pytest.approx(split), pytest.approx(merge))
    assert error == pytest.approx(1 - 2 * split * merge / (split + merge))


def test_predicted_boundary_pixels_are_singletons_in_the_information_scores_too():
    from unetflow.metrics import Counts

    truth, pred = np.array([[1, 1, 1, 1]]), np.array([[3, 3, 0, 0]])
    h_s, h_t, mutual = Counts().add(pred > 0, pred, truth > 0, truth).entropies()
    # segments {3: 2 px} and two singletons of 1 px each in 4 pixels: H(S) = 0.5 ln 2 + 2 * 0.25 ln 4, H(T) = 0
    assert h_s == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(4)) and h_t == 0.0 and mutual == pytest.approx(0.0)


def test_rand_and_information_agree_with_skimage_where_the_conventions_agree():
    """skimage's Rand counts pairs of distinct pixels (sums of n^2 less n), the challenge all pairs (sums of n^2):
    the same contingency table gives both. Its VI gives the conditional entropies H(S|T) and H(T|S), in bits."""
    from skimage.metrics import adapted_rand_error, variation_of_information

    from unetflow.metrics import Counts

    rng = np.random.default_rng(11)
    for _ in range(5):
        truth = rng.integers(0, 6, (40, 30))
        pred = rng.integers(1, 5, (40, 30))  # no predicted boundary: skimage's convention and ours agree
        counts = Counts().add(pred > 0, pred, truth > 0, truth)
        n = sum(counts.truth_sizes.values())
        both = sum(c * c for c in counts.pairs.values())
        columns = np.bincount([j for (_, j) in counts.pairs], weights=list(counts.pairs.values()))
        rows = sum(c * c for c in counts.truth_sizes.values())
        merge, split = (both - n) / ((columns**2).sum() - n), (both - n) / (rows - n)
        expected = (1 - 2 * merge * split / (merge + split), split, merge)  # its "precision" divides by truth pairs
        assert expected == pytest.approx(adapted_rand_error(truth, pred, ignore_labels=(0,)), rel=1e-9)
        error, merge, split = counts.rand_scores()
        assert (merge, split) == (pytest.approx(both / (columns**2).sum()), pytest.approx(both / rows))
        h_s, h_t, mutual = counts.entropies()
        false_splits, false_merges = np.log(2) * variation_of_information(truth, pred, ignore_labels=(0,))  # bits
        assert (h_s - mutual, h_t - mutual) == (pytest.approx(false_splits), pytest.approx(false_merges))
    pred[:3] = 0  # predicted boundary inside cells: skimage makes it one segment, the challenge singletons
    counts = Counts().add(pred > 0, pred, truth > 0, truth)
    h_s, _, mutual = counts.entropies()
    assert h_s - mutual != pytest.approx(np.log(2) * variation_of_information(truth, pred, ignore_labels=(0,))[0])
