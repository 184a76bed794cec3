"""Device, precision and memory layout chosen at run time."""

import os
import warnings

import numpy as np
import pytest
import torch

from unetflow.inference.inferer import TileInferer
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


def test_release_free_memory_returns_heap_pages_to_the_os():
    from unetflow.runtime import _malloc_trim, release_free_memory

    release_free_memory()  # never fails, with or without glibc
    if _malloc_trim() is None:
        pytest.skip("no glibc malloc_trim here")

    def rss_kib() -> int:  # Linux: resident pages of this process
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    blocks = [bytearray(4096) for _ in range(100_000)]  # ~400 MiB of small heap allocations
    del blocks[:-1]  # all but the last: the heap top stays in use, so free pages are trapped below it
    before = rss_kib()
    release_free_memory()
    assert rss_kib() < before - 100 * 1024
