"""Figures for the report, e.g. the paper's Fig. 3: an image, its labels and its weight map side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetflow.store import atomic_output, open_image


def weight_figure(images: str | Path, labels: str | Path, weights: str | Path, out: str | Path, index: int = 0) -> Path:
    """PNG of slice `index`: image, labels (cells white) and w(x) with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(out)
