rule ingest:
    """TIFF stack (file, folder or glob) to OME-Zarr, streamed one slab at a time; labels are checked."""
    input:
        ingest_source,
    output:
        directory(results("data/{dataset}/{kind}.ome.zarr")),
    log:
        results("logs/ingest/{dataset}_{kind}.log"),
    wildcard_constraints:
        kind="images|labels",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        kind=lambda wc: "labels" if wc.kind == "labels" else "image",
        chunks=" ".join(map(str, config["ingest"]["chunks"])),
        extra=ingest_params,
    shell:
        "python -m unetflow ingest {input} {output} --kind {params.kind} --chunks {params.chunks} "
        "{params.extra} > {log} 2>&1"
