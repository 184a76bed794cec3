REPORTED = [(run, v) for run in RUNS for v in evaluated_volumes(run)]


rule report:
    """Every run's metrics in one table, a summary per experiment, fold and volume, and cross-validation figures."""
    input:
        metrics=[results(f"{run}/{v}/metrics.csv") for run, v in REPORTED],
        volumes=[results(f"{run}/{v}/volume_metrics.csv") for run, v in REPORTED],
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
        "--runs {params.runs:q} --out {params.out:q} > {log:q} 2>&1"
