import numpy as np
import pytest
import torch

from unetflow.blocks import read_mirrored
from unetflow.inference import TileInferer, plan_blocks, predict_array
from unetflow.intensity import IntensityStats
from unetflow.models import UNet, UNetConfig
from unetflow.models.unet import build_model

IDENTITY = IntensityStats(0.0, 1.0)


def whole_pass(model, volume):
    """One forward pass over the whole (mirror-padded) volume: the reference for seamless tiling."""
    geometries = model.geometries
    spatial = volume.shape[-model.config.dims :]
    sizes = [g.input_size(s) for g, s in zip(geometries, spatial, strict=True)]
    pads = [(g.margin[0], n - s - g.margin[0]) for g, n, s in zip(geometries, sizes, spatial, strict=True)]
    with torch.no_grad():
        if model.config.dims == 2:
            x = np.stack([np.pad(v, pads, mode="reflect") for v in volume])[:, None]
            out = model(torch.from_numpy(x)).softmax(1).numpy()
            return np.moveaxis(out, 1, 0)[:, :, : spatial[0], : spatial[1]]
        x = np.pad(volume, pads, mode="reflect")[None, None]
        out = model(torch.from_numpy(x)).softmax(1).numpy()[0]
        return out[:, : spatial[0], : spatial[1], : spatial[2]]


@pytest.mark.parametrize("shape", [(2, 70, 53), (1, 33, 100)])
@pytest.mark.parametrize("block", [8, 16, 48])
def test_tiled_2d_equals_whole_image(shape, block):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=4, dropout=0)).eval()
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    tiled = predict_array(TileInferer(model, torch.device("cpu")), volume, IDENTITY, block)
    assert tiled.shape == (2, *shape)
    assert np.abs(tiled - whole_pass(model, volume)).max() <= 1e-5


@pytest.mark.parametrize("block", [4, 8])
def test_tiled_3d_equals_whole_volume(block):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=2, levels=3, dims=3, dropout=0)).eval()
    volume = np.random.default_rng(2).normal(size=(9, 13, 11)).astype(np.float32)
    tiled = predict_array(TileInferer(model, torch.device("cpu")), volume, IDENTITY, block)
    assert np.abs(tiled - whole_pass(model, volume)).max() <= 1e-5


@pytest.mark.parametrize("block", [4, 8])
def test_tiled_anisotropic_3d_equals_whole_volume(block):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=2, levels=3, dims=3, dropout=0, pool=(1, 2, 2))).eval()
    assert [g.step for g in model.geometries] == [1, 4, 4]
    volume = np.random.default_rng(4).normal(size=(23, 13, 11)).astype(np.float32)
    tiled = predict_array(TileInferer(model, torch.device("cpu")), volume, IDENTITY, block)
    assert np.abs(tiled - whole_pass(model, volume)).max() <= 1e-5


@pytest.mark.parametrize("block", [8, 16, 32])
@pytest.mark.parametrize("architecture", ["unet", "unet3p"])
def test_same_padding_tiles_equal_whole_image(block, architecture):
    """Same padding: each tile is grown by the receptive field of the equivalent valid network and only its
    interior is kept (a rectangular blending window), so no kept pixel ever sees a tile's zero padding."""
    torch.manual_seed(0)
    settings = {"architecture": architecture, "base_width": 4, "levels": 3, "padding": "same", "dropout": 0}
    model = build_model(settings | ({"cat_width": 4} if architecture == "unet3p" else {})).eval()
    volume = np.random.default_rng(3).normal(size=(2, 40, 30)).astype(np.float32)
    out = predict_array(TileInferer(model, torch.device("cpu")), volume, IDENTITY, block)
    g = model.geometry
    n, crop = g.window(40)
    x = read_mirrored(volume, (slice(0, 2), slice(-g.margin[0], n - g.margin[0]), slice(-g.margin[0], n - g.margin[0])))
    with torch.no_grad():
        whole = model(torch.from_numpy(x[:, None])).softmax(1).numpy()
    whole = np.moveaxis(whole, 1, 0)[:, :, crop : crop + 40, crop : crop + 30]
    assert np.abs(out - whole).max() <= 1e-5


def test_block_sizes_off_the_pooling_grid_are_refused():
    model = UNet(UNetConfig(base_width=2, levels=4))
    with pytest.raises(ValueError, match="multiple of the model's pooling step 8"):
        plan_blocks((1, 64, 64), (1, 20, 20), model.geometries, 2)
