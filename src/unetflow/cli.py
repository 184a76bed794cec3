"""The `unetflow` command: one subcommand per pipeline stage, each a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from unetflow import __version__


def _triple(name: str) -> dict:
    return {"nargs": 3, "type": int, "metavar": ("Z", "Y", "X"), "help": name}


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def cmd_synth(a: argparse.Namespace) -> None:
    from unetflow.stages.synthetic import write_dataset

    shapes = {"train": a.train, "validation": a.validation, "volume": a.volume}
    for path in write_dataset(a.out, shapes, a.seed):
        print(path)


def cmd_ingest(a: argparse.Namespace) -> None:
    from unetflow.stages.ingest import ingest

    ingest(a.source, a.out, a.kind, a.voxel_size, a.chunks, a.unit, a.z_range)


def cmd_weights(a: argparse.Namespace) -> None:
    from unetflow.stages.weights import WeightParams, compute_weights

    params = WeightParams(a.w0, a.sigma, a.balance, a.connectivity, a.tolerance, a.dims)
    compute_weights(a.labels, a.out, params)


def cmd_figure_weights(a: argparse.Namespace) -> None:
    from unetflow.stages.figures import weight_figure

    weight_figure(a.images, a.labels, a.weights, a.out, a.slice)


def cmd_train(a: argparse.Namespace) -> None:
    from unetflow.training.data import load_slices, load_validation
    from unetflow.training.settings import TrainSettings
    from unetflow.training.trainer import fingerprint, train

    if len(a.images) != len(a.labels) or (a.weights and len(a.weights) != len(a.labels)):
        raise ValueError("--images, --labels (and --weights) need the same number of paths")
    if len(a.val_images) != len(a.val_labels):
        raise ValueError("--val-images and --val-labels need the same number of paths")
    settings = TrainSettings.from_dict(a.settings)
    data = load_slices(
        a.images,
        a.labels,
        a.weights,
        dims=int(a.model.get("dims") or 2),
        slice_context=int(a.model.get("slice_context") or 0),
    )
    validation = load_validation(a.val_images, a.val_labels)
    run_id = fingerprint(a.model, settings, a.images + a.labels + (a.weights or []))
    train(a.model, settings, data, validation, a.out, a.device, a.threads, run_id)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected i/N such as 0/4, got {text!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/N needs 0 <= i < N, got {text!r}")
    return i, n


def cmd_predict(a: argparse.Namespace) -> None:
    from unetflow.executor import SchedulerSpec
    from unetflow.stages.predict import PredictJob, finalize, predict_volume

    if a.gather:
        print(finalize(a.out))
        return
    job = PredictJob(
        a.model, a.source, a.out, tuple(a.block), a.dtype, a.tta, a.batch_size, a.device, a.threads, a.precision
    )
    print(predict_volume(job, SchedulerSpec(a.scheduler, a.workers), a.shard, a.memory_mb))


def cmd_segment(a: argparse.Namespace) -> None:
    from unetflow.stages.segment import segment_volume

    segment_volume(a.probabilities, a.out, a.threshold, a.connectivity)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from unetflow.stages.evaluate import evaluate_volume

    evaluate_volume(a.segmentation, a.truth, a.out, a.connectivity, a.name)


def cmd_report(a: argparse.Namespace) -> None:
    from unetflow.stages.report import write_report

    for path in write_report(a.metrics, a.experiments, a.out):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unetflow", description=__doc__)
    p.add_argument("--version", action="version", version=f"unetflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic EM-like dataset (TIFF stacks)")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train", default=[8, 256, 256], **_triple("training stack shape"))
    s.add_argument("--validation", default=[4, 256, 256], **_triple("validation stack shape"))
    s.add_argument("--volume", default=[16, 512, 512], **_triple("unlabelled volume shape"))
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("ingest", help="TIFF stack (file, folder or glob) to OME-Zarr")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--kind", choices=["image", "labels"], default="image")
    s.add_argument("--voxel-size", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("Z", "Y", "X"))
    s.add_argument("--unit", default="nanometer")
    s.add_argument("--chunks", default=[1, 512, 512], **_triple("chunk shape"))
    s.add_argument(
        "--z-range", type=int, nargs=2, default=None, metavar=("START", "STOP"), help="ingest only slices START..STOP-1"
    )
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("weights", help="the paper's weight map of a label OME-Zarr")
    s.add_argument("labels")
    s.add_argument("out")
    s.add_argument("--w0", type=float, default=10.0)
    s.add_argument("--sigma", type=float, default=5.0)
    s.add_argument("--balance", choices=["dataset", "image", "none"], default="dataset")
    s.add_argument("--connectivity", type=int, default=None)
    s.add_argument("--tolerance", type=float, default=5e-7)
    s.add_argument("--dims", type=int, choices=[2, 3], default=2)
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("figure-weights", help="PNG: image, labels and weight map of one slice")
    s.add_argument("images")
    s.add_argument("labels")
    s.add_argument("weights")
    s.add_argument("out")
    s.add_argument("--slice", type=int, default=0)
    s.set_defaults(func=cmd_figure_weights)

    s = sub.add_parser("train", help="train a U-Net; writes model.pt and train_log.csv")
    s.add_argument("--images", nargs="+", required=True)
    s.add_argument("--labels", nargs="+", required=True)
    s.add_argument("--weights", nargs="*", default=None)
    s.add_argument("--val-images", nargs="*", default=[])
    s.add_argument("--val-labels", nargs="*", default=[])
    s.add_argument("--model", type=_json, default={}, help="model settings as JSON")
    s.add_argument("--settings", type=_json, default={}, help="training settings as JSON")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="overlap-tile inference into probabilities OME-Zarr")
    s.add_argument("model")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--block", default=[0, 0, 0], **_triple("output block (chunk) shape; 0: largest within --memory-mb"))
    s.add_argument("--memory-mb", type=float, default=2048, help="memory for one batch of tiles (automatic block)")
    s.add_argument("--dtype", choices=["float16", "float32", "uint8"], default="float16")
    s.add_argument("--tta", action="store_true", help="average over the 8 flips/90-degree rotations (3D: 8 flips)")
    s.add_argument("--device", default="auto")
    s.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    s.add_argument("--scheduler", default="threads", help="threads, local (LocalCluster) or tcp://host:port")
    s.add_argument("--workers", type=int, default=1, help="threads, or LocalCluster worker processes")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--shard", type=_shard, default=(0, 1), help="process only the i-th of N block subsets (i/N)")
    s.add_argument("--gather", action="store_true", help="check that all shards are done and finish the output")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("segment", help="threshold + connected components into labels OME-Zarr")
    s.add_argument("probabilities")
    s.add_argument("out")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--connectivity", type=int, choices=[4, 8], default=4)
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("evaluate", help="per-slice metrics against ground truth into CSV")
    s.add_argument("segmentation")
    s.add_argument("truth")
    s.add_argument("out")
    s.add_argument("--name", default="")
    s.add_argument("--connectivity", type=int, choices=[4, 8], default=4)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="collect metric CSVs into metrics.csv and summary.csv")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--experiments", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"unetflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
