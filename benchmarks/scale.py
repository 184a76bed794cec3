"""Terabyte volumes: one cluster job of each stage that runs at scale, its memory and time flat in the volume's size.

Builds sparse logical volumes (plain zarr, metadata only: every chunk absent, read as zeros) of 1 TB
(2000 x 22400 x 22400 uint8) and 0.1 TB (200 x 22400 x 22400) and, in a fresh process per size and stage:

- ingest: uses the store in place, as the ingest job of a zarr dataset does (a reference store with the store's
  fingerprint and intensity statistics from a sample of chunks);
- predict: plans shard 0 of the volume's automatic number of jobs (`predict.shard_mvoxels`) exactly as
  `unetflow predict --shard 0/N` does (resolve the job, create or reuse the partial output, find the shard's
  pending files), then computes, writes and records its first file (a zarr shard of blocks);
- ingest of a TIFF stack (a sparse file of the same size): the first copying job, to its first slab;
- weights: the first labelling job of a weight map on a label store of the same size (chunks absent), to its
  first unit;
- segment: the first labelling job (`unetflow segment --phase label --shard 0/N`) on a finished probability store
  of the same size (64 MiB files, only the first written), to its first labelled unit.

Prints per stage and size the peak RSS, the time to the first finished unit, voxels per second, the number of jobs
and of output files, and the ratio 1 TB / 0.1 TB; then times `snakemake -n` for the whole pipeline with the 1 TB
volume as a dataset (automatic jobs, and `predict.shards: 10000`).

Run by hand (not a test: these machines are shared and noisy; compare the ratios of one run):
    python benchmarks/scale.py [--block 1 256 256] [--out /tmp/unetflow-scale]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1 TB": (2000, 22400, 22400), "0.1 TB": (200, 22400, 22400)}


def peak_mib() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike ru_maxrss, not inherited from the
    parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def ingest_job(volume: str, out: str) -> dict:
    """The ingest job of a zarr dataset: a reference to the store, used in place."""
    from unetflow.stages.ingest import reference

    started = time.perf_counter()
    reference(volume, out, (50, 4, 4))
    return {"first unit s": round(time.perf_counter() - started, 3), "peak RSS MiB": peak_mib()}


def predict_job(volume: str, model: str, out: str, block: list[int]) -> dict:
    """Shard 0 of a volume's automatic number of prediction jobs, to its first finished file."""
    from unetflow.settings import defaults
    from unetflow.stages import predict as p
    from unetflow.store import open_image

    shape = open_image(volume).shape
    jobs = max(1, math.ceil(math.prod(shape) / (defaults("predict")["shard_mvoxels"] * 1e6)))
    started = time.perf_counter()
    job = p.PredictJob(model, volume, out, tuple(block), "float16", device="cpu", threads=1)
    plan = p.plan_shard(job, (0, jobs))
    planned = time.perf_counter()
    voxels = p.process_group(plan.job, plan.pending[0])
    first = time.perf_counter()
    return {
        "jobs": jobs,
        "files in the output": len(p.file_groups(shape, plan.job)),
        "files in the job": plan.groups,
        "plan s": round(planned - started, 3),
        "first unit s": round(first - planned, 3),
        "voxels/s per job": round(voxels / (first - planned)),
        "peak RSS MiB": peak_mib(),
    }


def segment_job(probabilities: str, out: str) -> dict:
    """Shard 0 of a volume's automatic number of labelling jobs (`segment.shard_mvoxels`), to its first unit."""
    from unetflow.settings import defaults
    from unetflow.stages import segment
    from unetflow.store import open_image

    shape = open_image(probabilities).shape[1:]
    jobs = max(1, math.ceil(math.prod(shape) / (defaults("segment")["shard_mvoxels"] * 1e6)))
    started = time.perf_counter()
    job = segment.SegmentJob(probabilities, out)
    segment.label(job, (0, jobs), limit=1)
    seconds = time.perf_counter() - started
    return {
        "jobs": jobs,
        "files in the output": files_of(probabilities, leading_axes=1),  # the segmentation's files are its units
        "first unit s": round(seconds, 3),
        "voxels/s per job": round(math.prod(zarr_files(probabilities)[1:]) / seconds),
        "peak RSS MiB": peak_mib(),
    }


def files_of(store: str | Path, leading_axes: int = 0) -> int:
    """Files of full resolution a store has when complete (its zarr shards, or chunks)."""
    from unetflow.blocks import file_grid

    return len(file_grid(Path(store), leading_axes))


def tiff_job(tiff: str, out: str) -> dict:
    """Shard 0 of a TIFF stack's automatic number of copying jobs (`ingest.shard_mvoxels`), to its first slab."""
    from unetflow.settings import defaults
    from unetflow.stages import ingest

    shape = ingest.source_shape(tiff)
    jobs = max(1, math.ceil(math.prod(shape) / (defaults("ingest")["shard_mvoxels"] * 1e6)))
    started = time.perf_counter()
    job = ingest.IngestJob(tiff, out)
    ingest.copy_slabs(job, (0, jobs), limit=1)
    seconds = time.perf_counter() - started
    return {
        "jobs": jobs,
        "files in the output": files_of(job.store),
        "first unit s": round(seconds, 3),
        "voxels/s per job": round(math.prod(shape[1:]) / seconds),
        "peak RSS MiB": peak_mib(),
    }


def weights_job(labels: str, out: str) -> dict:
    """Shard 0 of a label volume's automatic number of weight-map labelling jobs, to its first unit."""
    from unetflow.settings import defaults
    from unetflow.stages import weights
    from unetflow.store import open_image

    shape = open_image(labels).shape
    jobs = max(1, math.ceil(math.prod(shape) / (defaults("weights")["shard_mvoxels"] * 1e6)))
    started = time.perf_counter()
    weights.label(weights.WeightsJob(labels, out, weights.WeightParams()), (0, jobs), limit=1)
    seconds = time.perf_counter() - started
    unit = math.prod(zarr_files(labels))
    return {
        "jobs": jobs,
        "files in the output": files_of(labels),  # the map is stored in the label store's files
        "first unit s": round(seconds, 3),
        "voxels/s per job": round(unit / seconds),
        "peak RSS MiB": peak_mib(),
    }


def zarr_files(store: str) -> tuple[int, ...]:
    import zarr

    array = zarr.open_group(store, mode="r")["0"]
    return tuple(array.shards or array.chunks)


def sparse_labels(path: Path, shape: tuple[int, ...]) -> None:
    """A label store as ingest makes it (binary 0/255, 1 x 512 x 512 chunks in 64 MiB files), chunks absent."""
    import numpy as np

    from unetflow.store import create_image

    attrs = {"kind": "labels", "label_convention": "binary255"}
    create_image(path, shape, np.uint8, (1, 512, 512), "zyx", attrs=attrs, shards=(1, 8192, 8192))


def sparse_probabilities(path: Path, shape: tuple[int, ...]) -> None:
    """A finished probability store of `shape` (float16, 64 MiB files of 16 x 16 blocks of 256 x 256) with only its
    first file written: what the first labelling unit of shard 0 reads."""
    import numpy as np

    from unetflow.provenance import RECORD_KEY, make_record
    from unetflow.store import create_image

    attrs = {"kind": "probabilities", "model_dims": 2, "complete": True}
    attrs[RECORD_KEY] = make_record({"sparse": str(path)}, {}, "benchmark")
    array = create_image(
        path, (2, *shape), np.float16, (2, 1, 256, 256), "czyx", attrs=attrs, shards=(2, 1, 4096, 4096)
    )
    cells = (np.random.default_rng(0).random((1, 4096, 4096)) > 0.3).astype(np.float16)
    array.with_config({"write_empty_chunks": True})[:, 0:1, 0:4096, 0:4096] = np.stack([1 - cells, cells])


def dry_run(root: Path, volume: Path, shards: int) -> tuple[float, int]:
    """`snakemake -n` of the embedded pipeline with `volume` as one more dataset to segment."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["results"] = "results"
    config["datasets"]["big"] = {"images": str(volume), "voxel_size": [50, 4, 4]}
    config["experiments"]["demo"]["predict_on"] = ["big"]
    config["predict"]["shards"] = shards
    (root / "dry.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile", "dry.yaml"]
    cmd += ["-n", "--quiet", "rules", "--workflow-profile", "none", "--cores", "1"]
    started = time.perf_counter()
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    total = next(int(line.split()[1]) for line in (run.stdout + run.stderr).splitlines() if line.startswith("total"))
    return seconds, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block", type=int, nargs=3, default=[1, 256, 256])
    parser.add_argument("--out", default="/tmp/unetflow-scale")
    parser.add_argument("--job", nargs="+", help=argparse.SUPPRESS)  # internal: run one job, print its figures
    a = parser.parse_args()
    if a.job:
        stage, *args = a.job
        if stage == "ingest":
            figures = ingest_job(*args)
        elif stage == "tiff":
            figures = tiff_job(*args)
        elif stage == "weights":
            figures = weights_job(*args)
        elif stage == "segment":
            figures = segment_job(*args)
        else:
            figures = predict_job(*args[:3], json.loads(args[3]))
        print(json.dumps(figures))
        return

    import numpy as np
    import torch
    import zarr

    from unetflow.models import UNet, UNetConfig
    from unetflow.models.checkpoint import save_checkpoint

    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    torch.manual_seed(0)
    model = root / "model.pt"
    save_checkpoint(model, UNet(UNetConfig(base_width=4, levels=3, dropout=0)))
    import tifffile

    rows: dict[str, dict[str, dict]] = {
        "ingest (in place)": {},
        "ingest (TIFF)": {},
        "weights (label)": {},
        "predict": {},
        "segment (label)": {},
    }
    volumes = {}
    for name, shape in SIZES.items():
        tag = name.replace(" ", "")
        volume = volumes[name] = root / f"{tag}.zarr"
        zarr.create_array(str(volume), shape=shape, chunks=(1, 1024, 1024), dtype=np.uint8, fill_value=0)
        tiff = root / f"{tag}.tif"
        tifffile.memmap(str(tiff), shape=shape, dtype=np.uint8, photometric="minisblack")  # a sparse file
        sparse_labels(root / f"{tag}-labels.ome.zarr", shape)
        stages = {
            "ingest (in place)": ["ingest", str(volume), str(root / f"{tag}-ref.ome.zarr")],
            "ingest (TIFF)": ["tiff", str(tiff), str(root / f"{tag}-copy.ome.zarr")],
            "weights (label)": ["weights", str(root / f"{tag}-labels.ome.zarr"), str(root / f"{tag}-w.ome.zarr")],
            "predict": ["predict", str(root / f"{tag}-ref.ome.zarr"), str(model), str(root / f"{tag}-p.ome.zarr")],
        }
        stages["predict"].append(json.dumps(a.block))
        sparse_probabilities(root / f"{tag}-probabilities.ome.zarr", shape)
        stages["segment (label)"] = [
            "segment",
            str(root / f"{tag}-probabilities.ome.zarr"),
            str(root / f"{tag}-s.ome.zarr"),
        ]
        for stage, args in stages.items():
            run = subprocess.run([sys.executable, __file__, "--job", *args], capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(run.stderr[-3000:])
            rows[stage][name] = json.loads(run.stdout.strip().splitlines()[-1])
        partial = root / f"{tag}-p.ome.zarr.partial"
        rows["predict"][name]["files written"] = sum(1 for f in partial.rglob("*") if f.is_file())
    print(f"block {a.block}, CPU, one thread, network of width 4 (3 levels), float16 probabilities")
    for stage, by_size in rows.items():
        print(f"\n{stage}")
        print(f"{'':22}" + "".join(f"{n:>14}" for n in by_size) + f"{'ratio':>10}")
        for key in next(iter(by_size.values())):
            values = [by_size[n][key] for n in by_size]
            ratio = values[0] / values[1] if values[1] else float("nan")
            print(f"{key:22}" + "".join(f"{v:>14}" for v in values) + f"{ratio:>10.2f}")
    big = rows["predict"]["1 TB"]
    voxels = math.prod(SIZES["1 TB"])
    print("\n1 TB wall time at this job's rate, extrapolated (one job per node, no overheads):")
    for nodes in (10, 100, 1000):
        hours = voxels / (big["voxels/s per job"] * min(nodes, big["jobs"])) / 3600
        print(f"  {nodes:>5} nodes: {hours:,.1f} h" + ("" if nodes <= big["jobs"] else f" (only {big['jobs']} jobs)"))
    for shards in (0, 10_000):
        seconds, total = dry_run(root, volumes["1 TB"], shards)
        what = "automatic jobs" if shards == 0 else f"predict.shards {shards}"
        print(f"snakemake -n, 1 TB dataset, {what}: {seconds:.1f} s for {total} jobs")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
