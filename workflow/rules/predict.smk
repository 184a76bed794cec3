P = config["predict"]


rule predict:
    """Overlap-tile inference over a volume with dask, block by block, into class probabilities."""
    input:
        model=model_file(),
        images=lambda wc: images_zarr(wc.volume),
    output:
        directory(results("{experiment}/{volume}/probabilities.ome.zarr")),
    log:
        results("logs/predict/{experiment}_{volume}.log"),
    benchmark:
        results("benchmarks/predict/{experiment}_{volume}.tsv")
    conda:
        ENV
    threads: P["threads"]
    resources:
        gpu=P["gpus"],
        mem_mb=P["mem_mb"],
        runtime=P["runtime"],
    params:
        block=" ".join(map(str, P["block"])),
        dtype=P["dtype"],
        batch_size=P["batch_size"],
        workers=P["workers"],
        device=P["device"],
    shell:
        "python -m unetflow predict {input.model} {input.images} {output} --block {params.block} "
        "--dtype {params.dtype} --batch-size {params.batch_size} --workers {params.workers} "
        "--device {params.device} --threads {threads} > {log} 2>&1"
