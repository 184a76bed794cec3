rule evaluate:
    """Per-slice and per-volume ISBI metrics against ground truth (pixel, Rand, information and warping errors,
    IoU, Dice), their best over the threshold sweep (probabilities segmented again at each threshold), and the
    volume's metrics at every swept threshold.
    """
    input:
        segmentation=results("{run}/{volume}/segmentation.ome.zarr"),
        probabilities=results("{run}/{volume}/probabilities.ome.zarr"),
        truth=lambda wc: labels_zarr(wc.volume),
    output:
        metrics=results("{run}/{volume}/metrics.csv"),
        volume=results("{run}/{volume}/volume_metrics.csv"),
        sweep=results("{run}/{volume}/sweep.csv"),
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
        segment=section("segment", "segment"),
        code=stage_code("evaluate"),
    shell:
        "python -m unetflow evaluate {input.segmentation:q} {input.truth:q} --out {output.metrics:q} --name {wildcards.volume:q} "
        "--volume-out {output.volume:q} --sweep-out {output.sweep:q} --probabilities {input.probabilities:q} "
        "--settings {params.settings:q} --segment-settings {params.segment:q} > {log:q} 2>&1"
