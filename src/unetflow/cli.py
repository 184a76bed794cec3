"""The `unetflow` command: one subcommand per pipeline stage, each a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from unetflow import __version__
from unetflow.settings import check, default, defaults, result_settings

SETTINGS_HELP = "the {section} section of the config as JSON (defaults and checks: the config schema)"


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
    from unetflow.stages import ingest

    if a.shard == (0, 1) and not a.gather:
        print(ingest.ingest(a.source, a.out, a.kind, a.voxel_size, a.chunks, a.unit, a.z_range, a.label_convention))
        return
    z_range = tuple(a.z_range) if a.z_range else None
    job = ingest.IngestJob(
        a.source, a.out, a.kind, tuple(a.voxel_size), tuple(a.chunks), a.unit, z_range, a.label_convention
    )
    if a.gather:
        print(ingest.finish(job))
    else:
        print(f"ingest: {ingest.copy_slabs(job, a.shard)} slabs copied")


def cmd_weights(a: argparse.Namespace) -> None:
    from unetflow.stages import weights

    params = weights.WeightParams.from_dict(a.settings)
    if a.phase is None and not a.gather:
        print(weights.compute_weights(a.labels, a.out, params))
        return
    job = weights.WeightsJob(a.labels, a.out, params)
    if a.gather:
        print(weights.gather(job))
    elif a.phase == "merge":
        weights.merge(job)
    else:
        step = weights.label if a.phase == "label" else weights.compute
        print(f"weights {a.phase}: {step(job, a.shard)} units done")


def cmd_figure_weights(a: argparse.Namespace) -> None:
    from unetflow.stages.figures import weight_figure

    weight_figure(a.images, a.labels, a.weights, a.out, a.slice)


def cmd_figure_curves(a: argparse.Namespace) -> None:
    from unetflow.stages.figures import training_curves

    training_curves(a.train_log, a.out)


def cmd_figure_overlay(a: argparse.Namespace) -> None:
    from unetflow.stages.figures import overlay_figure

    overlay_figure(a.images, a.labels, a.segmentation, a.out, a.slices)


def cmd_train(a: argparse.Namespace) -> None:
    from unetflow.experiment import Experiment
    from unetflow.stages.train import run

    experiment = Experiment.from_dict(a.experiment)
    job = {"workers": a.workers, "checkpoint_every": a.checkpoint_every}
    run(experiment, a.images, a.labels, a.weights, a.val_images, a.val_labels, a.out, a.device, a.threads, job)


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
    job = PredictJob.from_settings(a.model, a.source, a.out, a.settings, a.fold, a.batch_size, a.device, a.threads)
    print(predict_volume(job, SchedulerSpec(a.scheduler, a.workers), a.shard, a.memory_mb))


def cmd_segment(a: argparse.Namespace) -> None:
    from unetflow.stages import segment

    job = segment.SegmentJob.from_settings(a.probabilities, a.out, a.settings)
    if a.phase is None and not a.gather:
        print(segment.segment_volume(job.probabilities, job.out, **job.settings))
        return
    if a.gather:
        print(segment.gather(job))
    elif a.phase == "merge":
        print(f"segment: {segment.merge(job).count} cells")
    else:
        step = segment.label if a.phase == "label" else segment.relabel
        print(f"segment {a.phase}: {step(job, a.shard)} units done")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from unetflow.stages.evaluate import evaluate_volume

    settings = check("evaluate", a.settings)
    thresholds = settings["thresholds"] if a.probabilities else ()
    segment_settings = None
    if a.probabilities:  # the result-changing ones (the sweep sets the threshold)
        segment_settings = result_settings("segment", check("segment", a.segment_settings), "segment")
        segment_settings.pop("threshold")
    evaluate_volume(
        a.segmentation,
        a.truth,
        a.out,
        settings["connectivity"],
        a.name,
        a.volume_out,
        probabilities=a.probabilities,
        thresholds=thresholds,
        segment_settings=segment_settings,
    )


def cmd_report(a: argparse.Namespace) -> None:
    from unetflow.stages.report import write_report

    for path in write_report(a.metrics, a.runs, a.out, a.volume_metrics):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unetflow", description=__doc__)
    p.add_argument("--version", action="version", version=f"unetflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    synthetic, ingest, predict, train = (
        defaults("synthetic"),
        defaults("ingest"),
        defaults("predict"),
        defaults("train"),
    )
    s = sub.add_parser("synth", help="write the synthetic EM-like dataset (TIFF stacks)")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=synthetic["seed"])
    s.add_argument("--train", default=synthetic["train"], **_triple("training stack shape"))
    s.add_argument("--validation", default=synthetic["validation"], **_triple("validation stack shape"))
    s.add_argument("--volume", default=synthetic["volume"], **_triple("unlabelled volume shape"))
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("ingest", help="TIFF stack (file, folder or glob) to OME-Zarr")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--kind", choices=["image", "labels"], default="image")
    s.add_argument(
        "--voxel-size", type=float, nargs=3, default=default("dataset", "voxel_size"), metavar=("Z", "Y", "X")
    )
    s.add_argument("--unit", default=default("dataset", "unit"))
    s.add_argument("--chunks", default=ingest["chunks"], **_triple("chunk shape"))
    s.add_argument(
        "--z-range", type=int, nargs=2, default=None, metavar=("START", "STOP"), help="ingest only slices START..STOP-1"
    )
    s.add_argument(
        "--label-convention",
        choices=["binary255", "binary01", "instances"],
        default=default("dataset", "label_convention"),
        help="what label values mean; needed for instance ids (binary 0/255 and 0/1 are recognized)",
    )
    s.add_argument("--shard", type=_shard, default=(0, 1), help="copy only the i-th of N subsets of slabs (i/N)")
    s.add_argument("--gather", action="store_true", help="check that every slab is copied and finish the store")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("weights", help="the paper's weight map of a label OME-Zarr")
    s.add_argument("labels")
    s.add_argument("out")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="weights"))
    s.add_argument(
        "--phase", choices=["label", "merge", "compute"], default=None, help="one step of a map split into jobs"
    )
    s.add_argument(
        "--shard", type=_shard, default=(0, 1), help="label or compute only the i-th of N unit subsets (i/N)"
    )
    s.add_argument("--gather", action="store_true", help="check that every unit is computed and finish the map")
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("figure-weights", help="PNG: image, labels and weight map of one slice")
    for name in ("images", "labels", "weights", "out"):
        s.add_argument(name)
    s.add_argument("--slice", type=int, default=0)
    s.set_defaults(func=cmd_figure_weights)

    s = sub.add_parser("figure-curves", help="PNG: training loss and validation metrics of a train_log.csv")
    s.add_argument("train_log")
    s.add_argument("out")
    s.set_defaults(func=cmd_figure_curves)

    s = sub.add_parser("figure-overlay", help="PNG: slices with true and predicted cells, false merges and splits")
    for name in ("images", "labels", "segmentation", "out"):
        s.add_argument(name)
    s.add_argument("--slices", type=int, default=3, help="how many slices, evenly spread")
    s.set_defaults(func=cmd_figure_overlay)

    s = sub.add_parser("train", help="train a U-Net; writes model.pt and train_log.csv")
    s.add_argument("--experiment", type=_json, required=True, help="the run: name, model, train and fold as JSON")
    s.add_argument("--images", nargs="+", required=True)
    s.add_argument("--labels", nargs="+", required=True)
    s.add_argument("--weights", nargs="*", default=None)
    s.add_argument("--val-images", nargs="*", default=[])
    s.add_argument("--val-labels", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.add_argument("--device", default=train["device"], help="auto (CUDA when present), cpu, cuda or cuda:N")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: train.workers)")
    s.add_argument("--checkpoint-every", type=int, default=None, help="default: train.checkpoint_every")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="overlap-tile inference into probabilities OME-Zarr")
    s.add_argument("model")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="predict"))
    s.add_argument("--fold", type=_shard, default=None, help="predict only the held-out slices of fold I of K (I/K)")
    s.add_argument("--memory-mb", type=float, default=None, help="memory for one batch of tiles (automatic block)")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--device", default=predict["device"], help="auto (CUDA when present), cpu, cuda or cuda:N")
    s.add_argument("--scheduler", default=predict["scheduler"], help="threads, local (LocalCluster) or tcp://host:port")
    s.add_argument("--workers", type=int, default=predict["workers"], help="threads, or LocalCluster worker processes")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--shard", type=_shard, default=(0, 1), help="process only the i-th of N block subsets (i/N)")
    s.add_argument("--gather", action="store_true", help="check that all shards are done and finish the output")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("segment", help="threshold + connected components into labels OME-Zarr")
    s.add_argument("probabilities")
    s.add_argument("out")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="segment"))
    s.add_argument(
        "--phase",
        choices=["label", "merge", "relabel"],
        default=None,
        help="one step of a segmentation split into jobs",
    )
    s.add_argument(
        "--shard", type=_shard, default=(0, 1), help="label or relabel only the i-th of N unit subsets (i/N)"
    )
    s.add_argument("--gather", action="store_true", help="check that every unit is relabelled and finish the output")
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("evaluate", help="per-slice metrics against ground truth into CSV")
    s.add_argument("segmentation")
    s.add_argument("truth")
    s.add_argument("out")
    s.add_argument("--name", default="")
    s.add_argument("--volume-out", default=None, help="also write the volume's metrics (pooled counts) to this CSV")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="evaluate"))
    s.add_argument(
        "--probabilities",
        default=None,
        help="the probabilities the segmentation was made from: sweep evaluate.thresholds",
    )
    s.add_argument(
        "--segment-settings", type=_json, default={}, help="the segment settings of the sweep (JSON, as for segment)"
    )
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="collect metric CSVs into metrics.csv, summary.csv and cross_validation.csv")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--runs", nargs="+", required=True, help="the run of each metrics file: name or name/fold<i>")
    s.add_argument("--volume-metrics", nargs="*", default=None, help="each run's volume metrics CSV, in the same order")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A stage's messages go to stderr, which every rule sends to its log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, ArithmeticError) as exc:
        print(f"unetflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
