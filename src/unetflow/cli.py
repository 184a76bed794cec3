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
    job = PredictJob.from_settings(
        a.model, a.source, a.out, a.settings, a.fold, a.batch_size, a.device, a.threads, a.tiles
    )
    print(predict_volume(job, SchedulerSpec(a.scheduler, a.workers), a.shard, a.memory_mb))


def cmd_calibrate(a: argparse.Namespace) -> None:
    from unetflow.stages.calibrate import calibrate_tiles

    side = calibrate_tiles(a.model, a.out, a.settings, a.device, a.threads)
    print(f"{a.out}: tiles of {side} output pixels per side")


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
        sweep_out=a.sweep_out,
    )


def cmd_export(a: argparse.Namespace) -> None:
    from unetflow.stages.export import export_model

    print(export_model(a.model, a.images, a.out, a.name))


def cmd_view(a: argparse.Namespace) -> None:
    from unetflow.stages.view import write_view

    layers = {"segmentation": a.segmentation, **({"truth": a.truth} if a.truth else {})}
    print(write_view(a.image, layers, a.out))


def cmd_report(a: argparse.Namespace) -> None:
    from unetflow.stages.report import write_report

    for path in write_report(a.metrics, a.runs, a.out, a.volume_metrics, a.sweeps):
        print(path)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (where it has one) and keeps the descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unshown = action.default in (None, False, [], {}, argparse.SUPPRESS) or action.type is _shard
        if unshown or action.option_strings == []:
            return text
        return super()._get_help_string(action) or text


def _command(sub, name: str, summary: str, details: str = ""):
    """A subcommand whose one-line summary is listed by `unetflow --help` and whose page opens with it."""
    description = f"{summary}.\n\n{details}" if details else f"{summary}."
    return sub.add_parser(name, help=summary, description=description, formatter_class=_HelpFormatter)


def _out(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument("--out", required=True, help=what)


def _where(s: argparse.ArgumentParser, device: str, threads: str = "CPU threads") -> None:
    """The device and CPU threads of a command that runs a network (train, predict, calibrate)."""
    s.add_argument("--device", default=device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    s.add_argument("--threads", type=int, default=None, help=f"{threads} (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand: inputs positional (or named where there are lists of them), the output always --out,
    defaults from the config schema (`unetflow.settings`)."""
    p = argparse.ArgumentParser(prog="unetflow", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"unetflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synthetic, ingest, predict, train = (
        defaults("synthetic"),
        defaults("ingest"),
        defaults("predict"),
        defaults("train"),
    )
    s = _command(
        sub,
        "synth",
        "write the synthetic EM-like dataset (TIFF stacks)",
        "Cells of a warped 3D Voronoi tessellation with membranes, blur and noise: a training stack and a validation\n"
        "stack with labels, and an unlabelled volume.",
    )
    _out(s, "folder for the TIFF stacks")
    s.add_argument("--seed", type=int, default=synthetic["seed"], help="random seed")
    s.add_argument("--train", default=synthetic["train"], **_triple("training stack shape"))
    s.add_argument("--validation", default=synthetic["validation"], **_triple("validation stack shape"))
    s.add_argument("--volume", default=synthetic["volume"], **_triple("unlabelled volume shape"))
    s.set_defaults(func=cmd_synth)

    s = _command(
        sub,
        "ingest",
        "copy a TIFF stack (file, folder or glob) or zarr labels into OME-Zarr",
        "Slab by slab, never the whole stack in memory; labels are checked and their convention recorded. A large\n"
        "stack is copied by several jobs (--shard i/N) and finished by one (--gather).",
    )
    s.add_argument("source", help="a multi-page TIFF, a folder or a glob of TIFF slices, or a zarr store")
    _out(s, "the OME-Zarr store to write")
    s.add_argument("--kind", choices=["image", "labels"], default="image", help="what the source holds")
    s.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        default=default("dataset", "voxel_size"),
        metavar=("Z", "Y", "X"),
        help="physical voxel size in --unit",
    )
    s.add_argument("--unit", default=default("dataset", "unit"), help="an OME-Zarr space unit")
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

    s = _command(
        sub,
        "weights",
        "compute the paper's weight map of a label OME-Zarr",
        "w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), exact, unit by unit; split into jobs with --phase.",
    )
    s.add_argument("labels", help="the ingested labels (OME-Zarr)")
    _out(s, "the weight map (OME-Zarr) to write")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="weights"))
    s.add_argument(
        "--phase", choices=["label", "merge", "compute"], default=None, help="one step of a map split into jobs"
    )
    s.add_argument(
        "--shard", type=_shard, default=(0, 1), help="label or compute only the i-th of N unit subsets (i/N)"
    )
    s.add_argument("--gather", action="store_true", help="check that every unit is computed and finish the map")
    s.set_defaults(func=cmd_weights)

    s = _command(sub, "figure-weights", "draw image, labels and weight map of one slice (PNG)")
    s.add_argument("images", help="the ingested images (OME-Zarr)")
    s.add_argument("labels", help="the ingested labels (OME-Zarr)")
    s.add_argument("weights", help="the weight map (OME-Zarr)")
    _out(s, "the PNG to write")
    s.add_argument("--slice", type=int, default=0, help="which slice")
    s.set_defaults(func=cmd_figure_weights)

    s = _command(sub, "figure-curves", "draw the training loss and validation metrics of a train_log.csv (PNG)")
    s.add_argument("train_log", help="the train_log.csv of a training run")
    _out(s, "the PNG to write")
    s.set_defaults(func=cmd_figure_curves)

    s = _command(
        sub, "figure-overlay", "draw slices with true and predicted cells, false merges and false splits (PNG)"
    )
    s.add_argument("images", help="the ingested images (OME-Zarr)")
    s.add_argument("labels", help="the ground truth (OME-Zarr)")
    s.add_argument("segmentation", help="the segmentation (OME-Zarr)")
    _out(s, "the PNG to write")
    s.add_argument("--slices", type=int, default=3, help="how many slices, evenly spread")
    s.set_defaults(func=cmd_figure_overlay)

    s = _command(
        sub,
        "train",
        "train a U-Net; writes model.pt and train_log.csv",
        "Resumes from its last checkpoint when the run's fingerprint matches (a killed job goes on where it was).",
    )
    s.add_argument("--experiment", type=_json, required=True, help="the run: name, model, train and fold as JSON")
    s.add_argument("--images", nargs="+", required=True, help="training images (OME-Zarr), one per dataset")
    s.add_argument("--labels", nargs="+", required=True, help="their labels (OME-Zarr), in the same order")
    s.add_argument("--weights", nargs="*", default=None, help="their weight maps (OME-Zarr), in the same order")
    s.add_argument("--val-images", nargs="*", default=[], help="validation images (OME-Zarr)")
    s.add_argument("--val-labels", nargs="*", default=[], help="their labels, in the same order")
    _out(s, "the folder for model.pt, train_log.csv and checkpoints/")
    _where(s, train["device"])
    s.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: train.workers)")
    s.add_argument("--checkpoint-every", type=int, default=None, help="default: train.checkpoint_every")
    s.set_defaults(func=cmd_train)

    s = _command(
        sub,
        "predict",
        "run overlap-tile inference into a probabilities OME-Zarr",
        "Block by block on dask, each output pixel computed once from its full context (seamless); resumable file\n"
        "by file; split into jobs with --shard i/N and finished with --gather.",
    )
    s.add_argument("model", help="a model.pt written by train")
    s.add_argument("source", help="the images: an ingested OME-Zarr, a zarr store or a TIFF stack")
    _out(s, "the probabilities (OME-Zarr, czyx) to write")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="predict"))
    s.add_argument("--fold", type=_shard, default=None, help="predict only the held-out slices of fold I of K (I/K)")
    s.add_argument("--memory-mb", type=float, default=None, help="memory for one batch of tiles (automatic block)")
    s.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: predict.batch_size)")
    _where(s, predict["device"], "CPU threads per worker")
    s.add_argument("--scheduler", default=predict["scheduler"], help="threads, local (LocalCluster) or tcp://host:port")
    s.add_argument("--workers", type=int, default=predict["workers"], help="threads, or LocalCluster worker processes")
    s.add_argument("--shard", type=_shard, default=(0, 1), help="process only the i-th of N block subsets (i/N)")
    s.add_argument("--gather", action="store_true", help="check that all shards are done and finish the output")
    s.add_argument(
        "--tiles",
        default=None,
        help="with zeros in predict.block: the fastest tile side from this calibration file (measured and written "
        "there first if it is missing; see `unetflow calibrate`) instead of the largest the memory budget allows",
    )
    s.set_defaults(func=cmd_predict)

    s = _command(
        sub,
        "calibrate",
        "time tile sizes for prediction on this machine and write the fastest to a file",
        "The run's engine and precision on tiles from a quarter of the memory budget's largest up to it; the side\n"
        "with the least time per output voxel is written (JSON) for `unetflow predict --tiles`.",
    )
    s.add_argument("model", help="a model.pt written by train")
    _out(s, "the calibration file (JSON) to write")
    s.add_argument("--settings", type=_json, default={}, help=SETTINGS_HELP.format(section="predict"))
    _where(s, predict["device"])
    s.set_defaults(func=cmd_calibrate)

    s = _command(
        sub,
        "segment",
        "label cells from probabilities into an OME-Zarr of NGFF labels",
        "Threshold and connected components, or a seeded watershed (segment.method), unit by unit with cells\n"
        "merged across units; split into jobs with --phase.",
    )
    s.add_argument("probabilities", help="the probabilities (OME-Zarr) written by predict")
    _out(s, "the segmentation (OME-Zarr labels) to write")
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

    s = _command(
        sub,
        "evaluate",
        "compare a segmentation with ground truth: the ISBI metrics per slice into a CSV",
        "Pixel error, foreground-restricted Rand and information errors with split and merge parts, warping error,\n"
        "IoU and Dice; with --volume-out also the volume's metrics and the threshold sweep.",
    )
    s.add_argument("segmentation", help="the segmentation (OME-Zarr)")
    s.add_argument("truth", help="the ground truth (OME-Zarr)")
    _out(s, "the per-slice CSV to write")
    s.add_argument("--name", default="", help="the volume's name in the CSV")
    s.add_argument("--volume-out", default=None, help="also write the volume's metrics (pooled counts) to this CSV")
    s.add_argument(
        "--sweep-out", default=None, help="with --volume-out: also the volume's metrics at every swept threshold"
    )
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

    s = _command(
        sub,
        "export",
        "write a trained model as a bioimage.io model package (zip, spec 0.5)",
        "rdf.yaml, state-dict and TorchScript weights, a test tile cut from IMAGES and its output, a cover and a\n"
        "README; the tile sizes and the halo that keep tiled inference in other tools seamless.",
    )
    s.add_argument("model", help="a model.pt written by train")
    s.add_argument("images", help="images (OME-Zarr) to cut the test tile and the cover from")
    _out(s, "the package (.zip) to write")
    s.add_argument("--name", default="", help="the model's name (default: the model's folder)")
    s.set_defaults(func=cmd_export)

    s = _command(
        sub,
        "view",
        "link an image and its label stores into one OME-Zarr that viewers open with label layers",
        "No voxel is copied: the image's levels and the label stores are relative symbolic links.",
    )
    s.add_argument("image", help="the ingested images (OME-Zarr)")
    s.add_argument("segmentation", help="the segmentation (OME-Zarr labels): layer 'segmentation'")
    s.add_argument("truth", nargs="?", default=None, help="the ground truth (OME-Zarr labels): layer 'truth'")
    _out(s, "the view (OME-Zarr) to write")
    s.set_defaults(func=cmd_view)

    s = _command(
        sub,
        "report",
        "collect metric CSVs into metrics.csv, summary.csv, volumes.csv, cross_validation.csv and the CV threshold",
    )
    s.add_argument("--metrics", nargs="+", required=True, help="the per-slice metrics CSVs")
    s.add_argument("--runs", nargs="+", required=True, help="the run of each metrics file: name or name/fold<i>")
    s.add_argument("--volume-metrics", nargs="*", default=None, help="each run's volume metrics CSV, in the same order")
    s.add_argument("--sweeps", nargs="*", default=None, help="each run's threshold sweep CSV, in the same order")
    _out(s, "the report folder")
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
