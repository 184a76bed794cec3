"""Segmentation metrics, as the ISBI 2012 challenge defines them (Arganda-Carreras et al. 2015), per slice and
per volume.

Which pixels count: the **pixel error**, **IoU** and **Dice** count every pixel. The Rand and information scores
count only pixels inside ground-truth cells (truth 0, the membrane, is dropped: "foreground-restricted"), over the
contingency table n_ij of ground-truth cell i and predicted segment j; a pixel the prediction calls boundary
(segment 0) inside a ground-truth cell counts as a segment of its own (a singleton), as in the challenge's script.
With N such pixels, p_ij = n_ij / N, t_i = sum_j p_ij (truth), s_j = sum_i p_ij (prediction):

- pixel error: fraction of pixels whose thresholded class differs from the truth's;
- Rand: split score V_split = sum p_ij^2 / sum t_i^2 (low when cells are split), merge score
  V_merge = sum p_ij^2 / sum s_j^2 (low when cells are merged), error 1 - 2 V_split V_merge / (V_split + V_merge);
- information: with entropies H(S) of the prediction, H(T) of the truth and their mutual information I,
  V_split = I / H(S), V_merge = I / H(T), error 1 - their harmonic mean (a score is 1 where its entropy is 0);
- IoU and Dice of the cell and membrane classes (a class absent from both truth and prediction scores 1).

With no ground-truth cell pixels there is nothing to get wrong: Rand and information errors are 0.
How `skimage.metrics` differs (tested): `adapted_rand_error(truth, prediction, ignore_labels=(0,))` counts pairs
of distinct pixels (each sum of n^2 less n) where the challenge counts all pairs, and returns (error, "precision",
"recall") with "precision" dividing by the truth's pairs (the split score here) and "recall" by the prediction's
(the merge score); `variation_of_information(truth, prediction, ignore_labels=(0,))` gives the conditional
entropies (H(S|T), H(T|S)) = (H(S) - I, H(T) - I) in bits (here: nats). Both treat predicted 0 as one big
segment, not as singletons, so they agree only where the prediction has no 0 inside truth cells. The warping error
is in `unetflow.warping`.
"""

from __future__ import annotations

import numpy as np


def pixel_error(predicted_cell: np.ndarray, true_cell: np.ndarray) -> float:
    predicted_cell, true_cell = np.asarray(predicted_cell, bool), np.asarray(true_cell, bool)
    if predicted_cell.shape != true_cell.shape:
        raise ValueError(f"shapes differ: prediction {predicted_cell.shape}, truth {true_cell.shape}")
    return float(np.mean(predicted_cell != true_cell)) if true_cell.size else 0.0


def rand_scores(predicted_segments: np.ndarray, true_cells: np.ndarray) -> tuple[float, float, float]:
    """(Rand error, merge score, split score) restricted to ground-truth cells (see the module doc)."""
    pred, truth = np.asarray(predicted_segments), np.asarray(true_cells)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    return Counts().add(pred > 0, pred, truth > 0, truth).rand_scores()


def rand_error(predicted_segments: np.ndarray, true_cells: np.ndarray) -> float:
    return rand_scores(predicted_segments, true_cells)[0]


def _overlap(inter: int | float, a: int | float, b: int | float) -> tuple[float, float]:
    """(IoU, Dice) from an intersection and the two sizes; 1.0 for both when both are empty."""
    union = a + b - inter
    return (1.0, 1.0) if union == 0 else (float(inter / union), float(2 * inter / (a + b)))


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two boolean masks; 1.0 for both when both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    return _overlap(int(np.logical_and(predicted, truth).sum()), int(predicted.sum()), int(truth.sum()))


def slice_metrics(
    predicted_cell: np.ndarray, predicted_segments: np.ndarray, true_cell: np.ndarray, true_cells: np.ndarray
) -> dict[str, float]:
    """All per-slice metrics in one row."""
    if np.shape(predicted_cell) != np.shape(true_cell):
        raise ValueError(f"shapes differ: prediction {np.shape(predicted_cell)}, truth {np.shape(true_cell)}")
    return Counts().add(predicted_cell, predicted_segments, true_cell, true_cells).metrics()


class Counts:
    """Everything the metrics of this module need, as counts that add up block by block: the contingency table of
    (true cell, predicted segment) over ground-truth cell pixels, the predicted-boundary pixels inside cells, and
    the four cells of the cell/membrane confusion matrix. Metrics of a volume larger than memory are the metrics of
    the sum of its blocks' counts, equal to computing them on the whole volume at once.

    Ids must name the same object in every block (for instance ids made unique across a volume); the table holds
    one entry per overlapping (cell, segment) pair, so its memory follows the objects, not the voxels."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[int, int], int] = {}
        self.singletons = 0  # predicted boundary pixels inside true cells: each a segment of its own
        self.truth_sizes: dict[int, int] = {}
        self.confusion = np.zeros((2, 2), np.int64)  # [true cell][predicted cell]

    def add(self, predicted_cell, predicted_segments, true_cell, true_cells) -> Counts:
        predicted_cell, true_cell = np.asarray(predicted_cell, bool).ravel(), np.asarray(true_cell, bool).ravel()
        pred, truth = np.asarray(predicted_segments).ravel(), np.asarray(true_cells).ravel()
        if not (pred.shape == truth.shape == predicted_cell.shape == true_cell.shape):
            raise ValueError("prediction and truth of a block must have the same shape")
        for t in (0, 1):
            for p in (0, 1):
                self.confusion[t, p] += int(np.count_nonzero((true_cell == t) & (predicted_cell == p)))
        inside = truth > 0
        t, p = truth[inside].astype(np.int64), pred[inside].astype(np.int64)
        boundary = p == 0
        self.singletons += int(boundary.sum())
        ids, sizes = np.unique(t, return_counts=True)
        for i, n in zip(ids.tolist(), sizes.tolist(), strict=True):
            self.truth_sizes[i] = self.truth_sizes.get(i, 0) + n
        if (~boundary).any():
            both, counts = np.unique(np.stack([t[~boundary], p[~boundary]]), axis=1, return_counts=True)
            for (i, j), n in zip(both.T.tolist(), counts.tolist(), strict=True):
                self.pairs[(i, j)] = self.pairs.get((i, j), 0) + n
        return self

    def merge(self, other: Counts, truth_offset: int = 0) -> Counts:
        """Add `other`'s counts; `truth_offset` shifts its true cell ids (cells numbered per slice become distinct
        objects of a volume)."""
        for (i, j), n in other.pairs.items():
            key = (i + truth_offset, j)
            self.pairs[key] = self.pairs.get(key, 0) + n
        for i, n in other.truth_sizes.items():
            self.truth_sizes[i + truth_offset] = self.truth_sizes.get(i + truth_offset, 0) + n
        self.singletons += other.singletons
        self.confusion += other.confusion
        return self

    def rand_scores(self) -> tuple[float, float, float]:
        """(Rand error, merge score, split score) as the module doc defines them."""
        if not self.truth_sizes:
            return 0.0, 1.0, 1.0
        sum_pij2 = float(sum(n * n for n in self.pairs.values())) + self.singletons
        columns: dict[int, int] = {}
        for (_, j), n in self.pairs.items():
            columns[j] = columns.get(j, 0) + n
        sum_s2 = float(sum(n * n for n in columns.values())) + self.singletons
        sum_t2 = float(sum(n * n for n in self.truth_sizes.values()))
        merge, split = sum_pij2 / sum_s2, sum_pij2 / sum_t2
        return float(1.0 - 2 * merge * split / (merge + split)), float(merge), float(split)

    def entropies(self) -> tuple[float, float, float]:
        """(H(S), H(T), I(S; T)) in nats, of the prediction S and the truth T over ground-truth cell pixels."""
        n = float(sum(self.truth_sizes.values()))
        if n == 0:
            return 0.0, 0.0, 0.0
        columns: dict[int, int] = {}
        for (_, j), c in self.pairs.items():
            columns[j] = columns.get(j, 0) + c

        def h(counts) -> float:
            p = np.fromiter(counts, np.float64) / n
            return float(-(p * np.log(p)).sum())

        singles = self.singletons * (np.log(n) / n)  # each predicted boundary pixel: a segment of one pixel
        h_s = h(columns.values()) + singles
        h_t = h(self.truth_sizes.values())
        h_st = h(self.pairs.values()) + singles
        return h_s, h_t, max(0.0, h_s + h_t - h_st)

    def information_scores(self) -> tuple[float, float, float]:
        """(information error, merge score I/H(T), split score I/H(S)) as the module doc defines them."""
        h_s, h_t, mutual = self.entropies()
        split = mutual / h_s if h_s > 0 else 1.0
        merge = mutual / h_t if h_t > 0 else 1.0
        score = 2 * split * merge / (split + merge) if split + merge > 0 else 0.0
        return float(1.0 - score), float(merge), float(split)

    def metrics(self) -> dict[str, float]:
        """The row `slice_metrics` gives, from the counts."""
        (tn, fp), (fn, tp) = self.confusion.tolist()
        total = tn + fp + fn + tp
        error, merge, split = self.rand_scores()
        info_error, info_merge, info_split = self.information_scores()

        iou_cell, dice_cell = _overlap(tp, tp + fp, tp + fn)
        iou_membrane, dice_membrane = _overlap(tn, tn + fn, tn + fp)
        return {
            "pixel_error": (fp + fn) / total if total else 0.0,
            "rand_error": error,
            "rand_split": split,
            "rand_merge": merge,
            "info_error": info_error,
            "info_split": info_split,
            "info_merge": info_merge,
            "iou_cell": iou_cell,
            "iou_membrane": iou_membrane,
            "dice_cell": dice_cell,
            "dice_membrane": dice_membrane,
        }
