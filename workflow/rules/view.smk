rule view:
    """An image with its segmentation (and ground truth) as label layers, in one OME-Zarr a viewer opens: relative
    links to the stores, no voxel copied."""
    input:
        image=lambda wc: images_zarr(wc.volume),
        segmentation=results("{run}/{volume}/segmentation.ome.zarr"),
        truth=lambda wc: [labels_zarr(wc.volume)] if has_labels(wc.volume) else [],
    output:
        directory(results("{run}/{volume}/view.ome.zarr")),
    log:
        results("logs/view/{run}/{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=stage_code("view"),
    shell:
        "python -m unetflow view {input.image:q} {input.segmentation:q} {input.truth:q} --out {output:q} "
        "> {log:q} 2>&1"
