import numpy as np
import pytest
from scipy import ndimage

from unetflow.augment import AugmentParams, augment, elastic_displacement


def triple(n=48):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, n)).astype(np.float32),
        (rng.random((n, n)) > 0.5).astype(np.uint8),
        rng.random((n, n)).astype(np.float32) + 1,
    )


def test_identity_when_disabled():
    image, labels, weights = triple()
    off = AugmentParams(flip=False, rotate=False, elastic_sigma=0, contrast=0, brightness=0)
    out = augment(np.random.default_rng(1), image, labels, weights, off)
    for a, b in zip(out, (image, labels, weights), strict=True):
        np.testing.assert_array_equal(a, b)


def test_consistent_and_reproducible():
    image, labels, weights = triple()
    # The image *is* the labels: a consistent transform keeps them equal (nearest vs linear aside).
    p = AugmentParams(contrast=0, brightness=0)
    a = augment(np.random.default_rng(7), labels.astype(np.float32), labels, weights, p)
    b = augment(np.random.default_rng(7), labels.astype(np.float32), labels, weights, p)
    np.testing.assert_array_equal(a[0], b[0])
    assert set(np.unique(a[1])) <= {0, 1}
    agree = np.mean((a[0] > 0.5) == (a[1] > 0))
    assert agree > 0.9
    assert a[2].min() >= 1 - 1e-6


def test_elastic_displacement_statistics():
    rng = np.random.default_rng(0)
    stds = [elastic_displacement(rng, (64, 64), 10.0, 3).std() for _ in range(200)]
    assert 7 < np.mean(stds) < 13


@pytest.mark.parametrize(("shape", "grid"), [((380, 380), 3), ((64, 97), 3), ((12, 40, 33), 3), ((50, 50), 5)])
def test_elastic_displacement_is_the_cubic_zoom_of_its_coarse_grid(shape, grid):
    field = elastic_displacement(np.random.default_rng(4), shape, 10.0, grid, components=2)
    coarse = np.random.default_rng(4).normal(0.0, 10.0, (2, *(grid,) * len(shape)))
    zoom = tuple(s / grid for s in shape)
    for k in range(2):
        reference = ndimage.zoom(coarse[k], zoom, order=3, mode="nearest", grid_mode=True)
        np.testing.assert_allclose(field[k], reference, rtol=0, atol=1e-9)


def test_volume_augmentation_is_consistent():
    from unetflow.augment import augment_volume

    rng = np.random.default_rng(0)
    labels = (rng.random((4, 16, 16)) > 0.5).astype(np.uint8)
    for seed in range(8):
        img, lab, wgt = augment_volume(
            np.random.default_rng(seed),
            labels.astype(np.float32),
            labels,
            labels.astype(np.float32),
            AugmentParams(contrast=0, brightness=0, elastic_sigma=0),
        )
        np.testing.assert_array_equal(img, lab)
        np.testing.assert_array_equal(wgt, lab)
        assert img.shape == (4, 16, 16) and lab.sum() == labels.sum()


def test_volume_elastic_deformation_is_in_plane_and_consistent():
    from unetflow.augment import augment_volume

    p = AugmentParams(flip=False, rotate=False, contrast=0, brightness=0)
    z_only = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None], (6, 40, 40)).copy()
    out, _, _ = augment_volume(np.random.default_rng(0), z_only, z_only.astype(np.uint8), z_only, p)
    np.testing.assert_allclose(out, z_only, atol=1e-5)  # nothing moves along z
    yy, xx = np.mgrid[:40, :40]
    blobs = np.broadcast_to(((yy // 10 + xx // 10) % 2).astype(np.uint8), (6, 40, 40)).copy()
    img, lab, wgt = augment_volume(np.random.default_rng(3), blobs.astype(np.float32), blobs, blobs * 2.0, p)
    assert not np.array_equal(lab, blobs)  # deformed
    assert np.mean((img > 0.5) == (lab > 0)) > 0.97  # image and labels moved together
    np.testing.assert_allclose(wgt, 2 * img, atol=1e-5)


def test_slice_stacks_are_warped_alike():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(40, 40)).astype(np.float32)
    labels = (rng.random((40, 40)) > 0.5).astype(np.uint8)
    weights = rng.random((40, 40)).astype(np.float32)
    stack = np.stack([image, 2 * image, -image])
    single = augment(np.random.default_rng(9), image, labels, weights, AugmentParams())
    stacked = augment(np.random.default_rng(9), stack, labels, weights, AugmentParams())
    assert stacked[0].shape == (3, 40, 40)
    np.testing.assert_array_equal(stacked[0][0], single[0])
    np.testing.assert_array_equal(stacked[1], single[1])
    np.testing.assert_array_equal(stacked[2], single[2])
    without_gray = AugmentParams(contrast=0, brightness=0)
    plain = augment(np.random.default_rng(9), stack, labels, weights, without_gray)[0]
    np.testing.assert_allclose(plain[1], 2 * plain[0], atol=1e-5)
    np.testing.assert_allclose(plain[2], -plain[0], atol=1e-5)


@pytest.mark.parametrize("shape", [(60, 45), (8, 30, 27)])
def test_resampling_matches_scipy_mirrored_interpolation(shape):
    from unetflow.augment import resample

    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    labels = rng.integers(0, 200, shape).astype(np.uint8)
    weights = rng.random(shape).astype(np.float32)
    # coordinates well outside the array on every side: the mirror is exercised, more than once per axis
    coords = np.stack([rng.uniform(-1.5 * n, 2.5 * n, shape) for n in shape])
    sampled, nearest, sampled_weights = resample(coords, image, labels, weights)
    assert sampled.shape == image.shape and nearest.dtype == labels.dtype
    for channel in range(2):
        expected = ndimage.map_coordinates(image[channel], coords, order=1, mode="mirror")
        np.testing.assert_allclose(sampled[channel], expected, atol=2e-4)
    np.testing.assert_allclose(
        sampled_weights, ndimage.map_coordinates(weights, coords, order=1, mode="mirror"), atol=2e-4
    )
    # nearest neighbour may round a coordinate that lies within float32 precision of a half pixel the other way
    assert np.mean(nearest != ndimage.map_coordinates(labels, coords, order=0, mode="mirror")) < 1e-3


def test_defects_change_only_the_image_locally():
    image, labels, weights = triple(96)
    off = dict(flip=False, rotate=False, elastic_sigma=0, contrast=0, brightness=0)
    p = AugmentParams(**off, defect_rate=1.0, defect_size=12)
    for seed in range(20):
        img, lab, wgt = augment(np.random.default_rng(seed), image, labels, weights, p)
        np.testing.assert_array_equal(lab, labels)
        np.testing.assert_array_equal(wgt, weights)
        changed = np.abs(img - image) > 1e-6
        # one to three ellipses with semi-axes of at most 12 px
        assert 0 < changed.sum() <= 3 * np.pi * 12**2
        assert img.min() >= image.min() - 1e-5 and img.max() <= image.max() + 1e-5
    repeat = augment(np.random.default_rng(3), image, labels, weights, p)[0]
    np.testing.assert_array_equal(repeat, augment(np.random.default_rng(3), image, labels, weights, p)[0])


def test_defects_hit_each_section_of_a_stack_independently():
    from unetflow.augment import defects

    stack = np.stack([triple(64)[0]] * 3)
    hits = []
    for seed in range(40):
        out = defects(np.random.default_rng(seed), stack, AugmentParams(defect_rate=0.5))
        assert out.shape == stack.shape
        hits.append([not np.array_equal(o, s) for o, s in zip(out, stack, strict=True)])
    hits = np.array(hits)
    assert 0.25 < hits.mean() < 0.75
    assert (hits[:, 0] != hits[:, 1]).any()
    assert defects(np.random.default_rng(0), stack, AugmentParams(defect_rate=0.0)) is stack


def test_volume_defects_keep_labels():
    from unetflow.augment import augment_volume

    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 40, 40)).astype(np.float32)
    labels = (image > 0).astype(np.uint8)
    p = AugmentParams(flip=False, rotate=False, elastic_sigma=0, contrast=0, brightness=0, defect_rate=1.0)
    img, lab, wgt = augment_volume(np.random.default_rng(1), image, labels, image + 5, p)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(wgt, image + 5)
    assert all(not np.array_equal(a, b) for a, b in zip(img, image, strict=True))
