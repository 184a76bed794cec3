"""Forward passes with glibc's default allocator against freed memory kept for the next pass
(`unetflow.runtime.keep_freed_memory`), side by side in one run: eager PyTorch by default, or with `--engine`
another of predict's engines (OpenVINO plans its own memory: predict keeps freed memory only for eager and compile).

Each setting runs in a fresh process (the allocator's settings are process-wide), the passes on a worker thread as
predict's scheduler runs them: wall time, the thread's user and system CPU time and its minor page faults.

Run by hand:
    taskset -c 0 python benchmarks/forward_allocator.py [--tile 1212] [--passes 6] [--width 16] [--levels 5]
    taskset -c 0 python benchmarks/forward_allocator.py --engine openvino --rounds 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time


def passes(tile: int, count: int, width: int, levels: int, keep: bool, engine: str = "eager") -> dict:
    """`count` fp32 passes of `engine` (softmax included) over one random tile, on a thread; one warm-up pass
    first."""
    import torch

    from unetflow.inference.engines import build_engine
    from unetflow.models import UNet, UNetConfig
    from unetflow.runtime import keep_freed_memory

    kept = keep_freed_memory() if keep else False
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = build_engine(
        engine, UNet(UNetConfig(base_width=width, levels=levels, dropout=0)).eval(), torch.device("cpu"), "fp32"
    )
    x = torch.randn(1, 1, tile, tile)
    figures: dict = {"kept": kept}

    def work() -> None:
        with torch.inference_mode():
            run(x).softmax(1)
            before, start = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
            for _ in range(count):
                run(x.clone()).softmax(1)
            after = resource.getrusage(resource.RUSAGE_THREAD)
        figures.update(
            wall_s=time.perf_counter() - start,
            user_s=after.ru_utime - before.ru_utime,
            sys_s=after.ru_stime - before.ru_stime,
            minor_faults=after.ru_minflt - before.ru_minflt,
        )

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=1212, help="input tile side (1212: predict's 1024-pixel blocks)")
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--engine", choices=["eager", "compile", "openvino"], default="eager")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two settings (least time kept)")
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        print(json.dumps(passes(a.tile, a.passes, a.width, a.levels, a.child == "kept", a.engine)))
        return
    rows: dict[str, dict] = {}
    for _ in range(a.rounds):
        for setting in ("default", "kept"):
            cmd = [sys.executable, __file__, "--child", setting, "--tile", str(a.tile), "--passes", str(a.passes)]
            cmd += ["--width", str(a.width), "--levels", str(a.levels), "--engine", a.engine]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            print(
                f"{a.engine} {setting:8s} {a.passes} passes of {a.tile}^2: {r['wall_s']:6.2f} s wall, user "
                f"{r['user_s']:6.2f} s, system {r['sys_s']:5.2f} s, {r['minor_faults']:,} minor page faults "
                f"(settings taken: {r['kept']})",
                flush=True,
            )
            if setting not in rows or r["wall_s"] < rows[setting]["wall_s"]:
                rows[setting] = r
    print(f"default / kept wall time (least of {a.rounds}): {rows['default']['wall_s'] / rows['kept']['wall_s']:.2f}")


if __name__ == "__main__":
    main()
