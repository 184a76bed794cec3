"""The prepared GPU check: one command, one report file, inside ten minutes of a lent H100/H200.

Measures, in this order (each part's seconds are in the report):
1. the environment: torch, CUDA, GPU name, bf16 support, CPU;
2. training throughput of the paper's network (base width 64, 5 levels, valid convolutions, 572 -> 388 tiles) with
   the pipeline's own data loader and augmentation on the ISBI training slices, in bf16 autocast and in fp32:
   iterations per second and the share of step time spent waiting for data;
3. a short training of `config/isbi2012.yaml` (its weights, model and train sections; iterations from
   `--train-seconds` and the bf16 throughput of part 2) on ISBI slices 0-9 and 15-19, validated on slices 10-14:
   pixel and Rand error;
4. inference: `predict_volume` (what `unetflow predict` runs) end to end on a synthetic volume of `--shape`
   (at least 30 x 2048 x 2048) in Mvoxel/s, against the pure forward passes of the same tiles, and the peak GPU
   memory.

`--smoke` runs every part at toy size (a narrow network, synthetic slices, a 2 x 256 x 256 volume) in about a minute
on a CPU: the rehearsal that `make test` runs, so that a GPU session only has to run the command.

    python benchmarks/gpu_check.py --out gpu_check.md [--isbi DIR] [--train-seconds 150]
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.md

On the device machine: `make gpu-bundle` here first (wheels of what its image lacks, and the ISBI TIFFs, into the
ignored folders .whl and .gpu_data), then run `make gpu-check` there carrying both (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_speed import forward_calls, pure_forward_seconds  # noqa: E402  (the same tiles as predict, no I/O)

from unetflow.inference.engines import build_engine  # noqa: E402
from unetflow.labels import BINARY_255, cell_mask  # noqa: E402
from unetflow.models import UNet, UNetConfig  # noqa: E402
from unetflow.models.checkpoint import save_checkpoint  # noqa: E402
from unetflow.runtime import select_device  # noqa: E402
from unetflow.stages.predict import PredictJob, predict_volume  # noqa: E402
from unetflow.stages.synthetic import synthesize  # noqa: E402
from unetflow.stages.weights import WeightParams, weight_map  # noqa: E402
from unetflow.store import create_image, open_image  # noqa: E402
from unetflow.training.data import Slices  # noqa: E402
from unetflow.training.settings import TrainSettings  # noqa: E402
from unetflow.training.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"base_width": 64, "levels": 5}  # valid convolutions, dropout 0.5: the paper's network
FIGURES = (
    "torch",
    "cuda",
    "gpu",
    "bf16_supported",
    "train_bf16_iterations_per_second",
    "train_bf16_data_wait_share",
    "train_fp32_iterations_per_second",
    "train_fp32_data_wait_share",
    "isbi_iterations",
    "isbi_val_pixel_error",
    "isbi_val_rand_error",
    "predict_mvoxels_per_second",
    "forward_mvoxels_per_second",
    "predict_over_forward",
    "predict_peak_gpu_memory_gib",
)


def environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu": torch.cuda.get_device_name(device) if cuda else "none (CPU)",
        "bf16_supported": bool(torch.cuda.is_bf16_supported()) if cuda else False,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
    }


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def isbi_config() -> dict:
    """config/isbi2012.yaml, whose weights, model and train sections the short ISBI training uses."""
    return yaml.safe_load((ROOT / "config" / "isbi2012.yaml").read_text())


def isbi_data(folder: Path | None, smoke: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the 20 labelled ISBI slices; synthetic EM-like slices for the smoke run."""
    if smoke or folder is None:
        return synthesize((6, 96, 96), seed=0)
    return tifffile.imread(folder / "train-volume.tif"), tifffile.imread(folder / "train-labels.tif")


def slices_of(images: np.ndarray, labels: np.ndarray, picks: list[int], weights: WeightParams) -> tuple[Slices, list]:
    """The pipeline's in-memory training data (normalized slices, cell masks, weight maps of `weights`) and
    validation pairs."""
    mean, std = float(images.mean()), float(images.std())
    norm = [((images[z] - mean) / std).astype(np.float32) for z in range(len(images))]
    masks = [cell_mask(labels[z], BINARY_255).astype(np.uint8) for z in range(len(labels))]
    chosen = Slices(
        [norm[z] for z in picks],
        [masks[z] for z in picks],
        [weight_map(labels[z], BINARY_255, weights) for z in picks],
    )
    held = [z for z in range(len(images)) if z not in picks]  # validated as one stack, as the pipeline does
    return chosen, [(np.stack([norm[z] for z in held]), np.stack([masks[z] for z in held]))]


def _trained_row(model: dict, settings: dict, data: Slices, validation: list, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        train(model, TrainSettings.from_dict(settings), data, validation, tmp, device, None, {"fingerprint": "gpu"})
        with open(Path(tmp) / "train_log.csv") as f:
            return list(csv.DictReader(f))[-1]


def throughput(data: Slices, device: str, smoke: bool, iterations: int, workers: int) -> dict:
    """Part 2: the paper's network, bf16 and fp32, iterations per second and data-wait share."""
    model = {"base_width": 4, "levels": 3} if smoke else dict(PAPER)
    out = {}
    for precision in ("bf16", "fp32"):
        settings = {
            "iterations": iterations,
            "tile": 36 if smoke else 388,
            "validate_every": iterations,
            "checkpoint_every": iterations,
            "workers": workers,
            "precision": precision,
            "optimizer": "sgd",
            "lr": 0.01,
        }
        row = _trained_row(model, settings, data, [], device)
        out[f"train_{precision}_iterations_per_second"] = float(row["iterations_per_second"])
        out[f"train_{precision}_data_wait_share"] = float(row["data_wait_share"])
    return out


def isbi_training(
    config: dict, data: Slices, validation: list, device: str, smoke: bool, iterations: int, workers: int
) -> dict:
    """Part 3: the model and training of `config` (config/isbi2012.yaml) for `iterations`, validated on the
    held-out slices."""
    model = {"base_width": 4, "levels": 3} if smoke else dict(config.get("model") or {})
    settings = {k: v for k, v in (config.get("train") or {}).items() if k not in ("threads", "gpus", "device")}
    settings.update(iterations=iterations, validate_every=iterations, checkpoint_every=iterations, workers=workers)
    if smoke:
        settings["tile"] = 36
    row = _trained_row(model, settings, data, validation, device)
    return {
        "isbi_iterations": iterations,
        "isbi_val_pixel_error": float(row["val_pixel_error"]),
        "isbi_val_rand_error": float(row["val_rand_error"]),
    }


def inference(shape: tuple[int, int, int], device_name: str, smoke: bool, batch: int) -> dict:
    """Part 4: predict end to end against the pure forward of the same tiles, and the peak GPU memory."""
    device = select_device(device_name)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        network = UNet(UNetConfig(**({"base_width": 4, "levels": 3} if smoke else PAPER), dropout=0))
        model = Path(tmp) / "model.pt"
        save_checkpoint(model, network)
        source = Path(tmp) / "volume.ome.zarr"
        rng = np.random.default_rng(0)
        array = create_image(source, shape, np.uint8, (1, *shape[1:]))
        for z in range(shape[0]):
            array[z] = rng.integers(0, 255, shape[1:], dtype=np.uint8)
        out = Path(tmp) / "probabilities.ome.zarr"
        job = PredictJob(str(model), str(source), str(out), (0, 0, 0), "float16", batch_size=batch, device=str(device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        predict_volume(job)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        attrs = open_image(out).attrs
        block = tuple(attrs["block"])
        engine = build_engine(attrs["engine"], network.eval(), device, attrs["precision"])  # predict's, like for like
        forward = pure_forward_seconds(engine, forward_calls(shape, block, network.geometries, batch), device)
    voxels = float(np.prod(shape)) / 1e6
    return {
        "predict_shape": list(shape),
        "predict_block": list(block),
        "predict_engine": attrs["engine"],
        "predict_precision": attrs["precision"],
        "predict_seconds": seconds,
        "forward_seconds": forward,
        "predict_mvoxels_per_second": voxels / seconds,
        "forward_mvoxels_per_second": voxels / forward,
        "predict_over_forward": seconds / forward,
        "predict_peak_gpu_memory_gib": peak,
    }


def report(figures: dict, out: Path) -> None:
    """Markdown: a table of every figure (FIGURES first), then the whole record as JSON."""
    lines = [f"# unetflow GPU check, {figures['date']}", "", "| figure | value |", "| --- | --- |"]
    for key in (*FIGURES, *(k for k in figures if k not in FIGURES)):
        value = figures.get(key)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    lines += ["", "```json", json.dumps(figures, indent=2), "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, any device: the rehearsal")
    parser.add_argument("--isbi", type=Path, default=ROOT / ".gpu_data", help="folder of the ISBI 2012 TIFFs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[30, 2048, 2048], help="the predicted volume")
    parser.add_argument("--throughput-iterations", type=int, default=60)
    parser.add_argument("--train-seconds", type=float, default=150.0, help="budget of the short ISBI training")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the training parts")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass in prediction")
    a = parser.parse_args(argv)
    device = select_device(a.device)
    figures, seconds = environment(device), {}
    images, labels = isbi_data(None if a.smoke else a.isbi, a.smoke)
    held_out = [3, 4] if a.smoke else list(range(10, 15))
    config = isbi_config()
    weights = WeightParams.from_dict(config.get("weights") or {})
    picks = [z for z in range(len(images)) if z not in held_out]
    data, validation = slices_of(images, labels, picks, weights)
    workers = 0 if a.smoke else a.workers
    iterations = 4 if a.smoke else a.throughput_iterations
    steps = [
        ("throughput", lambda: throughput(data, a.device, a.smoke, iterations, workers)),
        ("isbi_training", None),
        ("inference", lambda: inference((2, 256, 256) if a.smoke else tuple(a.shape), a.device, a.smoke, a.batch_size)),
    ]
    for name, step in steps:
        start = time.perf_counter()
        if name == "isbi_training":
            speed = (
                figures["train_bf16_iterations_per_second"]
                if figures["bf16_supported"] or a.smoke
                else (figures["train_fp32_iterations_per_second"])
            )
            count = 8 if a.smoke else max(100, int(speed * a.train_seconds) // 100 * 100)
            figures.update(isbi_training(config, data, validation, a.device, a.smoke, count, workers))
        else:
            figures.update(step())
        seconds[name] = round(time.perf_counter() - start, 1)
        report({**figures, "seconds": seconds}, a.out)  # written after every part: a killed run keeps what it had
        print(f"{name}: {seconds[name]} s", flush=True)
    return {**figures, "seconds": seconds}


if __name__ == "__main__":
    main()
