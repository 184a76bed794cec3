import numpy as np
import pytest
import torch

from unetflow.inference import TileInferer, plan_blocks, predict_array
from unetflow.intensity import IntensityStats
from unetflow.models import UNet, UNetConfig

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


def test_same_padding_blocks_cover_volume():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=2, levels=3, padding="same", dropout=0)).eval()
    volume = np.random.default_rng(3).normal(size=(1, 40, 30)).astype(np.float32)
    out = predict_array(TileInferer(model, torch.device("cpu")), volume, IDENTITY, 16)
    assert out.shape == (2, 1, 40, 30)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_block_sizes_off_the_pooling_grid_are_refused():
    model = UNet(UNetConfig(base_width=2, levels=4))
    with pytest.raises(ValueError, match="multiple of the model's pooling step 8"):
        plan_blocks((1, 64, 64), (1, 20, 20), model.geometries, 2)
