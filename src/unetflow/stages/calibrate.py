"""Calibrate: the fastest tile side for a run's predictions on this machine, into a file all its jobs share.

The run's engine and precision (`predict.engine`, `predict.precision`) are timed on tiles from a quarter of the
memory budget's largest up to it (`unetflow.inference.calibration`); `unetflow predict --tiles FILE` then cuts
its automatic blocks at that side. One file per run: every shard of a cluster prediction agrees on its blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unetflow.inference.budget import unbounded_largest_side
from unetflow.inference.calibration import engine_and_side
from unetflow.inference.engines import wants_freed_memory_kept
from unetflow.models.checkpoint import load_model
from unetflow.runtime import keep_freed_memory, resolve_precision, select_device, set_threads
from unetflow.settings import check


def calibrate_tiles(
    model_path: str, out: str | Path, settings: dict[str, Any], device: str = "auto", threads: int | None = None
) -> int:
    """Time the engine of a `predict` settings section on tiles up to its memory budget's largest and write the
    fastest side to `out`; returns that side. An existing `out` is measured again."""
    p = check("predict", settings)
    Path(out).unlink(missing_ok=True)
    torch_device = select_device(device)
    if wants_freed_memory_kept(p["engine"], torch_device):
        keep_freed_memory()  # before any thread starts, and the passes timed as predict runs them
    precision = resolve_precision(torch_device, p["precision"])
    model, _ = load_model(model_path, "cpu")
    set_threads(threads)
    budget, batch = p["memory_budget_mb"] * 2**20, p["batch_size"]
    largest = unbounded_largest_side(model, budget, batch, precision)
    _, side = engine_and_side(p["engine"], model, torch_device, precision, budget, batch, largest, True, out)
    return side
