"""Every store the tiny pipeline writes is OME-Zarr 0.5 as viewers expect it: validated by ome-zarr-models, read by
ome-zarr-py's reader, labels read as labels (segmentations and ingested ground truth), probabilities with channels
named by their classes, each multiscale named by the store's final name, every level present."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ome_zarr_models = pytest.importorskip("ome_zarr_models")
pytest.importorskip("ome_zarr")


def _stores(results: Path) -> dict[str, Path]:
    return {str(p.relative_to(results)): p for p in sorted(results.rglob("*.ome.zarr")) if p.is_dir()}


def _read_with_ome_zarr(path: Path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    location = parse_url(str(path))
    assert location is not None, f"{path}: ome-zarr-py finds no OME-Zarr"
    node = next(iter(Reader(location)()))
    return node, node.load(Label) is not None, node.load(Multiscales)


def test_every_store_is_ome_zarr_as_viewers_read_it(pipeline):
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    stores = _stores(pipeline / "results")
    kinds = {"labels": 0, "segmentation": 0, "probabilities": 0, "image": 0}
    for name, path in stores.items():
        group = zarr.open_group(str(path), mode="r")
        ome = group.attrs.asdict()["ome"]
        ours = group.attrs.asdict()["unetflow"]
        multiscale = ome["multiscales"][0]
        assert multiscale["name"] == path.name, name  # the final name, never a temporary one
        assert all(d["path"] in group for d in multiscale["datasets"]), name
        is_label = path.name in ("labels.ome.zarr", "segmentation.ome.zarr")
        model = (ImageLabel if is_label else Image).from_zarr(group)  # raises on anything invalid
        assert ome_zarr_models.open_ome_zarr(group, version="0.5") is not None
        node, read_as_label, multiscales = _read_with_ome_zarr(path)
        assert read_as_label == is_label, f"{name}: read as labels {read_as_label}"
        assert len(node.data) == len(multiscale["datasets"]), name  # every level loaded
        if is_label:
            assert model.ome_attributes.image_label is not None, name
            kinds["labels" if path.name == "labels.ome.zarr" else "segmentation"] += 1
            if ours.get("label_convention") in ("binary255", "binary01"):
                cell = 255 if ours["label_convention"] == "binary255" else 1
                assert ome["image-label"]["properties"] == [{"label-value": cell, "class": "cell"}], name
        elif path.name.startswith("probabilities"):
            channels = [c["label"] for c in ome["omero"]["channels"]]
            assert channels == ours["classes"] == ["membrane", "cell"], name
            assert node.metadata.get("channel_names") == ours["classes"], name
            kinds["probabilities"] += 1
        else:
            assert "image-label" not in ome and "omero" not in ome, name
            kinds["image"] += 1
    assert kinds["labels"] >= 2 and kinds["segmentation"] >= 2 and kinds["probabilities"] >= 2, kinds
    assert kinds["image"] >= 3, kinds
    assert not [n for n in stores if ".partial" in n or ".new-" in n]


def test_a_view_opens_as_the_image_with_its_segmentation_and_truth_as_label_layers(pipeline):
    import numpy as np
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    r = pipeline / "results"
    view = r / "tiny" / "tiny_validation" / "view.ome.zarr"
    assert view.is_dir() and (view / "0").is_symlink() and not (view / "0").resolve().is_relative_to(view)
    nodes = list(Reader(parse_url(str(view)))())
    image, layers = nodes[0], [n for n in nodes if n.load(Label) is not None]
    assert image.load(Label) is None
    names = [n.metadata["name"] for n in layers]
    assert sorted(names) == ["segmentation", "truth"]
    ingested = np.asarray(image.data[0])
    with_image = zarr_array(r / "data" / "tiny_validation" / "images.ome.zarr")
    np.testing.assert_array_equal(ingested, with_image)
    seg = next(n for n in layers if n.metadata["name"] == "segmentation")
    np.testing.assert_array_equal(
        np.asarray(seg.data[0]), zarr_array(r / "tiny" / "tiny_validation" / "segmentation.ome.zarr")
    )
    assert not (r / "tiny" / "tiny_volume" / "view.ome.zarr" / "labels" / "truth").exists()  # unlabelled: no truth


def zarr_array(path):
    import numpy as np

    from unetflow.store import open_image

    return np.asarray(open_image(path).array[:])
