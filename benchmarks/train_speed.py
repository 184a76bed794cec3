"""Training speed: iterations per second and the share of step time spent waiting for data, side by side
for several DataLoader worker counts (augmentation runs in the workers), numeric precisions and clDice weights.

Run by hand: python benchmarks/train_speed.py [--iterations 60] [--device auto] [--width 16] [--tile 164]
    [--precision auto bf16] [--norm group] [--cldice-weight 0 0.5] [--defect-rate 0.5]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch

from unetflow.labels import BINARY_255, cell_mask
from unetflow.stages.synthetic import synthesize
from unetflow.stages.weights import WeightParams, weight_map
from unetflow.training.data import Slices
from unetflow.training.settings import TrainSettings
from unetflow.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--tile", type=int, default=164)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--norm", default="none", choices=["none", "batch", "group"])
    parser.add_argument("--cldice-weight", type=float, nargs="+", default=[0.0], help="0: no clDice term")
    parser.add_argument("--defect-rate", type=float, default=0.0, help="section-defect augmentation rate")
    args = parser.parse_args()
    image, labels = synthesize((8, 256, 256), seed=0)
    mean, std = image.mean(), image.std()
    slices = Slices(
        [((s - mean) / std).astype(np.float32) for s in image],
        [cell_mask(s, BINARY_255).astype(np.uint8) for s in labels],
        [weight_map(s, BINARY_255, WeightParams()) for s in labels],
    )
    model = {"base_width": args.width, "levels": args.levels, "norm": args.norm}
    print(
        f"device={args.device} torch threads={args.threads or torch.get_num_threads()} model={model} tile={args.tile}"
    )
    print(f"{'precision':>9} {'workers':>7} {'clDice':>6} {'it/s':>8} {'data wait share':>16}")
    runs = [(p, w, c) for p in args.precision for w in args.workers for c in args.cldice_weight]
    for precision, workers, cldice in runs:
        settings = TrainSettings.from_dict(
            {
                "iterations": args.iterations,
                "tile": args.tile,
                "optimizer": "adam",
                "lr": 1e-3,
                "batch_size": args.batch,
                "validate_every": args.iterations,
                "checkpoint_every": args.iterations,
                "workers": workers,
                "precision": precision,
                "cldice_weight": cldice,
                "augment": {"defect_rate": args.defect_rate},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            train(model, settings, slices, [], tmp, args.device, args.threads, {"fingerprint": f"bench{workers}"})
            with open(Path(tmp) / "train_log.csv") as f:
                row = list(csv.DictReader(f))[-1]
        speed, wait = float(row["iterations_per_second"]), float(row["data_wait_share"])
        print(f"{precision:>9} {workers:>7} {cldice:>6} {speed:>8.2f} {wait:>16.1%}")


if __name__ == "__main__":
    main()
