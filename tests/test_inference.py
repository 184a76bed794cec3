import numpy as np
import pytest
import torch

from unetflow.blocks import read_mirrored
from unetflow.inference.inferer import TileInferer, infer_block, predict_array
from unetflow.inference.tiling import plan_blocks
from unetflow.intensity import IntensityStats
from unetflow.models import UNet, UNetConfig
from unetflow.models.registry import build_model

IDENTITY = IntensityStats(0.0, 1.0)


def whole_pass(model, volume):
    """One forward pass over the whole (mirror-padded) volume: the reference for seamless tiling."""
    geometries = model.geometries
    spatial = volume.shape[-model.config.dims :]
    sizes = [g.input_size(s) for g, s in zip(geometries, spatial, strict=True)]
    pads = [(g.margin[0], n - s - g.margin[0]) for g, n, s in zip(geometries, sizes, spatial, strict=True)]
    with torch.no_grad():
        if model.config.dims == 2:  # volume: (z, y, x), or (z, channels, y, x) already stacked
            x = np.stack([np.pad(v, [(0, 0)] * (v.ndim - 2) + pads, mode="reflect") for v in volume])
            x = x if x.ndim == 4 else x[:, None]
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


@pytest.mark.parametrize("z_block", [1, 2, 5])
def test_slice_context_tiles_equal_a_whole_pass_over_stacked_neighbours(z_block):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, dropout=0, slice_context=1)).eval()
    volume = np.random.default_rng(2).normal(size=(5, 40, 36)).astype(np.float32)
    # each slice between its neighbours, mirrored at the stack's ends
    stacked = volume[[[1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 3]]]
    reference = whole_pass(model, stacked)
    inferer = TileInferer(model, torch.device("cpu"))
    plan = plan_blocks(volume.shape, (z_block, 16, 16), model.geometries, 2, slice_context=1)
    assert all(b.read[0].stop - b.read[0].start == z_block + 2 for b in plan.blocks)
    tiled = np.zeros_like(reference)
    for b in plan.blocks:
        tiled[(slice(None), *b.write)] = infer_block(inferer, volume, b, plan, IDENTITY)
    assert np.abs(tiled - reference).max() <= 1e-5
    assert np.abs(predict_array(inferer, volume, IDENTITY, 16) - reference).max() <= 1e-5
    # the neighbours matter: changing slice 3 changes slices 2-4 only
    changed = volume.copy()
    changed[3] += 1.0
    other = predict_array(inferer, changed, IDENTITY, 16)
    moved = np.abs(other - reference).max(axis=(0, 2, 3))
    assert (moved[:2] <= 1e-5).all() and (moved[2:] > 1e-3).all()


def test_compiled_network_matches_eager():
    """torch.compile as an engine (here, not among the OpenVINO tests: it has crashed in a process where OpenVINO
    had run before)."""
    from unetflow.inference import engines

    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, dropout=0)).eval()
    cpu = torch.device("cpu")
    engine = engines.build_engine("compile", model, cpu, "fp32")
    assert engines.engine_difference(engine, model, cpu, engines.smallest_tile(model)) <= engines.tolerance("fp32")
