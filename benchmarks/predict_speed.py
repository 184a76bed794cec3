"""Prediction speed and memory, measured side by side in one run on one volume:

1. `unetflow predict` end to end (read zarr, mirror, infer, write OME-Zarr; a subprocess, timed by itself)
   against the pure model forward time of exactly the same tiles (random data, no I/O);
2. against MONAI's `sliding_window_inference` at its default overlap (0.25, constant blending) with the same
   network width and depth (same padding, as MONAI needs) and the same tile size, given the volume in memory,
   with the network as built (contiguous, what a MONAI user runs) and converted to channels_last (the layout
   unetflow runs in, 1.3-1.6x faster on CPU), so that the layout's share of the gain is visible;
3. seams: both against one whole-image pass of their own network on the first slice;
4. peak RSS of `unetflow predict` on the volume and on a tenth of it;
5. with `--variants`, one row per engine and precision (`predict.engine`, `predict.precision`): end to end, its
   own pure forward over the same tiles, their ratio, the ratio to eager fp32's pure forward, and MONAI like
   for like (channels_last, same precision); `onnxruntime` is a forward-only row (the network exported to ONNX
   and run by ONNX Runtime: a candidate engine, not one of the pipeline's).

Every pure forward runs in a fresh process that allocates memory as `unetflow predict` does for its engine (freed
memory kept for the next pass with eager and compile on CPU, glibc's defaults with OpenVINO), so that end to end
and forward differ only by what predict adds. With `--repeats N` each variant's end to end and pure forward
alternate N times and the least of each is kept: on a shared machine whose speed drifts by 10-20% within minutes,
the least time is the one least disturbed by other work (as `timeit` reports it).

Run by hand (needs `pip install monai psutil onnxruntime onnx`, the `bench` extra):
    python benchmarks/predict_speed.py [--shape 30 2048 2048] [--width 16] [--levels 5] [--memory-mb 2048]
    python benchmarks/predict_speed.py --shape 20 2048 2048 --threads 1 --skip-monai --variants eager openvino
    python benchmarks/predict_speed.py --shape 12 2048 2048 --threads 1 --repeats 3 --variants openvino
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from unetflow.blocks import read_mirrored
from unetflow.inference.engines import build_engine, wants_freed_memory_kept
from unetflow.inference.tiling import plan_blocks
from unetflow.intensity import image_stats
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
from unetflow.runtime import KEEP_FREED_ENV, keep_freed_memory, set_threads
from unetflow.store import create_image, open_image

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# name: (predict.engine, predict.precision, predict.calibrate); onnxruntime and compile: forward only (compile's
# end to end would add a compile of a minute or more per tile shape on CPU)
VARIANTS = {
    "eager": ("eager", "fp32", False),
    "eager-calibrated": ("eager", "fp32", True),
    "openvino": ("openvino", "fp32", False),
    "openvino-calibrated": ("openvino", "fp32", True),
    "compile": ("compile", "fp32", False),
    "eager-bf16": ("eager", "bf16", False),
    "openvino-bf16": ("openvino", "bf16", False),
    "onnxruntime": ("onnxruntime", "fp32", False),
}
FORWARD_ONLY = {"onnxruntime", "compile"}
SRC = str(Path(__file__).resolve().parents[1] / "src")
HERE = str(Path(__file__).resolve().parent)


def write_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Smooth random EM-like texture, slice by slice (never the whole volume in memory)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    target = create_image(path, shape, np.uint8, (1, 1024, 1024))
    for z in range(shape[0]):
        plane = ndi.gaussian_filter(rng.normal(size=shape[1:]).astype(np.float32), 2)
        target[z] = np.clip(128 + 400 * plane, 0, 255).astype(np.uint8)


def run_predict(
    model: Path, source: Path, out: Path, args, engine: str = "eager", precision: str = "fp32", calibrate: bool = False
) -> tuple[float, float, tuple[int, ...]]:
    """(seconds inside predict, peak RSS MiB, block) of one `unetflow predict` subprocess into a new `out`."""
    for stale in (out, out.with_name(out.name + ".partial")):  # a kept output would be resumed, not computed
        shutil.rmtree(stale, ignore_errors=True)
    cmd = [sys.executable, "-m", "unetflow", "predict", str(model), str(source), "--out", str(out)]
    cmd += [
        "--memory-mb",
        str(args.memory_mb),
        "--batch-size",
        str(args.batch_size),
        "--settings",
        json.dumps({"dtype": "float16", "engine": engine, "precision": precision, "calibrate": calibrate}),
    ]
    cmd += ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.stdout); print(r.stderr[-2000:], file=sys.stderr); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr)
    seconds = float(re.search(r"voxels/s over ([\d.]+) s", done.stdout).group(1))
    print("  " + re.search(r"predict: .* files to compute.*", done.stdout).group(0), flush=True)
    rss = int(re.search(r"MAXRSS (\d+)", done.stdout).group(1)) / 1024
    block = tuple(zarr.open_group(str(out), mode="r").attrs["unetflow"]["block"])
    return seconds, rss, block


def forward_calls(shape, block, geometries, batch: int) -> list[tuple[int, ...]]:
    """The input tile shapes of predict's forward passes over a volume, in order (a 2D model runs a block's
    slices in batches of `batch`)."""
    plan = plan_blocks(shape, block, geometries, 2)
    read = [s.stop - s.start for s in plan.blocks[0].read]
    calls = []
    for _ in plan.blocks:
        for start in range(0, read[0], batch):
            calls.append((min(batch, read[0] - start), 1, read[1], read[2]))
    return calls


def pure_forward_seconds(run, calls: list[tuple[int, ...]], device: torch.device) -> float:
    """`run` (tiles -> logits) over the tiles of `calls` on random data, with the softmax, no I/O; one warm-up
    call per shape first (an engine compiles there)."""
    x = {shape: torch.randn(shape, device=device) for shape in set(calls)}
    with torch.inference_mode():
        for tiles in x.values():
            run(tiles).softmax(1)
        start = time.perf_counter()
        for shape in calls:
            run(x[shape]).softmax(1).cpu()
        return time.perf_counter() - start


def forward_in_fresh_process(engine: str, precision: str, calls: list[tuple[int, ...]], args) -> float:
    """`pure_forward_seconds` of `engine` on the benchmark's network in a new process that allocates memory as
    `unetflow predict` does for that engine (glibc reads the kept-memory settings from the environment at start,
    as predict sets them before its first thread)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, HERE])}
    if wants_freed_memory_kept(engine, torch.device(args.device)):
        env.update(KEEP_FREED_ENV)
    job = {"engine": engine, "precision": precision, "calls": calls, "width": args.width, "levels": args.levels}
    job |= {"device": args.device, "threads": args.threads}
    code = "import json, sys, predict_speed as b; print('FORWARD', b.forward_job(json.loads(sys.argv[1])))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return float(re.search(r"FORWARD ([\d.eE+-]+)", done.stdout).group(1))


def forward_job(job: dict) -> float:
    """The child of `forward_in_fresh_process`: the benchmark's network (same seed) built into the engine."""
    set_threads(job["threads"])
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=job["width"], levels=job["levels"], dropout=0)).eval()
    device = torch.device(job["device"])
    run = build_engine(job["engine"], model, device, job["precision"])
    return pure_forward_seconds(run, [tuple(c) for c in job["calls"]], device)


def least_times(args, measure_end, measure_forward) -> tuple[float, tuple[int, ...], float, float]:
    """(least end to end, its block, least pure forward, peak RSS MiB) over `--repeats` alternations of
    `measure_end()` -> (seconds, RSS MiB, block) and `measure_forward(block)` -> seconds."""
    ends, forwards, rss, block = [], [], 0.0, None
    for _ in range(args.repeats):
        seconds, peak, block = measure_end()
        ends.append(seconds)
        rss = max(rss, peak)
        forwards.append(measure_forward(block))
    if args.repeats > 1:
        print(f"  end to end {[round(t, 1) for t in ends]} s, forward {[round(t, 1) for t in forwards]} s", flush=True)
    return min(ends), block, min(forwards), rss


def onnxruntime_run(model: torch.nn.Module, shape: tuple[int, ...], threads: int | None, tmp: Path):
    """The network exported to ONNX and run by ONNX Runtime's CPU provider (a tiles -> logits callable)."""
    import onnxruntime as ort

    path = tmp / "net.onnx"
    torch.onnx.export(
        model, (torch.zeros(shape),), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or 0, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def monai_seconds(
    model: torch.nn.Module, volume: np.ndarray, roi: int, batch: int, device, precision: str = "fp32"
) -> tuple[float, np.ndarray]:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(volume[:, None]).to(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
        start = time.perf_counter()
        out = sliding_window_inference(x, (roi, roi), batch, lambda t: model(t).float().softmax(1))
        seconds = time.perf_counter() - start
    return seconds, out[0].cpu().numpy()  # slice 0


def whole_image(model: torch.nn.Module, plane: np.ndarray, valid: bool) -> np.ndarray:
    """One pass over a whole slice: mirrored context for the valid network, zero padding (as MONAI) otherwise."""
    g = model.geometry
    x = plane.astype(np.float32)[None]
    if valid:
        lo = g.margin[0]
        size = [-(-s // g.step) * g.step for s in plane.shape]
        x = read_mirrored(x, (slice(0, 1), *(slice(-lo, -lo + g.input_size(n)) for n in size)))
    with torch.inference_mode():
        out = model(torch.from_numpy(x[:, None])).softmax(1)[0].numpy()
    return out[:, : plane.shape[0], : plane.shape[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[30, 2048, 2048])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--memory-mb", type=float, default=2048)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternations of end to end and pure forward per variant (least kept)"
    )
    parser.add_argument(
        "--variants", nargs="*", choices=list(VARIANTS), default=[], help="engine and precision rows (see the doc)"
    )
    parser.add_argument(
        "--monai-roi", type=int, nargs="*", default=[0, 512], help="MONAI window sizes; 0: our tile's input size"
    )
    parser.add_argument(
        "--monai-layouts",
        nargs="*",
        choices=list(LAYOUTS),
        default=["contiguous", "channels_last"],
        help="memory layouts of MONAI's network",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as predict runs: the pure forward and MONAI reuse freed pages too (like for like)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(args.shape)
    tenth = (max(1, shape[0] // 10), *shape[1:])
    torch.manual_seed(0)
    valid = UNet(UNetConfig(base_width=args.width, levels=args.levels, dropout=0)).eval()
    same = UNet(UNetConfig(base_width=args.width, levels=args.levels, dropout=0, padding="same")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_checkpoint(tmp / "model.pt", valid)
        write_volume(tmp / "big.zarr", shape)
        write_volume(tmp / "small.zarr", tenth)
        print(f"volume {shape}, U-Net width {args.width}, {args.levels} levels, device {device}")

        def calls_of(block):
            return forward_calls(shape, block, valid.geometries, args.batch_size)

        t_small, rss_small, _ = run_predict(tmp / "model.pt", tmp / "small.zarr", tmp / "ps.zarr", args)
        t_ours, block, t_forward, rss_big = least_times(
            args,
            lambda: run_predict(tmp / "model.pt", tmp / "big.zarr", tmp / "pb.zarr", args),
            lambda b: forward_in_fresh_process("eager", "fp32", calls_of(b), args),
        )
        read = valid.geometry.window(block[1])[0]
        print(f"block {block}, tile input {read} px")
        print(f"unetflow predict end to end  {t_ours:8.1f} s")
        print(f"pure forward, same tiles     {t_forward:8.1f} s   ratio {t_ours / t_forward:.3f} (target <= 1.05)")
        print(f"peak RSS: {tenth} {rss_small:.0f} MiB, {shape} {rss_big:.0f} MiB: ratio {rss_big / rss_small:.3f}")
        image = open_image(tmp / "big.zarr")
        stats = image_stats(image)
        volume = stats.normalize(image.array[:])
        ours = np.asarray(open_image(tmp / "pb.zarr").array[:, 0], np.float32)
        norm = volume[0]
        seam_ours = np.abs(ours - whole_image(valid, norm, True)).max()
        print(f"unetflow max |tiled - whole image| on slice 0: {seam_ours:.2e} (float16 output)")
        monai = {}  # precision: seconds, channels_last at the first --monai-roi (the variants' like for like)
        if not args.skip_monai:
            whole_same = whole_image(same, norm, False)
            for asked in args.monai_roi:
                step = same.geometry.step  # same padding needs multiples of the pooling step
                roi = -(-(asked or read) // step) * step
                for layout in args.monai_layouts:
                    net = same.to(device).to(memory_format=LAYOUTS[layout])
                    t_monai, monai_out = monai_seconds(net, volume, roi, args.batch_size, device)
                    if asked == args.monai_roi[0] and layout == "channels_last":
                        monai["fp32"] = t_monai
                    print(f"MONAI sliding_window_inference (roi {roi}, overlap 0.25, {layout}) {t_monai:8.1f} s")
                    print(f"  unetflow is {t_monai / t_ours:.2f}x faster (target >= 1.5 like for like)")
                    print(f"  MONAI max |tiled - whole image| on slice 0: {np.abs(monai_out - whole_same).max():.2e}")
        if args.variants:
            measured = {"eager": (t_ours, block, t_forward)}
            rows = variant_rows(args, valid, same, volume, shape, measured, monai, device, tmp)
            print(table(rows))


def variant_rows(args, valid, same, volume, shape, measured, monai, device, tmp: Path) -> list[dict]:
    """One row per variant: end to end, its own pure forward over its own tiles, ratios to that and to eager fp32's
    pure forward, and MONAI like for like (channels_last, same precision, first --monai-roi)."""
    rows = []
    t_eager, block = measured["eager"][2], measured["eager"][1]
    roi = -(-((args.monai_roi or [0])[0] or valid.geometry.window(block[1])[0]) // same.geometry.step)
    roi *= same.geometry.step

    def calls_of(own_block):
        return forward_calls(shape, own_block, valid.geometries, args.batch_size)

    for name in args.variants:
        engine, precision, calibrate = VARIANTS[name]
        if name in measured:
            t_end, own_block, t_own = measured[name]
        elif name in FORWARD_ONLY:
            t_end, own_block, calls = float("nan"), block, calls_of(block)
            if engine == "onnxruntime":  # in this process
                run = onnxruntime_run(valid, calls[0], args.threads, tmp)
                t_own = min(pure_forward_seconds(run, calls, device) for _ in range(args.repeats))
            else:
                t_own = min(forward_in_fresh_process(engine, precision, calls, args) for _ in range(args.repeats))
        else:
            out = tmp / f"p-{name}.zarr"
            t_end, own_block, t_own, _ = least_times(
                args,
                lambda out=out, e=engine, p=precision, c=calibrate: run_predict(
                    tmp / "model.pt", tmp / "big.zarr", out, args, e, p, c
                ),
                lambda b, e=engine, p=precision: forward_in_fresh_process(e, p, calls_of(b), args),
            )
        row = {"variant": name, "block": "x".join(map(str, own_block)), "end_to_end_s": t_end, "forward_s": t_own}
        row["end_to_end_over_own_forward"] = t_end / t_own
        row["end_to_end_over_eager_forward"] = t_end / t_eager
        row["forward_over_eager_forward"] = t_own / t_eager
        if not args.skip_monai and not np.isnan(t_end):
            if precision not in monai:
                net = same.to(device).to(memory_format=torch.channels_last)
                monai[precision] = monai_seconds(net, volume, roi, args.batch_size, device, precision)[0]
            row["monai_s"] = monai[precision]
            row["monai_over_end_to_end"] = monai[precision] / t_end
        rows.append(row)
        print(row, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        lines.append("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
