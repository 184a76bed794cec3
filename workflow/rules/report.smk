rule report:
    """All per-slice metrics into one table, and a summary per experiment and volume."""
    input:
        [results(f"{EXPERIMENT}/{v}/metrics.csv") for v in evaluated_volumes()],
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
    log:
        results("logs/report.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        experiments=" ".join(EXPERIMENT for _ in evaluated_volumes()),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    shell:
        "python -m unetflow report --metrics {input} --experiments {params.experiments} "
        "--out {params.out} > {log} 2>&1"
