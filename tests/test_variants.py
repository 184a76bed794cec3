import numpy as np
import pytest
import torch

from unetflow.inference.inferer import TileInferer, predict_array
from unetflow.intensity import IntensityStats
from unetflow.losses import segmentation_loss
from unetflow.models import build_model

IDENTITY = IntensityStats(0.0, 1.0)


def test_unetpp_deep_supervision_and_geometry():
    model = build_model({"architecture": "unetpp", "base_width": 4, "levels": 4, "dropout": 0})
    g = model.geometry
    assert g.context == build_model({"base_width": 4, "levels": 4}).geometry.context
    n = g.input_size(20)
    model.train()
    outs = model(torch.zeros(1, 1, n, n))
    assert len(outs) == 3 and all(o.shape == (1, 2, 20, 20) for o in outs)
    loss = segmentation_loss("ce", outs, torch.zeros(1, 20, 20, dtype=torch.long))
    loss.backward()
    model.eval()
    assert model(torch.zeros(1, 1, n, n)).shape == (1, 2, 20, 20)


def test_unetpp_valid_tiling_is_seamless():
    torch.manual_seed(0)
    model = build_model({"architecture": "unetpp", "base_width": 4, "levels": 4, "dropout": 0}).eval()
    volume = np.random.default_rng(0).normal(size=(1, 45, 37)).astype(np.float32)
    inferer = TileInferer(model, torch.device("cpu"))
    small, large = predict_array(inferer, volume, IDENTITY, 8), predict_array(inferer, volume, IDENTITY, 64)
    assert np.abs(small - large).max() <= 1e-5


def test_unet3p_matches_the_paper():
    model = build_model({"architecture": "unet3p"})
    assert model.fuse[0][0].out_channels == 320  # 5 levels x 64 channels per decoder level
    assert sum(p.numel() for p in model.parameters()) == 26_973_506  # the paper's 26.97 M


def test_unet3p_supervision_and_cgm():
    model = build_model(
        {
            "architecture": "unet3p",
            "base_width": 4,
            "levels": 4,
            "cat_width": 4,
            "deep_supervision": True,
            "classification_guided": True,
        }
    )
    model.train()
    outs = model(torch.zeros(2, 1, 32, 32))
    assert len(outs) == 3 and all(o.shape == (2, 2, 32, 32) for o in outs)
    model.eval()
    assert model(torch.zeros(1, 1, 32, 48)).shape == (1, 2, 32, 48)


def test_variant_settings_are_checked():
    with pytest.raises(ValueError, match="same"):
        build_model({"architecture": "unet3p", "padding": "valid"})
    with pytest.raises(ValueError, match="unknown model settings for unet"):
        build_model({"architecture": "unet", "cat_width": 32})
    # None means "the architecture's default"
    assert build_model({"architecture": "unet3p", "padding": None, "base_width": 2, "levels": 2}).config.norm == "batch"
