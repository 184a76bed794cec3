"""Device, precision and memory layout chosen at run time."""

import warnings

import numpy as np
import pytest
import torch

from unetflow.inference import TileInferer
from unetflow.models import UNet, UNetConfig
from unetflow.runtime import autocast, memory_format, resolve_precision

CPU = torch.device("cpu")


def test_auto_precision_is_fp32_on_cpu_and_bf16_on_cuda():
    assert resolve_precision(CPU, "auto") == "fp32"
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    assert resolve_precision(CPU, "fp32") == "fp32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision(CPU, "bf16") == "bf16"
    emulated = not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert [("emulated" in str(w.message)) for w in caught] == ([True] if emulated else [])
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(CPU, "fp16")


def test_autocast_runs_convolutions_in_bf16_only_when_asked():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(CPU, "auto"):
        assert conv(x).dtype == torch.float32


def test_channels_last_for_inference_and_cuda_contiguous_for_cpu_training():
    assert memory_format(CPU, 2) == torch.channels_last
    assert memory_format(CPU, 3) == torch.channels_last_3d
    assert memory_format(CPU, 2, training=True) == torch.contiguous_format
    assert memory_format(torch.device("cuda"), 2, training=True) == torch.channels_last


def test_bf16_inference_is_close_to_fp32_but_not_the_same():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, dropout=0))
    tiles = np.random.default_rng(0).normal(size=(2, 1, 84, 84)).astype(np.float32)
    fp32 = TileInferer(model, CPU, precision="fp32")(tiles)
    bf16 = TileInferer(model, CPU, precision="bf16")(tiles)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert 0 < np.abs(bf16 - fp32).max() < 0.05
