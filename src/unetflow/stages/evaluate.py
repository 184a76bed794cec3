"""Evaluate: per-slice metrics of a segmentation against ground truth, into a CSV (one row per slice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.labels import cell_mask, instance_labels, recorded_convention
from unetflow.metrics import slice_metrics
from unetflow.store import open_image


def evaluate_volume(
    segmentation: str | Path, truth: str | Path, out: str | Path, connectivity: int = 4, name: str = ""
) -> pd.DataFrame:
    seg, gt = open_image(segmentation), open_image(truth)
    if seg.shape != gt.shape:
        raise ValueError(f"{segmentation} has shape {seg.shape} but ground truth {truth} has {gt.shape}")
    convention = recorded_convention(gt.attrs, truth)
    rows = []
    for z in range(seg.shape[0]):
        segments = np.asarray(seg.array[z])
        labels = np.asarray(gt.array[z])
        true_cell = cell_mask(labels, convention)
        true_cells = instance_labels(labels, convention, connectivity)
        rows.append({"volume": name, "slice": z, **slice_metrics(segments > 0, segments, true_cell, true_cells)})
    frame = pd.DataFrame(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    return frame
