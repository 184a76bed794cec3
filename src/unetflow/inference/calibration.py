"""Tile size chosen for speed: the run's engine timed on tiles of several side lengths up to the largest the
memory budget allows, on the machine at hand; the side with the least time per output voxel wins.

A larger valid-convolution tile spends less of its compute on context, but on a CPU its feature maps fall out of
the caches: on a 2-core Xeon (width 16, 5 levels, fp32, one thread, tiles of one slice) eager PyTorch took 1.47 us
per output pixel at a side of 400 against 1.90 at 1632, the largest the default budget allows, and OpenVINO 0.95 at
608 against 1.12 at 400 (`unetflow calibrate`, docs/benchmarks.md). The result is kept in a JSON
file: a run given the file uses its side without measuring (every shard of a cluster run the same), and a missing
file is measured and written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetflow.inference.budget import unbounded_largest_side
from unetflow.inference.engines import Engine, checked_engine, tile_shape

log = logging.getLogger(__name__)

FRACTIONS = (1.0, 0.75, 0.5, 0.375, 0.25)  # of the largest side, the candidates timed


@dataclass(frozen=True)
class Calibration:
    """The fastest output side length and what was measured: seconds per million output voxels by side."""

    side: int
    seconds_per_mvoxel: dict[int, float]
    machine: dict[str, Any]  # what the figures hold for: device, engine, precision, threads, batch, network


def candidate_sides(largest: int, step: int) -> list[int]:
    """Side lengths on the pooling grid from a quarter of `largest` up to it."""
    return sorted({max(step, int(largest * f) // step * step) for f in FRACTIONS})


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def seconds_per_voxel(
    run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, side: int, batch: int, repeats: int = 2
) -> float:
    """Least time over `repeats` of one forward pass of `batch` tiles of output side `side`, per output voxel
    (one warm-up pass first: an engine compiles for a new shape there)."""
    x = torch.randn(tile_shape(model, side, batch), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        run(x).softmax(1)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            run(x).softmax(1).cpu()
            best = min(best, time.perf_counter() - start)
    return best / (batch * side**model.config.dims)


def calibrate(
    run: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    largest: int,
    batch: int,
    machine: dict[str, Any],
    repeats: int = 2,
) -> Calibration:
    """Time each candidate side (`candidate_sides`) and keep the fastest per output voxel."""
    step = max(g.step for g in model.geometries)
    table = {side: seconds_per_voxel(run, model, side, batch, repeats) * 1e6 for side in candidate_sides(largest, step)}
    side = min(table, key=table.get)
    log.info("tile calibration: side %d (%s s per Mvoxel)", side, {s: round(t, 3) for s, t in table.items()})
    return Calibration(side, table, machine)


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return Calibration(
            int(data["side"]), {int(s): float(t) for s, t in data["seconds_per_mvoxel"].items()}, data["machine"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a tile calibration written by unetflow ({exc})") from exc


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    """Written to a temporary name and moved into place: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(asdict(calibration), indent=1) + "\n")
    partial.replace(path)


def calibrated_side(path: str | Path, machine: dict[str, Any], measure: Callable[[], Calibration]) -> int:
    """The side in the calibration file `path`; measured (`measure`) and written there if the file is missing.
    A file made for another machine or other settings is still used as it is, with a warning naming what
    differs: every job of a run must agree on its blocks."""
    path = Path(path)
    if not path.exists():
        calibration = measure()
        save_calibration(calibration, path)
        return calibration.side
    calibration = load_calibration(path)
    differs = sorted(k for k in set(machine) | set(calibration.machine) if machine.get(k) != calibration.machine.get(k))
    if differs:
        log.warning("%s was calibrated with other %s; its side %d is used as it is", path, differs, calibration.side)
    return calibration.side


def tile_side(
    path: str | Path | None,
    engine: Engine,
    model: nn.Module,
    device: torch.device,
    precision: str,
    budget_bytes: float,
    batch: int,
) -> int:
    """The calibrated output side for `engine` on this machine, from the file `path` (measured and written
    there first where it is missing; measured and kept nowhere without a path), between a quarter of the memory
    budget's largest side and that side."""
    batch = batch if model.config.dims == 2 else 1
    largest = unbounded_largest_side(model, budget_bytes, batch, precision)
    machine = {
        "device": device_name(device),
        "engine": engine.name,
        "precision": precision,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "batch": batch,
        "memory_budget_mb": budget_bytes / 2**20,
        "network": {k: v for k, v in asdict(model.config).items() if not k.startswith("_")},
    }
    if path is None:
        return calibrate(engine, model, largest, batch, machine).side
    return calibrated_side(path, machine, lambda: calibrate(engine, model, largest, batch, machine))


def engine_and_side(
    name: str,
    model: nn.Module,
    device: torch.device,
    precision: str,
    budget_bytes: float,
    batch: int,
    largest: int,
    calibrate: bool,
    path: str | Path | None = None,
) -> tuple[Engine, int]:
    """A run's engine (`predict.engine`, checked on a tile of side `largest`, the memory budget's largest) and the
    output side its blocks are cut at: `largest`, or with `calibrate` the side timed fastest (`tile_side`, from or
    into the file `path`), never above `largest`. Prediction and `unetflow calibrate` both come here."""
    engine = checked_engine(name, model, device, precision, tile_shape(model, largest))
    if not calibrate:
        return engine, largest
    return engine, min(largest, tile_side(path, engine, model, device, precision, budget_bytes, batch))
