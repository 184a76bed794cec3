"""View: one OME-Zarr that a viewer opens as an image with its label layers (NGFF's image + `labels` group).

The pipeline writes images, ground truth and segmentations as separate stores, each written by its own job. A view
links them without copying a voxel: its multiscale levels are symbolic links to the image's arrays, and its
`labels` group holds one group per label store (the segmentation, and the ground truth where there is one) with
that store's metadata and links to its arrays, so that napari (napari-ome-zarr), neuroglancer and ome-zarr-py open
the image with its segmentation overlaid, layers named `segmentation` and `truth`. Links
are relative: a results folder moved or copied whole keeps its views. An image read in place (a URL or another
zarr store, recorded by a reference) has no local arrays to link, so it has no view.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import zarr

from unetflow.store import atomic_output

LABELS = "labels"


def write_view(image: str | Path, labels: Mapping[str, str | Path], out: str | Path) -> Path:
    """Write the view `out` of `image` with the label stores `labels` (layer name -> store)."""
    image, out = Path(image), Path(out)
    source = zarr.open_group(str(image), mode="r")
    ours = source.attrs.get("unetflow", {})
    if ours.get("reference"):
        raise ValueError(f"{image}: an image read in place ({ours['reference']}) has no local arrays to view")
    if not (source.attrs.get("ome") or {}).get("multiscales"):
        raise ValueError(f"{image}: no OME-Zarr multiscales metadata")
    shape = _full_resolution(source).shape
    for name, store in labels.items():
        layer = zarr.open_group(str(store), mode="r")
        if "image-label" not in (layer.attrs.get("ome") or {}):
            raise ValueError(f"{store}: not NGFF labels (no image-label metadata), so not a label layer {name!r}")
        found = _full_resolution(layer).shape
        if found != shape:
            raise ValueError(f"{store}: labels of shape {found} do not fit the image {image} of shape {shape}")
    with atomic_output(out) as tmp:
        group = _linked(image, tmp, out, out.name)
        group.attrs["unetflow"] = {
            "kind": "view",
            "image": str(image),
            "labels": {k: str(v) for k, v in labels.items()},
        }
        layers = zarr.open_group(str(tmp / LABELS), mode="w", zarr_format=3)
        layers.attrs["ome"] = {"version": source.attrs["ome"].get("version", "0.5"), LABELS: list(labels)}
        for name, store in labels.items():
            _linked(Path(store), tmp / LABELS / name, out / LABELS / name, name)
    return out


def _full_resolution(group: zarr.Group) -> zarr.Array:
    return group[group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]]


def _linked(store: Path, at: Path, final: Path, name: str) -> zarr.Group:
    """A group at `at` with `store`'s OME metadata (its multiscale named `name`: viewers' layer name) whose arrays
    are relative symbolic links to `store`'s, relative to `final`, where the group will be once in place."""
    ome = dict(zarr.open_group(str(store), mode="r").attrs["ome"])
    multiscales = [{**ome["multiscales"][0], "name": name}, *ome["multiscales"][1:]]
    group = zarr.open_group(str(at), mode="w", zarr_format=3)
    group.attrs["ome"] = {**ome, "multiscales": multiscales}
    for dataset in multiscales[0]["datasets"]:
        target = (store / dataset["path"]).resolve()
        (at / dataset["path"]).symlink_to(os.path.relpath(target, final.resolve()), target_is_directory=True)
    return group
