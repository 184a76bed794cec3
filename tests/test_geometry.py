import pytest

from unetflow.models.geometry import Geometry


def test_paper_tile_arithmetic():
    g = Geometry(levels=5)
    assert g.output_size(572) == 388
    assert g.context == 184
    assert g.margin == (92, 92)
    assert g.input_size(388) == 572
    assert g.step == 16


def test_invalid_sizes_are_rejected():
    g = Geometry(levels=5)
    assert g.output_size(571) is None
    assert g.output_size(573) is None
    assert all(g.output_size(n) is not None for n in g.valid_input_sizes(188, 700))
    assert all((n - 188) % 16 == 0 for n in g.valid_input_sizes(188, 700))


@pytest.mark.parametrize("levels", [2, 3, 4, 5])
@pytest.mark.parametrize("want", [1, 17, 100, 389])
def test_input_size_is_smallest_covering(levels, want):
    g = Geometry(levels=levels)
    n = g.input_size(want)
    assert g.output_size(n) >= want
    smaller = [m for m in g.valid_input_sizes(1, n - 1)]
    assert all(g.output_size(m) < want for m in smaller)


def test_same_padding_window():
    g = Geometry(levels=4, padding="same")
    assert g.output_size(64) == 64
    assert g.output_size(60) is None
    read, crop = g.window(64)
    assert read % g.step == 0 and read >= 64 + g.context
    assert crop == g.margin[0]


def test_valid_window_has_no_crop():
    g = Geometry(levels=4)
    read, crop = g.window(64)
    assert crop == 0 and g.output_size(read) >= 64


def test_unpooled_axis():
    g = Geometry(levels=3, factor=1)
    assert g.step == 1
    assert g.output_size(30) == 30 - 4 * 5
    assert g.input_size(10) == 30 and g.context == 20
