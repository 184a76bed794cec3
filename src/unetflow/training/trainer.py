"""Train a U-Net on labelled slices with the weighted pixel-wise cross-entropy.

Random augmented tiles (`unetflow.training.data`) are drawn in DataLoader workers. Every `checkpoint_every`
iterations, and on SIGTERM, the full training state is saved, so re-running a killed job resumes and ends at
the same iteration count. Validation on whole held-out slices records pixel and Rand error in `train_log.csv`;
`model.pt` is the best validated model (`select: best`) or the last (`select: last`), the weight average in place
of the raw weights with `ema`.
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


class _Meter:
    """Losses, speed and data-wait share since the last log row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.losses: list[float] = []
        self.start, self.waited = time.perf_counter(), 0.0

    def row(self, iteration: int, lr: float) -> dict[str, Any]:
        seconds = time.perf_counter() - self.start
        return {
            "iteration": iteration,
            "loss": float(np.mean(self.losses)),
            "seconds": round(seconds, 3),
            "iterations_per_second": round(len(self.losses) / max(seconds, 1e-9), 4),
            "data_wait_share": round(self.waited / max(seconds, 1e-9), 4),
            "lr": lr,
            "val_pixel_error": "",
            "val_rand_error": "",
        }

    def postfix(self) -> dict[str, str]:
        wait = self.waited / max(time.perf_counter() - self.start, 1e-9)
        return {"loss": f"{np.mean(self.losses[-50:]):.4f}", "wait": f"{wait:.0%}"}


class Trainer:
    """One training run, in steps that read one by one: `__init__` builds the model, optimizer, schedule, weight
    average and hard-tile state; `resume` loads a checkpoint of the same fingerprint; `loader` draws the tiles still
    to come; `step` is one optimizer step; `log_and_validate` writes a log row and keeps the best model;
    `save_state` checkpoints; `finish` writes `model.pt` and `train_log.csv`. `run` strings them together.

    `provenance` (see `unetflow.provenance`) is stored with every checkpoint and the model: a checkpoint is resumed
    only when its fingerprint is this run's, otherwise it is discarded and training starts afresh."""

    def __init__(
        self,
        model_settings: dict[str, Any],
        settings: TrainSettings,
        train_data: Slices,
        validation: list[tuple[np.ndarray, np.ndarray]],
        out_dir: str | Path,
        device_name: str = "auto",
        threads: int | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.data, self.validation = settings, train_data, validation
        self.provenance = provenance or {"fingerprint": ""}
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.last = self.ckpt_dir / "last.pt"
        set_threads(threads)
        self.device = select_device(device_name)
        self.precision = resolve_precision(self.device, settings.precision, cpu_auto_bf16=True)
        torch.manual_seed(settings.seed)
        model = build_model(model_settings)
        self.inputs = [g.input_size(settings.tile) for g in model.geometries]
        self.outputs = [
            g.output_size(n) if g.padding == "valid" else n for g, n in zip(model.geometries, self.inputs, strict=True)
        ]
        self._check_data(model)
        self.layout = memory_format(self.device, model.config.dims, training=True)
        self.model = model.to(self.device).to(memory_format=self.layout)
        self.optimizer = _optimizer(self.model, settings)
        self.average = WeightAverage(self.model, settings.ema) if settings.ema else None
        # The model that is validated and kept: the weight average when there is one.
        self.kept = self.average.model if self.average is not None else self.model
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(settings.schedule, it, settings.iterations)
        )
        # Hard-tile sampling's running loss per cell of a grid of tile centres, a quarter of the output tile wide.
        self.difficulty = None
        if settings.hard_tile_share > 0:
            shapes = [t.shape for t in train_data.targets]
            self.difficulty = TileDifficulty(shapes, [max(1, o // 4) for o in self.outputs])
        self.order: HardTileOrder | None = None
        self.iteration, self.best, self.log_rows = 0, None, []

    def _check_data(self, model: torch.nn.Module) -> None:
        dims = model.config.dims
        if {a.ndim for a in self.data.targets} != {dims}:
            raise ValueError(f"a {dims}D model needs {dims}D training data")
        channels = {a.shape[0] if a.ndim > dims else 1 for a in self.data.images}
        if channels != {model.config.input_channels}:
            raise ValueError(
                f"the model takes {model.config.input_channels} input channels (model.slice_context "
                f"{model.config.slice_context}) but the training images have {sorted(channels)}: load them with "
                "load_slices(..., slice_context=model.slice_context)"
            )

    def resume(self) -> None:
        """Continue from `checkpoints/last.pt` if this run made it; discard every checkpoint of another run."""
        if not self.last.exists():
            return
        state = load_checkpoint(self.last, self.device)
        found, mine = (state.get("provenance") or {}).get("fingerprint"), self.provenance["fingerprint"]
        if found != mine:
            log.info("discarding %s: it was made by another run (fingerprint %s, this run %s)", self.last, found, mine)
            for stale in self.ckpt_dir.glob("*.pt"):
                stale.unlink()
            return
        log.info("resuming %s at iteration %d", self.last, state["iteration"])
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration, self.best, self.log_rows = state["iteration"], state.get("best"), state.get("log", [])
        torch.set_rng_state(state["torch_rng"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        if self.difficulty is not None:
            self.difficulty.load_state_dict(state["difficulty"])

    def loader(self) -> DataLoader:
        """The tiles of the iterations still to come (sample i is a function of the seed and i alone)."""
        s = self.settings
        sampler = TileSampler(self.data, self.inputs, self.outputs, s.augment, s.seed, s.iterations * s.batch_size)
        indices = range(self.iteration * s.batch_size, s.iterations * s.batch_size)
        if self.difficulty is not None:
            self.order = HardTileOrder(
                sampler, self.difficulty, s.hard_tile_share, s.hard_tile_top, s.seed, indices.start, indices.stop
            )
        return DataLoader(
            sampler if self.order is not None else torch.utils.data.Subset(sampler, list(indices)),
            sampler=self.order,
            batch_size=s.batch_size,
            num_workers=s.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # A private generator: creating the loader must not consume the global RNG that dropout replays.
            generator=torch.Generator().manual_seed(s.seed),
        )

    def step(self, batch: tuple[torch.Tensor, ...]) -> float:
        """One optimizer step on a batch of (image, target, weight) tiles; returns its loss."""
        s = self.settings
        x, y, w = batch
        x = x.to(self.device, non_blocking=True).to(memory_format=self.layout)
        y, w = y.to(self.device, non_blocking=True), w.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits = self.model(x)
        loss = segmentation_loss(s.loss, logits, y, w, s.cldice_weight, s.cldice_iterations, s.hard_pixel_fraction)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        if not torch.isfinite(loss):
            where = "the tiles' images or weights" if not (x.isfinite().all() and w.isfinite().all()) else None
            cause = (
                f"{where} hold NaN or infinite values"
                if where
                else "the inputs were finite, so the optimization diverged: lower train.lr, or use train.precision fp32"
            )
            raise FloatingPointError(f"loss became {loss.item()} at iteration {self.iteration + 1}: {cause}")
        value = loss.item()
        if self.order is not None:  # a batch's samples share its loss
            first = self.iteration * s.batch_size
            for i in range(first, first + s.batch_size):
                self.order.record(i, self.outputs, value)
        self.iteration += 1
        return value

    def log_and_validate(self, meter: _Meter) -> None:
        """A log row; with validation data, the kept model's errors, and (`select: best`) `best.pt` when they are
        the lowest yet."""
        row = meter.row(self.iteration, self.optimizer.param_groups[0]["lr"])
        if self.validation:
            pe, re = validate(self.kept, self.device, self.validation, self.settings.threshold, self.precision)
            row.update(val_pixel_error=pe, val_rand_error=re)
            if self.settings.select == "best" and (
                self.best is None or (re, pe) < (self.best["rand_error"], self.best["pixel_error"])
            ):
                self.best = {"iteration": self.iteration, "rand_error": re, "pixel_error": pe}
                save_checkpoint(
                    self.ckpt_dir / "best.pt", self.kept, iteration=self.iteration, provenance=self.provenance
                )
        self.log_rows.append(row)
        meter.reset()

    def save_state(self) -> None:
        """Everything a killed run needs to go on exactly where it stopped."""
        save_checkpoint(
            self.last,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            iteration=self.iteration,
            best=self.best,
            log=self.log_rows,
            torch_rng=torch.get_rng_state(),
            provenance=self.provenance,
            average=self.average.state_dict() if self.average is not None else None,
            difficulty=self.difficulty.state_dict() if self.difficulty is not None else None,
        )

    def finish(self) -> Path:
        """`model.pt` (with `select: best` and validation data the best validated model, else the last) and
        `train_log.csv`. The model's `best` records the kept model's validation figures (with `select: last`,
        those of the last validation when it validated the final model)."""
        iteration = self.iteration
        final = self.log_rows[-1] if self.log_rows else {}
        if self.settings.select == "last" and final.get("iteration") == iteration and "val_rand_error" in final:
            self.best = {
                "iteration": iteration,
                "rand_error": final["val_rand_error"],
                "pixel_error": final["val_pixel_error"],
            }
        elif self.best is not None:
            payload = load_checkpoint(self.ckpt_dir / "best.pt")
            self.kept.load_state_dict(payload["state_dict"])
            iteration = payload["iteration"]
        model_path = self.out_dir / "model.pt"
        save_checkpoint(model_path, self.kept, iteration=iteration, best=self.best, provenance=self.provenance)
        with atomic_output(self.out_dir / "train_log.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(self.log_rows)
        return model_path

    def run(self) -> Path:
        s = self.settings
        log.info("training on %s in %s (train.precision %s)", self.device, self.precision, s.precision)
        self.resume()
        batches = iter(self.loader())
        self.model.train()
        meter = _Meter()
        with _Stop() as stop, tqdm(total=s.iterations, initial=self.iteration, desc="train", mininterval=2) as bar:
            while True:
                asked = time.perf_counter()
                batch = next(batches, None)
                meter.waited += time.perf_counter() - asked
                if batch is None:
                    break
                meter.losses.append(self.step(batch))
                bar.update(1)
                bar.set_postfix(meter.postfix())
                final = self.iteration == s.iterations
                if self.iteration % s.validate_every == 0 or final:
                    self.log_and_validate(meter)
                if self.iteration % s.checkpoint_every == 0 or final or stop.requested:
                    self.save_state()
                if stop.requested and not final:
                    raise Interrupted(f"stopped by SIGTERM at iteration {self.iteration}; checkpoint in {self.last}")
        return self.finish()


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
    """Train and write `model.pt` (per `settings.select`: the best on validation or the last) and `train_log.csv`
    into `out_dir` (see `Trainer`)."""
    return Trainer(model_settings, settings, train_data, validation, out_dir, device_name, threads, provenance).run()
