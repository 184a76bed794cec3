"""Prediction speed and memory, measured side by side in one run on one volume:

1. `unetflow predict` end to end (read zarr, mirror, infer, write OME-Zarr; a subprocess, timed by itself)
   against the pure model forward time of exactly the same tiles (random data, no I/O);
2. against MONAI's `sliding_window_inference` at its default overlap (0.25, constant blending) with the same
   network width and depth (same padding, as MONAI needs) and the same tile size, given the volume in memory,
   with the network as built (contiguous, what a MONAI user runs) and converted to channels_last (the layout
   unetflow runs in, 1.3-1.6x faster on CPU), so that the layout's share of the gain is visible;
3. seams: both against one whole-image pass of their own network on the first slice;
4. peak RSS of `unetflow predict` on the volume and on a tenth of it.

Run by hand (needs `pip install monai psutil`, the `bench` extra):
    python benchmarks/predict_speed.py [--shape 30 2048 2048] [--width 16] [--levels 5] [--memory-mb 2048]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from unetflow.blocks import read_mirrored
from unetflow.inference.tiling import plan_blocks
from unetflow.intensity import image_stats
from unetflow.models import UNet, UNetConfig
from unetflow.models.checkpoint import save_checkpoint
from unetflow.runtime import memory_format
from unetflow.store import create_image, open_image

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def write_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Smooth random EM-like texture, slice by slice (never the whole volume in memory)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    target = create_image(path, shape, np.uint8, (1, 1024, 1024))
    for z in range(shape[0]):
        plane = ndi.gaussian_filter(rng.normal(size=shape[1:]).astype(np.float32), 2)
        target[z] = np.clip(128 + 400 * plane, 0, 255).astype(np.uint8)


def run_predict(model: Path, source: Path, out: Path, args) -> tuple[float, float, tuple[int, ...]]:
    """(seconds inside predict, peak RSS MiB, block) of one `unetflow predict` subprocess."""
    cmd = [sys.executable, "-m", "unetflow", "predict", str(model), str(source), "--out", str(out)]
    cmd += [
        "--memory-mb",
        str(args.memory_mb),
        "--batch-size",
        str(args.batch_size),
        "--settings",
        '{"dtype": "float16"}',
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
    rss = int(re.search(r"MAXRSS (\d+)", done.stdout).group(1)) / 1024
    block = tuple(zarr.open_group(str(out), mode="r").attrs["unetflow"]["block"])
    return seconds, rss, block


def pure_forward_seconds(model: torch.nn.Module, shape, block, batch: int, device: torch.device) -> float:
    """Forward passes over the same tiles as predict (same count, shape, batching and memory layout), on random
    data."""
    layout = memory_format(device, 2)
    model = model.to(memory_format=layout)
    plan = plan_blocks(shape, block, model.geometries, 2)
    read = [s.stop - s.start for s in plan.blocks[0].read]
    calls = []
    for _ in plan.blocks:  # a 2D model runs a block's slices in batches of `batch`
        for start in range(0, read[0], batch):
            calls.append(min(batch, read[0] - start))
    x = {n: torch.randn(n, 1, read[1], read[2], device=device).contiguous(memory_format=layout) for n in set(calls)}
    with torch.inference_mode():
        model(x[calls[0]]).softmax(1)
        start = time.perf_counter()
        for n in calls:
            model(x[n]).softmax(1).cpu()
        return time.perf_counter() - start


def monai_seconds(model: torch.nn.Module, volume: np.ndarray, roi: int, batch: int, device) -> tuple[float, np.ndarray]:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(volume[:, None]).to(device)
    with torch.inference_mode():
        start = time.perf_counter()
        out = sliding_window_inference(x, (roi, roi), batch, lambda t: model(t).softmax(1))
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
        t_small, rss_small, _ = run_predict(tmp / "model.pt", tmp / "small.zarr", tmp / "ps.zarr", args)
        t_ours, rss_big, block = run_predict(tmp / "model.pt", tmp / "big.zarr", tmp / "pb.zarr", args)
        read = valid.geometry.window(block[1])[0]
        print(f"block {block}, tile input {read} px")
        t_forward = pure_forward_seconds(valid.to(device), shape, block, args.batch_size, device)
        print(f"unetflow predict end to end  {t_ours:8.1f} s")
        print(f"pure forward, same tiles     {t_forward:8.1f} s   ratio {t_ours / t_forward:.3f} (target <= 1.15)")
        print(f"peak RSS: {tenth} {rss_small:.0f} MiB, {shape} {rss_big:.0f} MiB: ratio {rss_big / rss_small:.3f}")
        image = open_image(tmp / "big.zarr")
        stats = image_stats(image)
        volume = stats.normalize(image.array[:])
        ours = np.asarray(open_image(tmp / "pb.zarr").array[:, 0], np.float32)
        norm = volume[0]
        seam_ours = np.abs(ours - whole_image(valid, norm, True)).max()
        print(f"unetflow max |tiled - whole image| on slice 0: {seam_ours:.2e} (float16 output)")
        if not args.skip_monai:
            whole_same = whole_image(same, norm, False)
            for asked in args.monai_roi:
                step = same.geometry.step  # same padding needs multiples of the pooling step
                roi = -(-(asked or read) // step) * step
                for layout in args.monai_layouts:
                    net = same.to(device).to(memory_format=LAYOUTS[layout])
                    t_monai, monai_out = monai_seconds(net, volume, roi, args.batch_size, device)
                    print(f"MONAI sliding_window_inference (roi {roi}, overlap 0.25, {layout}) {t_monai:8.1f} s")
                    print(f"  unetflow is {t_monai / t_ours:.2f}x faster (target >= 1.3)")
                    print(f"  MONAI max |tiled - whole image| on slice 0: {np.abs(monai_out - whole_same).max():.2e}")


if __name__ == "__main__":
    main()
