"""Planning and starting one prediction shard job on a terabyte: memory and time flat in the volume's size.

Builds sparse logical volumes (zarr, metadata and intensity statistics only: every chunk absent, read as zeros) of
1 TB (2000 x 22400 x 22400 uint8) and 0.1 TB (200 x 22400 x 22400), and for each, in a fresh process:
plans shard 0 of `--shards` jobs exactly as `unetflow predict --shard 0/N` does (resolve the job, create or reuse
the partial output, find the shard's pending blocks), then computes and records its first block. Prints the peak
RSS, the time to plan and the time to the first finished block at both sizes, and their ratios.

Run by hand (not a test: these machines are shared and noisy; compare the ratios of one run):
    python benchmarks/scale.py [--shards 10000] [--block 1 256 256] [--out /tmp/unetflow-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"1 TB": (2000, 22400, 22400), "0.1 TB": (200, 22400, 22400)}


def one_job(volume: str, model: str, out: str, block: list[int], shards: int) -> dict:
    """What a shard job does before and at its first block; run in its own process."""
    started = time.perf_counter()
    from unetflow.stages import predict as p

    imported = time.perf_counter()
    job = p.PredictJob(model, volume, out, tuple(block), "float16", device="cpu", threads=1)
    plan = p.plan_shard(job, (0, shards))
    planned = time.perf_counter()
    p.process_block(plan.job, plan.pending[0])
    first = time.perf_counter()
    return {
        "blocks in job": plan.blocks,
        "import s": round(imported - started, 2),
        "plan s": round(planned - imported, 3),
        "first block s": round(first - planned, 3),
        "peak RSS MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--block", type=int, nargs=3, default=[1, 256, 256])
    parser.add_argument("--out", default="/tmp/unetflow-scale")
    parser.add_argument("--job", nargs=5, help=argparse.SUPPRESS)  # internal: run one job and print its figures
    a = parser.parse_args()
    if a.job:
        volume, model, out, block, shards = a.job
        print(json.dumps(one_job(volume, model, out, json.loads(block), int(shards))))
        return

    import numpy as np
    import torch

    from unetflow.models import UNet, UNetConfig
    from unetflow.models.checkpoint import save_checkpoint
    from unetflow.store import create_image

    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    torch.manual_seed(0)
    model = root / "model.pt"
    save_checkpoint(model, UNet(UNetConfig(base_width=4, levels=3, dropout=0)))
    rows = {}
    for name, shape in SIZES.items():
        volume = root / f"{name.replace(' ', '')}.ome.zarr"
        attrs = {"kind": "image", "intensity": {"mean": 128.0, "std": 40.0}}  # as ingest records them
        create_image(volume, shape, np.uint8, (1, 1024, 1024), "zyx", (50, 4, 4), attrs=attrs)
        out = root / f"{name.replace(' ', '')}-probabilities.ome.zarr"
        cmd = [sys.executable, __file__, "--job", str(volume), str(model), str(out), json.dumps(a.block), str(a.shards)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[name] = json.loads(run.stdout.strip().splitlines()[-1])
        files = sum(1 for _ in out.with_name(out.name + ".partial").rglob("*") if _.is_file())
        rows[name]["files written"] = files
    keys = list(next(iter(rows.values())))
    print(f"shard 0 of {a.shards} jobs, block {a.block}, CPU, one thread")
    print(f"{'':22}" + "".join(f"{n:>14}" for n in rows) + f"{'ratio':>10}")
    for key in keys:
        values = [rows[n][key] for n in rows]
        ratio = values[0] / values[1] if values[1] else float("nan")
        print(f"{key:22}" + "".join(f"{v:>14}" for v in values) + f"{ratio:>10.2f}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
