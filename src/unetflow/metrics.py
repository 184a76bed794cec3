"""Segmentation metrics per slice, as the ISBI 2012 challenge defines them.

- pixel error: fraction of pixels whose thresholded class differs from the ground truth;
- Rand error (foreground-restricted): contingency table between ground-truth cells i and predicted
  segments j over ground-truth cell pixels only (the background row dropped); predicted boundary pixels
  (segment 0) inside ground-truth cells each count as a segment of their own;
  precision = sum p_ij^2 / sum_j s_j^2, recall = sum p_ij^2 / sum_i t_i^2, error = 1 - 2PR / (P + R).
  Differs from `skimage.metrics.adapted_rand_error`, which treats predicted 0 as one big segment.
  With no ground-truth cell pixels there is nothing to get wrong and the error is 0;
- IoU and Dice of the cell and membrane classes (a class absent from both truth and prediction scores 1).
"""

from __future__ import annotations

import numpy as np


def pixel_error(predicted_cell: np.ndarray, true_cell: np.ndarray) -> float:
    predicted_cell, true_cell = np.asarray(predicted_cell, bool), np.asarray(true_cell, bool)
    if predicted_cell.shape != true_cell.shape:
        raise ValueError(f"shapes differ: prediction {predicted_cell.shape}, truth {true_cell.shape}")
    return float(np.mean(predicted_cell != true_cell)) if true_cell.size else 0.0


def _sum_squared_counts(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    return float(np.square(counts.astype(np.float64)).sum())


def rand_scores(predicted_segments: np.ndarray, true_cells: np.ndarray) -> tuple[float, float, float]:
    """(Rand error, precision, recall) restricted to ground-truth cells (see module docstring)."""
    pred = np.asarray(predicted_segments).ravel()
    truth = np.asarray(true_cells).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {predicted_segments.shape}, truth {true_cells.shape}")
    inside = truth > 0
    if not inside.any():
        return 0.0, 1.0, 1.0
    t, p = truth[inside].astype(np.int64), pred[inside].astype(np.int64)
    boundary = p == 0
    singletons = float(boundary.sum())
    t_seg, p_seg = t[~boundary], p[~boundary]
    # Pair codes for the contingency table without a dense matrix.
    _, p_dense = np.unique(p_seg, return_inverse=True)
    pair = t_seg * (int(p_dense.max(initial=0)) + 1) + p_dense
    sum_pij2 = _sum_squared_counts(pair) + singletons
    sum_s2 = _sum_squared_counts(p_seg) + singletons
    sum_t2 = _sum_squared_counts(t)
    precision = sum_pij2 / sum_s2
    recall = sum_pij2 / sum_t2
    v_rand = 2 * precision * recall / (precision + recall)
    return float(1.0 - v_rand), float(precision), float(recall)


def rand_error(predicted_segments: np.ndarray, true_cells: np.ndarray) -> float:
    return rand_scores(predicted_segments, true_cells)[0]


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two boolean masks; 1.0 for both when both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    inter = float(np.logical_and(predicted, truth).sum())
    union = float(np.logical_or(predicted, truth).sum())
    total = float(predicted.sum() + truth.sum())
    if union == 0:
        return 1.0, 1.0
    return inter / union, 2 * inter / total


def slice_metrics(
    predicted_cell: np.ndarray, predicted_segments: np.ndarray, true_cell: np.ndarray, true_cells: np.ndarray
) -> dict[str, float]:
    """All per-slice metrics in one row."""
    error, precision, recall = rand_scores(predicted_segments, true_cells)
    iou_cell, dice_cell = overlap_scores(predicted_cell, true_cell)
    iou_membrane, dice_membrane = overlap_scores(~np.asarray(predicted_cell, bool), ~np.asarray(true_cell, bool))
    return {
        "pixel_error": pixel_error(predicted_cell, true_cell),
        "rand_error": error,
        "rand_precision": precision,
        "rand_recall": recall,
        "iou_cell": iou_cell,
        "iou_membrane": iou_membrane,
        "dice_cell": dice_cell,
        "dice_membrane": dice_membrane,
    }
