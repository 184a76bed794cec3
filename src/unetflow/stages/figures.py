"""Figures for the report: the paper's Fig. 3 (an image, its labels and its weight map side by side), training
curves, overlays of segmentations with their false merges and splits marked, and a chart comparing experiments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.store import atomic_output, open_image


def weight_figure(images: str | Path, labels: str | Path, weights: str | Path, out: str | Path, index: int = 0) -> Path:
    """PNG of slice `index`: image, labels (cells white) and w(x) with a colour bar."""
    plt = _pyplot()
    img, lab, w = (open_image(p) for p in (images, labels, weights))
    if not 0 <= index < img.shape[0]:
        raise ValueError(f"{images}: slice {index} out of range (0..{img.shape[0] - 1})")
    panels = [np.asarray(a.array[index]) for a in (img, lab, w)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    axes[0].imshow(panels[0], cmap="gray")
    axes[1].imshow(panels[1] > 0, cmap="gray")
    shown = axes[2].imshow(panels[2], cmap="jet")
    fig.colorbar(shown, ax=axes[2], shrink=0.85, label="w(x)")
    attrs = w.attrs
    titles = ["image", "labels (cell white)", f"weight map (w0={attrs.get('w0')}, sigma={attrs.get('sigma')} px)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, out)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    plt = _pyplot()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(out)


def training_curves(train_log: str | Path, out: str | Path) -> Path:
    """PNG of a training run: the loss, and every validation metric, against the iteration."""
    log = pd.read_csv(train_log)
    if "iteration" not in log.columns or "loss" not in log.columns:
        raise ValueError(f"{train_log}: not a unetflow train_log.csv (needs the columns iteration and loss)")
    plt = _pyplot()
    validation = [c for c in log.columns if c.startswith("val_") and log[c].notna().any()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    axes[0].plot(log["iteration"], log["loss"], color="black")
    axes[0].set(title="training loss", xlabel="iteration", ylabel="loss")
    for column in validation:
        rows = log[log[column].notna()]
        axes[1].plot(rows["iteration"], rows[column], marker="o", label=column.removeprefix("val_"))
    axes[1].set(title="validation", xlabel="iteration", ylabel="error")
    if validation:
        axes[1].legend()
    return _save(fig, out)


def _mistakes(truth: np.ndarray, segments: np.ndarray, least: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of false merges (predicted segments that cover two or more true cells by `least` pixels each) and of
    false splits (true cells covered by two or more segments so)."""
    inside = (truth > 0) & (segments > 0)
    pairs, counts = np.unique(np.stack([truth[inside], segments[inside]]), axis=1, return_counts=True)
    pairs = pairs[:, counts >= least]
    merged_ids, merged_n = np.unique(pairs[1], return_counts=True)
    split_ids, split_n = np.unique(pairs[0], return_counts=True)
    merges = np.isin(segments, merged_ids[merged_n > 1]) & (segments > 0)
    splits = np.isin(truth, split_ids[split_n > 1]) & (truth > 0)
    return merges, splits


def overlay_figure(
    images: str | Path, truth: str | Path, segmentation: str | Path, out: str | Path, slices: int = 3, least: int = 20
) -> Path:
    """PNG of up to `slices` evenly spread slices: image, true cells, predicted cells, and the image with false merges
    (red: a predicted segment over two or more true cells) and false splits (blue: a true cell cut into two or more
    segments) marked, counting an overlap of at least `least` pixels."""
    from scipy import ndimage

    from unetflow.labels import cell_mask, recorded_convention

    img, gt, seg = (open_image(p) for p in (images, truth, segmentation))
    start, stop = seg.attrs.get("z_range") or (0, gt.shape[0])
    convention = recorded_convention(gt.attrs, truth)
    picks = sorted({int(z) for z in np.linspace(0, seg.shape[0] - 1, min(slices, seg.shape[0]))})
    plt = _pyplot()
    fig, axes = plt.subplots(len(picks), 4, figsize=(16, 4 * len(picks)), squeeze=False, constrained_layout=True)
    for row, z in zip(axes, picks, strict=True):
        image = np.asarray(img.array[start + z], np.float32)
        labels = np.asarray(gt.array[start + z])
        cells = (
            labels.astype(np.int64) if convention == "instances" else ndimage.label(cell_mask(labels, convention))[0]
        )
        segments = np.asarray(seg.array[z]).astype(np.int64)
        merges, splits = _mistakes(cells, segments, least)
        marked = np.repeat(((image - image.min()) / (np.ptp(image) or 1))[..., None], 3, axis=2)
        marked[merges] = 0.5 * marked[merges] + [0.5, 0, 0]
        marked[splits] = 0.5 * marked[splits] + [0, 0, 0.5]
        shuffle = np.random.default_rng(0).permutation(max(int(segments.max()), int(cells.max())) + 1)
        shuffle[0] = 0
        panels = [
            (image, "gray", f"image, slice {start + z}"),
            (shuffle[cells], "nipy_spectral", "true cells"),
            (shuffle[segments], "nipy_spectral", "predicted cells"),
            (marked, None, "false merges (red), false splits (blue)"),
        ]
        for ax, (panel, cmap, title) in zip(row, panels, strict=True):
            ax.imshow(panel, cmap=cmap, interpolation="nearest")
            ax.set_title(title)
            ax.axis("off")
    return _save(fig, out)


COMPARED = ("pixel_error", "rand_error", "info_error", "warping_error")


def experiments_chart(volumes: pd.DataFrame, out: str | Path) -> Path:
    """PNG comparing experiments: each volume metric of `COMPARED`, one bar per experiment (and fold) and volume."""
    plt = _pyplot()
    metrics = [m for m in COMPARED if m in volumes.columns]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4 * max(1, len(metrics)), 4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    names = [
        f"{r.experiment}" + ("" if pd.isna(r.fold) else f" fold {int(r.fold)}") + f"\n{r.volume}"
        for r in volumes.itertuples()
    ]
    for ax, metric in zip(axes, metrics, strict=False):
        ax.bar(range(len(names)), volumes[metric].to_numpy(float), color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric.replace("_", " "))
    if not metrics or not len(volumes):
        axes[0].text(0.5, 0.5, "no evaluated volumes", ha="center", va="center")
        axes[0].axis("off")
    return _save(fig, out)
