"""Where and how tensors run: device chosen at run time, numeric precision, memory layout, threads."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from unetflow.settings import section_schema

PRECISIONS = tuple(section_schema("train")["properties"]["precision"]["enum"])


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cpu`, `cuda` or `cuda:N` force a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def set_threads(threads: int | None) -> None:
    """Limit intra-op threads to what the scheduler granted (Snakemake `threads`)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Does this CPU compute bf16 in hardware (AVX512-BF16 or AMX)? Elsewhere oneDNN emulates it, slower than fp32
    (10 s against 1 s per training step on an AVX2-only CPU)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in checks]
    if all(f is not None for f in found):
        return any(f() for f in found)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(device: torch.device, precision: str = "auto", cpu_auto_bf16: bool = False) -> str:
    """The precision a run uses. `auto`: bf16 autocast on CUDA, and with `cpu_auto_bf16` (training) on CPUs with
    native bf16 (`cpu_has_native_bf16`: a training step ~1.6x faster there); fp32 elsewhere. Prediction keeps fp32
    on CPU under `auto` (its outputs are compared across block sizes at 1e-5). `bf16` forced on a CPU without
    bf16 instructions is emulated and slower than fp32: allowed, with a warning."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        on_cpu = cpu_auto_bf16 and device.type == "cpu" and cpu_has_native_bf16()
        return "bf16" if device.type == "cuda" or on_cpu else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "precision bf16 on a CPU without bf16 instructions is emulated and slower than fp32", stacklevel=2
        )
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """bf16 autocast where `precision` resolves to bf16 (see `resolve_precision`), else plain fp32."""
    if resolve_precision(device, precision) == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def memory_format(device: torch.device, dims: int, training: bool = False) -> torch.memory_format:
    """channels_last on CUDA, and on CPU for inference, where oneDNN runs U-Net forward passes 1.3-1.6x faster
    in it (benchmarks/predict_speed.py); CPU training steps on small tiles are a little faster contiguous."""
    if device.type == "cuda" or not training:
        return torch.channels_last if dims == 2 else torch.channels_last_3d
    return torch.contiguous_format


@functools.cache
def _glibc_function(name: str) -> Callable[..., int] | None:
    """A function of glibc's allocator (`malloc_trim`, `mallopt`); None where the C library is not glibc."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    return _glibc_function("malloc_trim")


# (glibc's mallopt parameter, the environment name by which a process reads it at its start, value)
_KEEP_FREED = (
    (-8, "MALLOC_ARENA_MAX", 1),  # M_ARENA_MAX
    (-3, "MALLOC_MMAP_THRESHOLD_", 1 << 30),  # M_MMAP_THRESHOLD
    (-1, "MALLOC_TRIM_THRESHOLD_", (1 << 31) - 1),  # M_TRIM_THRESHOLD
)
KEEP_FREED_ENV = {name: str(value) for _, name, value in _KEEP_FREED}


def keep_freed_memory() -> bool:
    """Let freed memory be reused by the next allocation instead of handed back to the OS at every free; True
    where the C library took the settings (glibc).

    A forward pass over a large tile allocates activations of tens to hundreds of MB. glibc serves each from fresh
    pages (`mmap`) and unmaps them when freed, so every pass faults its activations in again and the kernel zeroes
    them: eager fp32 on 1212-pixel tiles spent a third of its time in the kernel (benchmarks/predict_speed.py,
    docs/benchmarks.md). One arena (threads other than the main one get heaps of at most 64 MB, too small for such
    tensors), a fixed mmap threshold of 1 GiB and no automatic trimming keep those pages for the next pass;
    `release_free_memory` still hands them back where a job chooses to (once per output file in predict). Call it
    before the process starts any thread: a thread started later shares the main arena only where no other arena
    exists yet (zarr's I/O threads make some). Worker processes take the same from `KEEP_FREED_ENV`."""
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    taken = [mallopt(option, value) == 1 for option, _, value in _KEEP_FREED]  # every one set, taken or not
    return all(taken)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps them, so over thousands of blocks fragmentation lets a
    long run's peak memory creep above a short one's; trimming after each output file keeps it flat."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
