import numpy as np
import pytest
import torch

from unetflow.blocks import read_mirrored
from unetflow.inference.inferer import TileInferer, predict_array
from unetflow.inference.tta import test_time_transforms as transforms_for
from unetflow.intensity import IntensityStats
from unetflow.models import UNet, UNetConfig

IDENTITY = IntensityStats(0.0, 1.0)


@pytest.mark.parametrize(("dims", "count"), [(2, 8), (3, 8)])
def test_transforms_are_distinct_and_inverted_exactly(dims, count):
    model = UNet(UNetConfig(base_width=2, levels=3, dims=dims))
    transforms = transforms_for(model.geometries)
    assert len(transforms) == count
    x = torch.arange(2 * 3 * 4**dims, dtype=torch.float32).reshape(2, 3, *(4,) * dims)
    images = {tuple(t.apply(x).flatten().tolist()) for t in transforms}
    assert len(images) == count
    for t in transforms:
        assert torch.equal(t.invert(t.apply(x)), x)


def test_anisotropic_3d_model_only_flips():
    model = UNet(UNetConfig(base_width=2, levels=3, dims=3, pool=(1, 2, 2)))
    assert not any(t.transpose for t in transforms_for(model.geometries))


def tta_reference(model, volume):
    """Average over transforms of one whole-image pass each, on the mirror-extended image that tiles read from."""
    g = model.geometry
    lo, _ = g.margin
    size = [-(-s // g.step) * g.step for s in volume.shape[1:]]
    window = (slice(0, volume.shape[0]), *(slice(-lo, -lo + g.input_size(n)) for n in size))
    x = torch.from_numpy(read_mirrored(volume, window)[:, None])
    with torch.no_grad():
        probs = [t.invert(model(t.apply(x)).softmax(1)) for t in transforms_for(model.geometries)]
    out = torch.stack(probs).mean(0).numpy()
    return np.moveaxis(out, 1, 0)[:, :, : volume.shape[1], : volume.shape[2]]


@pytest.mark.parametrize("shape", [(2, 64, 48), (1, 37, 50)])
@pytest.mark.parametrize("block", [8, 16])
def test_tiled_tta_equals_whole_image_tta(shape, block):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=4, dropout=0)).eval()
    volume = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    inferer = TileInferer(model, torch.device("cpu"), tta=True)
    tiled = predict_array(inferer, volume, IDENTITY, block)
    assert np.abs(tiled - tta_reference(model, volume)).max() <= 1e-5
