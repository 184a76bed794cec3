"""The report's figures: false merges and splits found by hand, and every figure a non-blank PNG."""

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from unetflow.stages.figures import _mistakes, experiments_chart, overlay_figure, training_curves


def _not_blank(path):
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].std() > 0.05, path


def test_false_merges_and_splits_by_hand():
    truth = np.zeros((6, 12), int)
    truth[:, :5], truth[:, 7:] = 1, 2  # two cells
    merged = np.where(truth > 0, 9, 0)  # one segment over both
    merges, splits = _mistakes(truth, merged, least=3)
    assert merges.sum() == (truth > 0).sum() and not splits.any()
    cut = truth.copy()
    cut[3:, :5] = 3  # the first cell cut in two
    merges, splits = _mistakes(truth, cut, least=3)
    assert not merges.any() and splits.sum() == 30 and splits[:, :5].all()
    assert not _mistakes(truth, cut, least=16)[1].any()  # overlaps below `least` pixels do not count


def test_training_curves_and_the_experiment_chart_are_drawn(tmp_path):
    log = pd.DataFrame(
        {"iteration": [4, 8, 12], "loss": [1.0, 0.7, 0.5], "val_rand_error": [0.3, np.nan, 0.2], "lr": [1e-3] * 3}
    )
    log.to_csv(tmp_path / "train_log.csv", index=False)
    _not_blank(training_curves(tmp_path / "train_log.csv", tmp_path / "curves.png"))
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="not a unetflow train_log.csv"):
        training_curves(tmp_path / "bad.csv", tmp_path / "x.png")
    volumes = pd.DataFrame(
        {
            "experiment": ["a", "b"],
            "fold": [None, 1],
            "volume": ["v", "v"],
            "rand_error": [0.1, 0.2],
            "pixel_error": [0.05, 0.07],
            "warping_error": [0.001, 0.002],
        }
    )
    _not_blank(experiments_chart(volumes, tmp_path / "experiments.png"))


def test_an_overlay_shows_slices_of_an_evaluated_volume(ingested, tmp_path):
    from scipy import ndimage

    from unetflow.store import atomic_output, create_image, open_image

    images, labels = ingested
    truth = np.asarray(open_image(labels).array[:]) > 0
    segments = np.stack([ndimage.label(ndimage.binary_dilation(s))[0] for s in truth])  # some cells merged
    with atomic_output(tmp_path / "s.ome.zarr") as tmp:
        create_image(tmp, segments.shape, np.uint32, (1, 64, 64), "zyx")[:] = segments
    _not_blank(overlay_figure(images, labels, tmp_path / "s.ome.zarr", tmp_path / "overlay.png", slices=2))
