import numpy as np
from scipy import ndimage

from unetflow.stages.synthetic import synthesize, write_dataset


def test_deterministic_and_seed_dependent():
    a_img, a_lab = synthesize((2, 64, 64), seed=1)
    b_img, b_lab = synthesize((2, 64, 64), seed=1)
    c_img, _ = synthesize((2, 64, 64), seed=2)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_looks_like_isbi_labels():
    image, labels = synthesize((2, 256, 256), seed=0)
    assert image.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 255}
    membrane = (labels == 0).mean()
    assert 0.1 < membrane < 0.4
    cells = [ndimage.label(s == 255)[1] for s in labels]
    assert all(15 <= n <= 120 for n in cells)  # ~115 per 512^2 in ISBI, a quarter of that here
    # Membranes are darker than cells on average, but intensities overlap (texture, organelles, noise).
    assert image[labels == 0].mean() < image[labels == 255].mean() - 40
    assert image[labels == 255].min() < image[labels == 0].max()


def test_write_dataset_files(tmp_path):
    files = write_dataset(tmp_path, {"train": (1, 32, 32), "volume": (2, 32, 32)}, seed=0)
    assert sorted(f.name for f in files) == ["train-images.tif", "train-labels.tif", "volume-images.tif"]
    assert not list(tmp_path.glob("*.partial"))
