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
