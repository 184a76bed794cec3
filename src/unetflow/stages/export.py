"""Export: a trained model as a bioimage.io model package (spec 0.5), which the model zoo, bioimageio.core, ilastik,
deepImageJ and QuPath run without unetflow's pipeline.

The package (one zip) holds `rdf.yaml`, the weights twice (a PyTorch state dict of `unetflow.models.exported`'s
same-size wrapper, and the same module as TorchScript, which needs no unetflow to run), a test input cut from the
given images and the output the exported network gives for it, a cover image and a README. The description
carries what tiling needs: the tile sizes the network takes (`size: {min, step}`) and, on each output axis, the
`halo` (the network's margin) that a tool tiling a large image overlaps its tiles by and crops, so that tiled
output stays seamless. Pre-processing is the pipeline's normalization, zero mean and unit variance; the pipeline
measures it over a whole volume, the description over the tile (sample) it is given.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from unetflow import __version__
from unetflow.blocks import mirror_indices
from unetflow.image import as_zyx
from unetflow.models.checkpoint import load_model
from unetflow.models.exported import ExportedNetwork, valid_sizes
from unetflow.models.registry import model_config
from unetflow.store import atomic_output, open_image

FORMAT_VERSION = "0.5.4"
EPS = 1e-6  # zero_mean_unit_variance's epsilon
MAX_TEST_SIDE = 256  # the test tile: the largest valid size up to this, where the images allow
PAPER = {
    "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
    "MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}


def export_model(model: str | Path, images: str | Path, out: str | Path, name: str = "") -> Path:
    """Write the bioimage.io package of checkpoint `model` to the zip `out`, its test tile cut from `images`."""
    net, payload = load_model(model)
    settings = payload["model"]
    wrapped = ExportedNetwork(settings)
    wrapped.net.load_state_dict(net.state_dict())
    wrapped.eval()
    sizes = tile_sizes(settings)
    image = as_zyx(open_image(images))
    raw = test_tile(image, settings, sizes, images).astype(np.float32)  # raw values; the network takes float32
    with torch.no_grad():
        expected = wrapped(torch.from_numpy(normalized(raw))).numpy()
    traced = _traced(wrapped, raw, expected)
    name = name or Path(model).parent.name
    files: dict[str, bytes] = {
        "weights.pt": _saved(wrapped.state_dict()),
        "weights.torchscript.pt": _saved_script(traced),
        "test_input.npy": _npy(raw),
        "test_output.npy": _npy(expected),
        "cover.png": _cover(raw, expected, settings),
        "README.md": _readme(name, settings, sizes, image, payload).encode(),
    }
    rdf = description(name, settings, sizes, image, {k: _sha256(v) for k, v in files.items()})
    files["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with atomic_output(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as package:
        for file_name, content in files.items():
            package.writestr(file_name, content)
    return Path(out)


def tile_sizes(settings: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(smallest, step, halo) per spatial axis: the smallest size leaves an interior beyond the halo on each side."""
    margins = [g.margin for g in model_config(settings).geometries]
    out = []
    for (smallest, step), (before, after) in zip(valid_sizes(settings), margins, strict=True):
        halo = max(before, after)
        while smallest <= 2 * halo:
            smallest += step
        out.append((smallest, step, halo))
    return out


def test_tile(image, settings: dict[str, Any], sizes: list[tuple[int, int, int]], where: str | Path) -> np.ndarray:
    """A tile of the images in the network's input layout (batch, channel, [z,] y, x), raw values: from the middle
    slice, the largest valid size up to MAX_TEST_SIDE; a 2.5D model's channels are the neighbouring slices."""
    config = model_config(settings)
    dims, context = config.dims, config.slice_context
    spatial = image.shape[-dims:]
    side = []
    for n, (smallest, step, _) in zip(spatial, sizes, strict=True):
        if n < smallest:
            raise ValueError(
                f"{where}: {tuple(image.shape)} is too small for a test tile of this model (>= {smallest})"
            )
        side.append(smallest + (min(n, MAX_TEST_SIDE) - smallest) // step * step)
    starts = [(n - s) // 2 for n, s in zip(spatial, side, strict=True)]
    region = tuple(slice(a, a + s) for a, s in zip(starts, side, strict=True))
    if dims == 3:
        return np.asarray(image.array[region])[None, None]
    middle = image.shape[0] // 2
    slices = mirror_indices(middle - context, middle + context + 1, image.shape[0])
    return np.stack([np.asarray(image.array[(int(z), *region)]) for z in slices])[None]


def normalized(raw: np.ndarray) -> np.ndarray:
    """bioimage.io's zero_mean_unit_variance over the whole sample (every axis but batch), as the package states."""
    x = raw.astype(np.float32)
    return ((x - x.mean()) / (x.std() + EPS)).astype(np.float32)


def description(
    name: str, settings: dict[str, Any], sizes: list[tuple[int, int, int]], image, sha256: dict[str, str]
) -> dict[str, Any]:
    """The rdf.yaml of the package as a dict (bioimage.io model spec 0.5)."""
    config = model_config(settings)
    dims, context = config.dims, config.slice_context
    axis_ids = "zyx"[-dims:]
    scale = dict(zip("zyx", image.voxel_size, strict=True))
    unit = image.unit if image.unit in ("nanometer", "micrometer", "millimeter", "angstrom") else None

    def space(axis: str, size: Any, halo: int | None = None) -> dict[str, Any]:
        entry = {"type": "space", "id": axis, "size": size, "scale": float(scale[axis])}
        if unit:
            entry["unit"] = unit
        if halo:
            entry["halo"] = halo
        return entry

    if dims == 2 and context:
        channels = [f"slice {k:+d}" if k else "slice" for k in range(-context, context + 1)]
    else:
        channels = ["image"]
    names = config.class_names
    inputs = [
        {
            "id": "raw",
            "description": "EM image tile, raw intensities as float32; "
            + (f"the {len(channels)} channels are consecutive slices" if len(channels) > 1 else "one channel"),
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": channels},
                *(space(a, {"min": s, "step": t}) for a, (s, t, _) in zip(axis_ids, sizes, strict=True)),
            ],
            "test_tensor": {"source": "test_input.npy", "sha256": sha256["test_input.npy"]},
            "data": {"type": "float32"},
            "preprocessing": [
                {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", *axis_ids], "eps": EPS}},
            ],
        }
    ]
    outputs = [
        {
            "id": "probabilities",
            "description": f"class probabilities (softmax over {', '.join(names)}), the input's size",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": names},
                *(
                    space(a, {"tensor_id": "raw", "axis_id": a}, halo)
                    for a, (_, _, halo) in zip(axis_ids, sizes, strict=True)
                ),
            ],
            "test_tensor": {"source": "test_output.npy", "sha256": sha256["test_output.npy"]},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }
    ]
    version = torch.__version__.split("+")[0]
    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": f"unetflow {name}"[:128],
        "description": f"U-Net ({settings.get('architecture', 'unet')}, {dims}D) segmenting cells and membranes "
        f"in electron microscopy, trained by the unetflow pipeline (run {name})",
        "authors": [{"name": "unetflow"}],
        "cite": [PAPER],
        "license": "MIT",
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["unet", "electron-microscopy", "segmentation", "membrane", f"{dims}d", "pytorch"],
        "version": "1.0",
        "inputs": inputs,
        "outputs": outputs,
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt",
                "sha256": sha256["weights.pt"],
                "architecture": {
                    "callable": "ExportedNetwork",
                    "import_from": "unetflow.models.exported",
                    "kwargs": {"settings": settings},
                },
                "pytorch_version": version,
            },
            "torchscript": {
                "source": "weights.torchscript.pt",
                "sha256": sha256["weights.torchscript.pt"],
                "pytorch_version": version,
                "parent": "pytorch_state_dict",
            },
        },
        "config": {"unetflow": {"version": __version__, "run": name, "model": settings}},
    }


def _traced(wrapped: ExportedNetwork, raw: np.ndarray, expected: np.ndarray) -> torch.jit.ScriptModule:
    """The wrapper as TorchScript, traced on the test tile and checked against eager on it and on a larger tile.
    (PyTorch deprecates TorchScript for torch.export; bioimage.io and the tools that run its models read
    TorchScript.)"""
    example = torch.from_numpy(normalized(raw))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(wrapped, example, check_trace=False)
        if not np.allclose(traced(example).numpy(), expected, atol=1e-5):
            raise RuntimeError("export: the TorchScript module disagrees with the network on the test tile")
        steps = [step for _, step in valid_sizes(wrapped.net.config.to_dict())]
        larger = torch.nn.functional.pad(example, [p for s in reversed(steps) for p in (0, s)], mode="reflect")
        if not torch.allclose(traced(larger), wrapped(larger), atol=1e-5):
            raise RuntimeError("export: the TorchScript module does not generalize to another tile size")
    return traced


def _saved(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _saved_script(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _cover(raw: np.ndarray, probabilities: np.ndarray, settings: dict[str, Any]) -> bytes:
    """A 2:1 PNG: the test tile's image beside its cell probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    context = model_config(settings).slice_context
    image = raw[0, context] if raw.ndim == 4 else raw[0, 0, raw.shape[2] // 2]
    cell = probabilities[0, -1] if probabilities.ndim == 4 else probabilities[0, -1, probabilities.shape[2] // 2]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    for ax, panel, cmap in ((axes[0], image, "gray"), (axes[1], cell, "magma")):
        ax.imshow(panel, cmap=cmap)
        ax.axis("off")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cover.png"
        fig.savefig(path, dpi=64)
        plt.close(fig)
        return path.read_bytes()


def _readme(name: str, settings: dict[str, Any], sizes: list[tuple[int, int, int]], image, payload: dict) -> str:
    dims = model_config(settings).dims
    axes = "zyx"[-dims:]
    tiles = ", ".join(f"{a}: {s} + k x {t}" for a, (s, t, _) in zip(axes, sizes, strict=True))
    halos = ", ".join(f"{a}: {h}" for a, (_, _, h) in zip(axes, sizes, strict=True))
    best = payload.get("best")
    if best:
        validation = (
            f"On its validation data during training (unetflow's `train_log.csv`), the kept model (iteration "
            f"{best['iteration']}) had pixel error {best['pixel_error']:.4f} and foreground-restricted Rand error "
            f"{best['rand_error']:.4f}. unetflow's report holds the full evaluation (Rand and information errors "
            "with their split and merge parts, warping error) of its predictions."
        )
    else:
        validation = "It was trained without validation data: no validation figures."
    return f"""# unetflow {name}

A U-Net (Ronneberger, Fischer and Brox, 2015) trained by the unetflow pipeline to tell cells from membranes in
electron microscopy: a probability per class (membrane, cell) for every pixel of the input tile.

- Network: {settings.get("architecture", "unet")}, {dims}D, base width {settings.get("base_width")}, \
{settings.get("levels")} levels, {settings.get("padding") or "valid"} convolutions; every setting in \
`config.unetflow.model` of rdf.yaml.
- Input: raw EM intensities, normalized to zero mean and unit variance over the tile. The pipeline normalizes
  over the whole volume; give tiles of similar content, or the whole image, for the closest match.
- Tile sizes: {tiles} pixels. The module mirrors each tile by the network's margin, so the output has the tile's
  size; pixels within the halo ({halos} pixels) of a tile's border see mirrored context. Tiling a large
  image, overlap tiles by the halo and keep their interiors: the result is seamless and equals unetflow's own
  prediction.
- Weights: a PyTorch state dict (needs the `unetflow` package, `unetflow.models.exported.ExportedNetwork`) and the
  same module as TorchScript (needs only PyTorch).
- Test images: voxel size {list(image.voxel_size)} {image.unit}.

# Validation

{validation}
"""
