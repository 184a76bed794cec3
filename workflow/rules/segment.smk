rule segment:
    """Threshold the cell probability and label connected components (instance labels)."""
    input:
        results("{run}/{volume}/probabilities.ome.zarr"),
    output:
        directory(results("{run}/{volume}/segmentation.ome.zarr")),
    log:
        results("logs/segment/{run}/{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=section("segment", "segment"),
        code=stage_code("segment"),
    shell:
        "python -m unetflow segment {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
