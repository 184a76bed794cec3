import pytest
import torch
from torch import nn

from unetflow.models import UNet, UNetConfig, build_model


def conv_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def expected_parameters(width=64, levels=5, cin=1, classes=2):
    """Parameter count of the paper's network from its layer shapes."""
    total, c = 0, cin
    widths = [width * 2**i for i in range(levels)]
    for w in widths:  # contracting path: two 3x3 convs per level
        total += (9 * c * w + w) + (9 * w * w + w)
        c = w
    for w in reversed(widths[:-1]):  # expanding: 2x2 up-conv halving, then two 3x3 convs
        total += 4 * (2 * w) * w + w
        total += (9 * 2 * w * w + w) + (9 * w * w + w)
    return total + widths[0] * classes + classes


def test_paper_network_layers_and_parameters():
    model = UNet(UNetConfig())
    assert len(conv_layers(model)) == 23
    assert sum(p.numel() for p in model.parameters()) == expected_parameters() == 31_030_658


def test_paper_tile_shape():
    model = UNet(UNetConfig(base_width=2)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_same_padding_keeps_size_and_3d_runs():
    model = UNet(UNetConfig(base_width=2, levels=3, padding="same", norm="group")).eval()
    assert model(torch.zeros(1, 1, 32, 48)).shape == (1, 2, 32, 48)
    model3 = UNet(UNetConfig(base_width=2, levels=2, dims=3, norm="batch")).eval()
    g = model3.geometry
    n = g.input_size(4)
    assert model3(torch.zeros(1, 1, n, n, n)).shape[2:] == (g.output_size(n),) * 3


def test_he_initialization_std():
    model = UNet(UNetConfig(base_width=64))
    w = model.encoders[1][0].weight  # 3x3 conv, fan-in 9 * 64
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.002


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="padding"):
        UNetConfig(padding="full")
    with pytest.raises(ValueError, match="unknown model settings"):
        build_model({"widht": 3})
    with pytest.raises(ValueError, match="architecture"):
        build_model({"architecture": "segnet"})


def test_anisotropic_pooling_settings():
    model = UNet(UNetConfig(base_width=2, levels=3, dims=3, pool=[1, 2, 2]))
    assert model.pool_factors == (1, 2, 2) and model.config.to_dict()["pool"] == [1, 2, 2]
    assert build_model(model.config.to_dict()).pool_factors == (1, 2, 2)
    with pytest.raises(ValueError, match="model.pool"):
        UNetConfig(dims=3, pool=(1, 3, 2))


def test_slice_context_widens_the_first_layer_only_for_2d():
    plain = UNet(UNetConfig(base_width=4, levels=3))
    stacked = UNet(UNetConfig(base_width=4, levels=3, slice_context=2))
    assert stacked.config.input_channels == 5
    first = [m for m in stacked.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert first.in_channels == 5
    extra = sum(p.numel() for p in stacked.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 4 * 4 * 3 * 3  # four more input channels into the first 3x3 convolution of width 4
    for bad in ({"slice_context": 1, "dims": 3}, {"slice_context": -1}):
        with pytest.raises(ValueError, match="slice_context"):
            UNetConfig(base_width=4, levels=3, **bad)
