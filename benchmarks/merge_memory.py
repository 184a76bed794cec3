"""Memory of the segment merge job against the number of cells that touch a unit face.

The merge job (`unetflow segment --phase merge`) joins the cells on unit faces as a tree of groups of units
(`unetflow.cell_merge`): each group holds the cells on its children's faces and the pairs joined across them. This
builds probability stores of square cells (`--cell` pixels, 2-pixel membranes; columns through every slice, so in
3D each is one cell) in units of `--unit` pixels, at two depths, labels every unit, then runs the merge in a fresh
process per depth and prints its peak RSS (VmHWM), the face cells it held, and the bytes per extra face cell.

Run by hand (not a test):
    python benchmarks/merge_memory.py [--plane 2048] [--unit 512] [--cell 20] [--depths 50 100] [--dims 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no /proc/self/status")


def job_of(probabilities: str, out: str, dims: int):
    from unetflow.stages import segment

    return segment.SegmentJob(probabilities, out, dims=dims, connectivity=6 if dims == 3 else 4)


def merge_job(probabilities: str, out: str, dims: str) -> dict:
    from unetflow.stages import segment

    before = peak_mib()
    started = time.perf_counter()
    numbering = segment.merge(job_of(probabilities, out, int(dims)))
    return {
        "face cells": numbering.face_cells,
        "cells": numbering.count,
        "merge s": round(time.perf_counter() - started, 2),
        "peak RSS MiB": peak_mib(),
        "RSS before MiB": before,
    }


def build(path: Path, depth: int, plane: int, unit: int, cell: int) -> None:
    import numpy as np

    from unetflow.store import atomic_output, create_image

    rows = (np.arange(plane) % cell) >= 2  # 2-pixel membranes between square cells
    cells = (rows[:, None] & rows[None, :]).astype(np.float16)
    with atomic_output(path) as tmp:
        array = create_image(tmp, (2, depth, plane, plane), np.float16, (2, 1, unit, unit), "czyx")
        for z in range(depth):
            array[:, z] = np.stack([1 - cells, cells])
        from unetflow.store import set_attrs

        set_attrs(tmp, {"model_dims": 2, "provenance": {"fingerprint": f"bench-{depth}"}, "complete": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plane", type=int, default=2048)
    parser.add_argument("--unit", type=int, default=512)
    parser.add_argument("--cell", type=int, default=20)
    parser.add_argument("--depths", type=int, nargs=2, default=[50, 100])
    parser.add_argument("--out", default="/tmp/unetflow-merge")
    parser.add_argument("--dims", type=int, choices=[2, 3], default=2, help="cells per slice (2) or in 3D (3)")
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.job:
        print(json.dumps(merge_job(*a.job)))
        return
    from unetflow.stages import segment  # noqa: F401 - fail early if the package is missing

    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = {}
    for depth in a.depths:
        probs, out = root / f"p{depth}.ome.zarr", root / f"s{depth}.ome.zarr"
        build(probs, depth, a.plane, a.unit, a.cell)
        segment.label(job_of(str(probs), str(out), a.dims))
        cmd = [sys.executable, __file__, "--job", str(probs), str(out), str(a.dims)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(run.stderr[-3000:])
        rows[depth] = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"plane {a.plane}^2, units {a.unit}^2, square cells of {a.cell} px, dims {a.dims}")
    for depth, r in rows.items():
        print(f"{depth:>4} slices: {json.dumps(r)}")
    (d0, r0), (d1, r1) = rows.items()
    per_cell = (r1["peak RSS MiB"] - r0["peak RSS MiB"]) * 2**20 / max(1, r1["face cells"] - r0["face cells"])
    print(f"peak RSS per extra face cell: {per_cell:.0f} bytes")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
