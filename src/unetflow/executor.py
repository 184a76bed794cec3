"""Where block tasks run: dask's local threaded scheduler (default), or dask.distributed, either on a running
scheduler (its address) or on a LocalCluster started here. The graph is one independent task per block, so its
size grows linearly with the number of blocks and any scheduler can run blocks in any order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
from tqdm import tqdm

from unetflow.settings import check, defaults


@dataclass(frozen=True)
class SchedulerSpec:
    """`threads` (local, `workers` threads), `local` (a LocalCluster of `workers` processes) or the address of a
    running dask.distributed scheduler (tcp://host:port)."""

    name: str = defaults("predict")["scheduler"]
    workers: int = defaults("predict")["workers"]

    def __post_init__(self) -> None:
        check("predict", {"scheduler": self.name, "workers": self.workers})

    @property
    def distributed(self) -> bool:
        return self.name != "threads"


class _Progress:
    """Blocks done and voxels per second."""

    def __init__(self, total: int):
        self.bar = tqdm(total=total, desc="predict blocks", unit="block", mininterval=2)
        self.voxels, self.start = 0, time.perf_counter()

    def __call__(self, voxels: int) -> None:
        self.voxels += voxels
        rate = self.voxels / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate / 1e6:.2f} Mvoxel/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_tasks(
    fn: Callable[[Any, Any], int],
    job: Any,
    items: Sequence[Any],
    spec: SchedulerSpec,
    gpu: bool = False,
    finish: Callable[[Any], None] | None = None,
    worker_env: dict[str, str] | None = None,
) -> int:
    """Run fn(job, item) for every item (each returns a voxel count); returns the voxels done. Then `finish(job)`
    runs once in every process that ran tasks (this one for threads, each worker on dask.distributed): what a task
    left running behind it (a write) is complete, or its error raised, when this returns.

    On dask.distributed with `gpu`, each task asks for the worker resource GPU=1, so a worker started with
    `--resources GPU=1` (or the LocalCluster started here) runs one block at a time on its GPU. `worker_env`: the
    environment the LocalCluster's worker processes start with."""
    if not items:
        return 0
    progress = _Progress(len(items))
    try:
        if not spec.distributed:
            done = _run_threads(fn, job, items, spec.workers, progress)
            if finish is not None:
                finish(job)
            return done
        return _run_distributed(fn, job, items, spec, gpu, progress, finish, worker_env)
    finally:
        progress.close()


def _run_threads(fn, job, items, workers: int, progress: _Progress) -> int:
    from dask.callbacks import Callback

    def posttask(key, result, dsk, state, worker_id):  # noqa: ARG001
        if isinstance(result, int):
            progress(result)

    tasks = [dask.delayed(fn, pure=False)(job, item) for item in items]
    with Callback(posttask=posttask):
        results = dask.compute(*tasks, scheduler="threads", num_workers=workers)
    return int(sum(results))


def _run_distributed(
    fn, job, items, spec: SchedulerSpec, gpu: bool, progress: _Progress, finish, worker_env: dict[str, str] | None
) -> int:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise RuntimeError("predict.scheduler needs dask.distributed: pip install distributed") from exc
    resources = {"GPU": 1} if gpu else None
    if spec.name == "local":
        cluster = LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=1,
            processes=True,
            resources=resources,
            dashboard_address=None,
            env=worker_env or {},
        )
        client = Client(cluster)
    else:
        cluster, client = None, Client(spec.name)
    try:
        futures = client.map(fn, [job] * len(items), items, pure=False, resources=resources)
        total = 0
        for future in as_completed(futures):
            voxels = future.result()
            total += voxels
            progress(voxels)
        if finish is not None:
            client.run(finish, job)  # on every worker; raises a worker's error
        return total
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
