rule evaluate:
    """Per-slice pixel error, foreground-restricted Rand error, IoU and Dice against ground truth."""
    input:
        segmentation=results("{run}/{volume}/segmentation.ome.zarr"),
        truth=lambda wc: labels_zarr(wc.volume),
    output:
        metrics=results("{run}/{volume}/metrics.csv"),
        volume=results("{run}/{volume}/volume_metrics.csv"),
    log:
        results("logs/evaluate/{run}/{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=section("evaluate", "evaluate"),
        code=stage_code("evaluate"),
    shell:
        "python -m unetflow evaluate {input.segmentation:q} {input.truth:q} {output.metrics:q} --name {wildcards.volume:q} "
        "--volume-out {output.volume:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"
