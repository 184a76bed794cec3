rule segment:
    """Threshold the cell probability and label connected components (instance labels)."""
    input:
        results("{experiment}/{volume}/probabilities.ome.zarr"),
    output:
        directory(results("{experiment}/{volume}/segmentation.ome.zarr")),
    log:
        results("logs/segment/{experiment}_{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        threshold=config["segment"]["threshold"],
        connectivity=config["segment"]["connectivity"],
    shell:
        "python -m unetflow segment {input} {output} --threshold {params.threshold} "
        "--connectivity {params.connectivity} > {log} 2>&1"
