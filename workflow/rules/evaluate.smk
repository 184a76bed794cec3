rule evaluate:
    """Per-slice pixel error, foreground-restricted Rand error, IoU and Dice against ground truth."""
    input:
        segmentation=results("{experiment}/{volume}/segmentation.ome.zarr"),
        truth=lambda wc: labels_zarr(wc.volume),
    output:
        results("{experiment}/{volume}/metrics.csv"),
    log:
        results("logs/evaluate/{experiment}_{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        connectivity=config["evaluate"]["connectivity"],
    shell:
        "python -m unetflow evaluate {input.segmentation} {input.truth} {output} --name {wildcards.volume} "
        "--connectivity {params.connectivity} > {log} 2>&1"
