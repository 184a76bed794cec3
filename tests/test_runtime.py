"""Device, precision and memory layout chosen at run time."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from unetflow.inference.inferer import TileInferer
from unetflow.models import UNet, UNetConfig
from unetflow.runtime import autocast, memory_format, resolve_precision

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_where_the_hardware_has_it(monkeypatch):
    import unetflow.runtime as runtime

    cuda = torch.device("cuda")
    assert resolve_precision(cuda, "auto") == "bf16" and resolve_precision(cuda, "auto", cpu_auto_bf16=True) == "bf16"
    assert resolve_precision(CPU, "auto") == "fp32"  # prediction keeps fp32 on every CPU
    for native in (True, False):  # training: bf16 only on CPUs with AVX512-BF16 or AMX
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision(CPU, "auto", cpu_auto_bf16=True) == ("bf16" if native else "fp32")
        assert resolve_precision(CPU, "fp32", cpu_auto_bf16=True) == "fp32"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert resolve_precision(CPU, "bf16") == "bf16"
        assert [("emulated" in str(w.message)) for w in caught] == ([] if native else [True])
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(CPU, "fp16")


def test_native_bf16_is_read_from_the_cpus_flags(monkeypatch):
    import unetflow.runtime as runtime

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    if not flags:
        pytest.skip("no /proc/cpuinfo to compare with")
    assert runtime.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


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


KEEP_FREED_PROBE = """
import resource, sys, threading
import numpy as np
from unetflow.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
def passes():  # a thread other than the main one, as predict's scheduler runs its blocks
    for _ in range(3):  # three "forward passes" of one 128 MiB activation; page faults of the last
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        activation = np.empty(2**27, np.uint8)
        activation.fill(1)
        del activation
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
worker = threading.Thread(target=passes)
worker.start()
worker.join()
print(kept, faults[-1])
"""


def test_keep_freed_memory_lets_the_next_pass_reuse_the_last_ones_pages():
    """In a fresh process (the setting is process-wide): by default each large allocation of a worker thread is
    mapped afresh and faults its pages in again; with `keep_freed_memory` the next one reuses them."""

    def last_pass_faults(mode: str) -> tuple[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", KEEP_FREED_PROBE, mode], capture_output=True, text=True, check=True
        )
        kept, faults = done.stdout.split()
        return kept, int(faults)

    kept, faults_kept = last_pass_faults("keep")
    if kept != "True":
        pytest.skip("not glibc: mallopt is not there")
    _, faults_default = last_pass_faults("default")
    assert faults_default >= 50  # 128 MiB in 2 MiB huge pages at the least
    assert faults_kept < faults_default / 10
