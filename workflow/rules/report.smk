REPORTED = [(run, v) for run in RUNS for v in evaluated_volumes(run)]


rule report:
    """Every run's metrics in one table, a summary per experiment, fold and volume, cross-validation figures and the
    threshold chosen by cross-validation."""
    input:
        metrics=[results(f"{run}/{v}/metrics.csv") for run, v in REPORTED],
        volumes=[results(f"{run}/{v}/volume_metrics.csv") for run, v in REPORTED],
        sweeps=[results(f"{run}/{v}/sweep.csv") for run, v in REPORTED],
    output:
        metrics=report(
            results("report/metrics.csv"),
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        summary=report(
            results("report/summary.csv"),
            caption="../report/summary.rst",
            category="Metrics",
        ),
        cross_validation=results("report/cross_validation.csv"),
        volumes=results("report/volumes.csv"),
        thresholds=results("report/thresholds.csv"),
        threshold_choice=results("report/threshold_choice.csv"),
        comparison=report(
            results("report/experiments.png"),
            caption="../report/experiments.rst",
            category="Metrics",
        ),
        tables=report(
            results("report/tables.html"),
            caption="../report/tables.rst",
            category="Metrics",
        ),
    log:
        results("logs/report.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        runs=[run for run, _ in REPORTED],
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        code=stage_code("report"),
    shell:
        "python -m unetflow report --metrics {input.metrics:q} --volume-metrics {input.volumes:q} "
        "--sweeps {input.sweeps:q} --runs {params.runs:q} --out {params.out:q} > {log:q} 2>&1"


rule training_curves:
    """A run's training loss and validation metrics against the iteration."""
    input:
        results("models/{run}/train_log.csv"),
    output:
        report(
            results("report/curves/{run}.png"),
            caption="../report/curves.rst",
            category="Training",
        ),
    log:
        results("logs/training_curves/{run}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_code("figures"),
    shell:
        "python -m unetflow figure-curves {input:q} --out {output:q} > {log:q} 2>&1"


rule overlay:
    """A few slices of an evaluated volume: true and predicted cells, false merges and false splits marked."""
    input:
        images=lambda wc: images_zarr(wc.volume),
        labels=lambda wc: labels_zarr(wc.volume),
        segmentation=results("{run}/{volume}/segmentation.ome.zarr"),
    output:
        report(
            results("report/overlays/{run}/{volume}.png"),
            caption="../report/overlays.rst",
            category="Segmentations",
        ),
    log:
        results("logs/overlay/{run}/{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        code=stage_code("figures"),
    shell:
        "python -m unetflow figure-overlay {input.images:q} {input.labels:q} {input.segmentation:q} --out {output:q} "
        "--slices 3 > {log:q} 2>&1"
