"""Train a U-Net on labelled slices with the weighted pixel-wise cross-entropy.

Random augmented tiles (`unetflow.training.data`) are drawn in DataLoader workers. Every `checkpoint_every`
iterations, and on SIGTERM, the full training state is saved, so re-running a killed job resumes and ends at
the same iteration count. Validation on whole held-out slices records pixel and Rand error in `train_log.csv`;
the best model (or the best weight average, with `ema`) is `model.pt`.
"""

from __future__ import annotations

import csv
import logging
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetflow.inference.inferer import TileInferer, predict_array
from unetflow.intensity import IntensityStats
from unetflow.labels import instance_labels
from unetflow.losses import segmentation_loss
from unetflow.metrics import pixel_error, rand_error
from unetflow.models import build_model
from unetflow.models.checkpoint import load_checkpoint, save_checkpoint
from unetflow.runtime import autocast, memory_format, resolve_precision, select_device, set_threads
from unetflow.store import atomic_output
from unetflow.training.averaging import WeightAverage
from unetflow.training.data import Slices, TileSampler
from unetflow.training.sampling import HardTileOrder, TileDifficulty
from unetflow.training.settings import TrainSettings

log = logging.getLogger(__name__)

LOG_FIELDS = [
    "iteration",
    "loss",
    "lr",
    "val_pixel_error",
    "val_rand_error",
    "seconds",
    "iterations_per_second",
    "data_wait_share",
]


def validate(
    model: torch.nn.Module,
    device: torch.device,
    volumes: list[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    precision: str = "auto",
) -> tuple[float, float]:
    """Mean pixel and Rand error over whole validation slices (images normalized, labels as cell masks); the model
    is handed back in training mode and layout."""
    was_training = model.training
    inferer = TileInferer(model, device, precision=precision)
    identity = IntensityStats(0.0, 1.0)
    pixel, rand = [], []
    for image, cell in volumes:
        probs = predict_array(inferer, image, identity)
        predicted = probs[1] > threshold
        for z in range(image.shape[0]):
            pixel.append(pixel_error(predicted[z], cell[z]))
            rand.append(rand_error(instance_labels(predicted[z], "binary01"), instance_labels(cell[z], "binary01")))
    model.train(was_training).to(memory_format=memory_format(device, model.config.dims, training=True))
    return float(np.mean(pixel)), float(np.mean(rand))


class _Stop:
    """Turns SIGTERM (cluster preemption, Snakemake kill) into a checkpoint-and-exit at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> _Stop:
        def handler(signum, frame):  # noqa: ARG001
            self.requested = True

        try:
            self._old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not in the main thread
            self._old = None
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class Interrupted(RuntimeError):
    """Training stopped by SIGTERM after saving a checkpoint; re-run to resume."""


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def lr_factor(schedule: str, iteration: int, total: int) -> float:
    """Learning-rate multiplier at `iteration`: constant, polynomial (power 0.9, as nnU-Net) or cosine decay."""
    progress = min(iteration / max(total, 1), 1.0)
    if schedule == "poly":
        return (1 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + np.cos(np.pi * progress))
    return 1.0


def train(
    model_settings: dict[str, Any],
    settings: TrainSettings,
    train_data: Slices,
    validation: list[tuple[np.ndarray, np.ndarray]],
    out_dir: str | Path,
    device_name: str = "auto",
    threads: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Train and write `model.pt` (best on validation, else last) and `train_log.csv` into `out_dir`.

    `provenance` (see `unetflow.provenance`) is stored with every checkpoint and the model: a checkpoint is
    resumed only when its fingerprint is this run's, otherwise it is discarded and training starts afresh."""
    provenance = provenance or {"fingerprint": ""}
    run_id = provenance["fingerprint"]
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    device = select_device(device_name)
    precision = resolve_precision(device, settings.precision)
    torch.manual_seed(settings.seed)
    model = build_model(model_settings)
    inputs = [g.input_size(settings.tile) for g in model.geometries]
    outputs = [g.output_size(n) if g.padding == "valid" else n for g, n in zip(model.geometries, inputs, strict=True)]
    if {a.ndim for a in train_data.targets} != {model.config.dims}:
        raise ValueError(f"a {model.config.dims}D model needs {model.config.dims}D training data")
    channels = {a.shape[0] if a.ndim > model.config.dims else 1 for a in train_data.images}
    if channels != {model.config.input_channels}:
        raise ValueError(
            f"the model takes {model.config.input_channels} input channels (model.slice_context "
            f"{model.config.slice_context}) but the training images have {sorted(channels)}: load them with "
            "load_slices(..., slice_context=model.slice_context)"
        )
    layout = memory_format(device, model.config.dims, training=True)
    model = model.to(device).to(memory_format=layout)
    optimizer = _optimizer(model, settings)
    average = WeightAverage(model, settings.ema) if settings.ema else None
    # The model that is validated and kept: the weight average when there is one.
    kept = average.model if average is not None else model
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(settings.schedule, it, settings.iterations)
    )
    # Hard-tile sampling's running loss per cell of a grid of tile centres, a quarter of the output tile wide.
    difficulty = None
    if settings.hard_tile_share > 0:
        difficulty = TileDifficulty([t.shape for t in train_data.targets], [max(1, o // 4) for o in outputs])
    start, best, log_rows = 0, None, []
    last = ckpt_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last, device)
        found = (state.get("provenance") or {}).get("fingerprint")
        if found != run_id:
            log.info("discarding %s: it was made by another run (fingerprint %s, this run %s)", last, found, run_id)
            for stale in ckpt_dir.glob("*.pt"):
                stale.unlink()
        else:
            log.info("resuming %s at iteration %d", last, state["iteration"])
            model.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, best, log_rows = state["iteration"], state.get("best"), state.get("log", [])
            torch.set_rng_state(state["torch_rng"])
            if average is not None:
                average.load_state_dict(state["average"])
            if difficulty is not None:
                difficulty.load_state_dict(state["difficulty"])
    length = settings.iterations * settings.batch_size
    sampler = TileSampler(train_data, inputs, outputs, settings.augment, settings.seed, length)
    indices = range(start * settings.batch_size, settings.iterations * settings.batch_size)
    order = None
    if difficulty is not None:
        order = HardTileOrder(
            sampler,
            difficulty,
            settings.hard_tile_share,
            settings.hard_tile_top,
            settings.seed,
            indices.start,
            indices.stop,
        )
    loader = DataLoader(
        sampler if order is not None else torch.utils.data.Subset(sampler, list(indices)),
        sampler=order,
        batch_size=settings.batch_size,
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # A private generator: creating the loader must not consume the global RNG that dropout replays.
        generator=torch.Generator().manual_seed(settings.seed),
    )

    def save_state(iteration: int) -> None:
        save_checkpoint(
            last,
            model,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            iteration=iteration,
            best=best,
            log=log_rows,
            torch_rng=torch.get_rng_state(),
            provenance=provenance,
            average=average.state_dict() if average is not None else None,
            difficulty=difficulty.state_dict() if difficulty is not None else None,
        )

    model.train()
    running, t0, done_since, waited = [], time.perf_counter(), 0, 0.0
    iteration = start
    batches = iter(loader)
    with _Stop() as stop, tqdm(total=settings.iterations, initial=start, desc="train", mininterval=2) as bar:
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            x, y, w = batch
            x = x.to(device, non_blocking=True).to(memory_format=layout)
            y, w = y.to(device, non_blocking=True), w.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(x)
            loss = segmentation_loss(
                settings.loss,
                logits,
                y,
                w,
                settings.cldice_weight,
                settings.cldice_iterations,
                settings.hard_pixel_fraction,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(model)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at iteration {iteration + 1}; lower train.lr")
            value = loss.item()
            if order is not None:  # a batch's samples share its loss
                for i in range(iteration * settings.batch_size, (iteration + 1) * settings.batch_size):
                    order.record(i, outputs, value)
            iteration += 1
            done_since += 1
            running.append(value)
            bar.update(1)
            bar.set_postfix(
                loss=f"{np.mean(running[-50:]):.4f}", wait=f"{waited / max(time.perf_counter() - t0, 1e-9):.0%}"
            )
            final = iteration == settings.iterations
            if iteration % settings.validate_every == 0 or final:
                seconds = time.perf_counter() - t0
                row = {
                    "iteration": iteration,
                    "loss": float(np.mean(running)),
                    "seconds": round(seconds, 3),
                    "iterations_per_second": round(done_since / max(seconds, 1e-9), 4),
                    "data_wait_share": round(waited / max(seconds, 1e-9), 4),
                    "lr": optimizer.param_groups[0]["lr"],
                    "val_pixel_error": "",
                    "val_rand_error": "",
                }
                if validation:
                    pe, re = validate(kept, device, validation, settings.threshold, precision)
                    row.update(val_pixel_error=pe, val_rand_error=re)
                    if best is None or (re, pe) < (best["rand_error"], best["pixel_error"]):
                        best = {"iteration": iteration, "rand_error": re, "pixel_error": pe}
                        save_checkpoint(ckpt_dir / "best.pt", kept, iteration=iteration, provenance=provenance)
                log_rows.append(row)
                running, t0, done_since, waited = [], time.perf_counter(), 0, 0.0
            if iteration % settings.checkpoint_every == 0 or final or stop.requested:
                save_state(iteration)
            if stop.requested and not final:
                raise Interrupted(f"stopped by SIGTERM at iteration {iteration}; checkpoint in {last}")
    if best is not None:
        payload = load_checkpoint(ckpt_dir / "best.pt")
        kept.load_state_dict(payload["state_dict"])
        iteration = payload["iteration"]
    save_checkpoint(out_dir / "model.pt", kept, iteration=iteration, best=best, provenance=provenance)
    with atomic_output(out_dir / "train_log.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(log_rows)
    return out_dir / "model.pt"
