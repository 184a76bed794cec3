"""The view stage: an image and its label stores linked into one OME-Zarr, nothing copied; bad layers refused."""

import numpy as np
import pytest

from unetflow.stages.view import write_view
from unetflow.store import create_image, label_metadata, open_image


def _stores(tmp_path, label_shape=(2, 16, 20)):
    image = tmp_path / "images.ome.zarr"
    create_image(image, (2, 16, 20), np.uint8, (1, 16, 20), voxel_size=(50, 4, 4))[:] = 7
    seg = tmp_path / "segmentation.ome.zarr"
    create_image(seg, label_shape, np.uint32, (1, *label_shape[1:]), ome_extra=label_metadata())[:] = 3
    plain = tmp_path / "plain.ome.zarr"
    create_image(plain, (2, 16, 20), np.uint32, (1, 16, 20))
    return image, seg, plain


def test_a_view_links_the_image_and_its_layers_relatively(tmp_path):
    image, seg, _ = _stores(tmp_path)
    view = write_view(image, {"segmentation": seg}, tmp_path / "out" / "view.ome.zarr")
    assert np.asarray(open_image(view).array[:]).tolist() == np.full((2, 16, 20), 7).tolist()
    assert (view / "0").is_symlink() and not (view / "0").readlink().is_absolute()
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("images.ome.zarr", "segmentation.ome.zarr", "out"):
        (tmp_path / name).rename(moved / name)
    assert int(open_image(moved / "out" / "view.ome.zarr" / "labels" / "segmentation").array[0, 0, 0]) == 3


def test_a_view_refuses_layers_that_are_not_labels_or_do_not_fit(tmp_path):
    image, _, plain = _stores(tmp_path)
    with pytest.raises(ValueError, match=r"plain\.ome\.zarr: not NGFF labels"):
        write_view(image, {"segmentation": plain}, tmp_path / "v.ome.zarr")
    small = tmp_path / "small"
    small.mkdir()
    _, seg, _ = _stores(small, label_shape=(2, 16, 16))
    with pytest.raises(ValueError, match=r"labels of shape \(2, 16, 16\) do not fit the image"):
        write_view(image, {"segmentation": seg}, tmp_path / "v.ome.zarr")
    assert not list(tmp_path.glob("v.ome.zarr*"))
