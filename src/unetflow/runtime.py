"""Where and how tensors run: device chosen at run time, bf16 autocast and channels_last on CUDA."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


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


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA; a no-op on CPU, where fp32 keeps results reproducible."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def memory_format(device: torch.device, dims: int) -> torch.memory_format:
    if device.type == "cuda":
        return torch.channels_last if dims == 2 else torch.channels_last_3d
    return torch.contiguous_format
