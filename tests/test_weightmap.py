import numpy as np
import pytest
import tifffile
from conftest import naive_two_nearest

from unetflow.labels import BINARY_255, INSTANCES, instance_labels
from unetflow.stages.weights import WeightParams, class_weights, compute_weights, cutoff_distance, weight_map
from unetflow.store import open_image


def reference(labels, w0=10.0, sigma=5.0):
    """Naive w(x): the module docstring's definition computed the slow, obvious way."""
    cell = labels > 0
    wc = class_weights([(~cell).sum(), cell.sum()])
    d1, d2 = naive_two_nearest(instance_labels(labels, BINARY_255, 4))
    w = np.where(cell, wc[1], wc[0])
    return w + (~cell) * w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def test_matches_naive_reference_on_synthetic(small_stack):
    _, _, labels = small_stack
    for s in labels:
        ref = reference(s)
        got = weight_map(s, BINARY_255, WeightParams())
        assert np.max(np.abs(got - ref) / ref) <= 1e-6


def test_matches_naive_reference_on_isbi(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    for s in labels:
        ref = reference(s)
        got = weight_map(s, BINARY_255, WeightParams())
        assert np.max(np.abs(got - ref) / ref) <= 1e-6


def test_class_weights_average_to_one():
    w = class_weights([30, 70])
    assert np.isclose((30 * w[0] + 70 * w[1]) / 100, 1.0)
    assert np.allclose(class_weights([0, 10]), [1.0, 1.0])


def test_cutoff_bounds_the_term():
    r = cutoff_distance(10, 5, 1e-7, 0.5)
    assert 10 * np.exp(-(r**2) / 50) <= 1e-7 * 0.5 * (1 + 1e-9)


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((16, 16), np.uint8),  # all membrane, no cell
        np.full((16, 16), 255, np.uint8),  # all cell
        np.pad(np.full((4, 4), 255, np.uint8), 6),  # one cell: d2 undefined
    ],
)
def test_edge_cases_are_finite(labels):
    w = weight_map(labels, BINARY_255, WeightParams())
    assert np.all(np.isfinite(w)) and w.min() > 0


def test_touching_gap_gets_high_weight():
    labels = np.full((20, 21), 255, np.uint8)
    labels[:, 10] = 0  # a one-pixel gap between two cells
    w = weight_map(labels, BINARY_255, WeightParams(balance="none"))
    assert np.allclose(w[:, 10], 1 + 10 * np.exp(-4 / 50))
    assert np.allclose(w[:, :10], 1.0)


def test_instance_labels_are_used_as_given():
    labels = np.zeros((10, 10), np.uint16)
    labels[:, :5] = 7
    labels[:, 5:] = 9  # touching with no gap: two cells, no membrane
    w = weight_map(labels, INSTANCES, WeightParams())
    assert np.allclose(w, 1.0)


def test_chunked_equals_in_memory(ingested, tmp_path):
    _, labels_path = ingested
    out = compute_weights(labels_path, tmp_path / "w.ome.zarr", WeightParams())
    weights = open_image(out)
    labels = open_image(labels_path).array[:]
    counts = [(labels == 0).sum(), (labels > 0).sum()]
    wc = class_weights(counts)
    for z in range(labels.shape[0]):
        expected = weight_map(labels[z], BINARY_255, WeightParams(), wc)
        np.testing.assert_allclose(weights.array[z], expected, rtol=1e-6)
    assert weights.attrs["class_weights"] == pytest.approx(list(wc))
    per_image = open_image(compute_weights(labels_path, tmp_path / "i.ome.zarr", WeightParams(balance="image")))
    np.testing.assert_allclose(per_image.array[1], weight_map(labels[1], BINARY_255, WeightParams()), rtol=1e-6)


def test_anisotropic_spacing_scales_distances():
    labels = np.full((9, 9), 255, np.uint8)
    labels[4, :] = 0
    iso = weight_map(labels, BINARY_255, WeightParams(balance="none"))
    aniso = weight_map(labels, BINARY_255, WeightParams(balance="none"), spacing=(2.0, 1.0))
    # gap of one pixel along y: d1 + d2 = 2 px isotropic, 4 units when y pixels are twice as long
    assert np.isclose(iso[4, 4], 1 + 10 * np.exp(-4 / 50))
    assert np.isclose(aniso[4, 4], 1 + 10 * np.exp(-16 / 50))


def test_distance_kernel_matches_scipy():
    from scipy import ndimage

    from unetflow.distance import distance_to, two_nearest

    rng = np.random.default_rng(0)
    for shape, spacing in [((50, 61), (1.0, 1.0)), ((40, 33), (2.5, 1.0)), ((6, 20, 30), (5.0, 1.0, 1.3))]:
        sources = rng.random(shape) > 0.97
        expected = ndimage.distance_transform_edt(~sources, sampling=spacing)
        np.testing.assert_allclose(distance_to(sources, spacing), expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.isinf(distance_to(np.zeros((3, 4), bool))))
    cells = np.zeros((30, 30), int)
    cells[2:5, 2:5], cells[20:25, 3:9], cells[10:12, 25:28] = 1, 2, 3
    d1, d2 = two_nearest(cells, np.inf)
    d1_ref, d2_ref = naive_two_nearest(cells)
    np.testing.assert_allclose(d1, d1_ref)
    np.testing.assert_allclose(d2, d2_ref)


@pytest.mark.parametrize(("dims", "chunks"), [(2, (1, 24, 24)), (2, (2, 40, 16)), (3, (2, 32, 32))])
def test_small_chunks_equal_whole_array(ingested, tmp_path, dims, chunks):
    """Cells cross chunk borders and chunks are thinner than the halo: still the whole-array result."""
    _, labels_path = ingested
    params = WeightParams(dims=dims)
    weights = open_image(compute_weights(labels_path, tmp_path / "w.ome.zarr", params, chunks)).array[:]
    labels = open_image(labels_path).array[:]
    wc = class_weights([(labels == 0).sum(), (labels > 0).sum()])
    if dims == 2:
        expected = np.stack([weight_map(s, BINARY_255, params, wc, (4, 4)) for s in labels])
    else:
        expected = weight_map(labels, BINARY_255, params, wc, (50, 4, 4))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_instance_volume_chunked(tmp_path):
    from unetflow.store import create_image, set_attrs

    rng = np.random.default_rng(0)
    seeds = rng.integers(1, 2000, (1, 12, 12)).repeat(6, axis=1).repeat(6, axis=2).astype(np.uint16)
    seeds[:, ::6, :] = 0
    seeds[:, :, ::6] = 0
    path = tmp_path / "inst.ome.zarr"
    create_image(path, seeds.shape, np.uint16, (1, 36, 36))[:] = seeds
    set_attrs(path, {"label_convention": INSTANCES})
    got = open_image(compute_weights(path, tmp_path / "w.ome.zarr", WeightParams(balance="none"))).array[0]
    np.testing.assert_allclose(got, weight_map(seeds[0], INSTANCES, WeightParams(balance="none")), rtol=1e-6)
