rule ingest_shard:
    """One of the jobs copying a large TIFF stack (or zarr labels): its share of the z-slabs, each recorded."""
    input:
        ingest_source,
    output:
        temp(touch(results("data/{dataset}/ingest_shards/{kind}{shard}.done"))),
    log:
        results("logs/ingest/{dataset}_{kind}{shard}.log"),
    wildcard_constraints:
        kind="images|labels",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        out=lambda wc: results(f"data/{wc.dataset}/{wc.kind}.ome.zarr"),
        source=ingest_path,
        kind=lambda wc: "labels" if wc.kind == "labels" else "image",
        options=ingest_options,
        shard=lambda wc: f"{wc.shard}/{ingest_jobs(wc)}",
        code=stage_code("ingest"),
    shell:
        "python -m unetflow ingest {params.source:q} --out {params.out:q} --kind {params.kind:q} {params.options:q} "
        "--shard {params.shard:q} > {log:q} 2>&1"


rule ingest:
    """TIFF stack (file, folder or glob) to OME-Zarr, slab by slab; labels are checked. Split into copying jobs
    by the stack's size (this job then merges their records). A zarr store of images is used in place: this job
    writes a reference to it with its fingerprint and statistics."""
    input:
        source=ingest_source,
        copied=ingest_steps,
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
        mode=lambda wc: ["--gather"] if ingest_jobs(wc) > 1 else [],
        code=stage_code("ingest"),
    shell:
        "python -m unetflow ingest {params.source:q} --out {output:q} --kind {params.kind:q} {params.options:q} "
        "{params.mode:q} > {log:q} 2>&1"
