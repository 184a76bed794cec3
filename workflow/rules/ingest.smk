rule ingest:
    """TIFF stack (file, folder or glob) to OME-Zarr, streamed one slab at a time; labels are checked. A zarr
    store of images is used in place: this job writes a reference to it with its fingerprint and statistics.
    """
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
        source=ingest_path,
        kind=lambda wc: "labels" if wc.kind == "labels" else "image",
        options=ingest_options,
        code=stage_code("ingest"),
    shell:
        "python -m unetflow ingest {params.source:q} {output:q} --kind {params.kind:q} {params.options:q} > {log:q} 2>&1"
