rule calibrate_tiles:
    """The tile side found fastest per output voxel for a run's predictions (predict.calibrate), timed once
    with the run's engine and precision on a prediction node; every prediction job of the run shares it.
    """
    input:
        model=lambda wc: model_file(wc.run),
    output:
        results("models/{run}/tiles.json"),
    log:
        results("logs/calibrate/{run}.log"),
    conda:
        ENV
    threads: setting("predict", "threads")
    resources:
        gpu=setting("predict", "gpus"),
        mem_mb=setting("predict", "mem_mb"),
        runtime=10,
    params:
        settings=predict_settings,
        code=stage_code("calibrate"),
        job=lambda wc: Scheduling(device=experiment_of(wc.run)["predict"]["device"]),
    shell:
        "python -m unetflow calibrate {input.model:q} --out {output:q} --settings {params.settings:q} "
        "--threads {threads} {params.job.words:q} > {log:q} 2>&1"


rule predict_shard:
    """One of `predict.shards` cluster jobs: the i-th interleaved subset of a volume's blocks, written into
    the shared partial output."""
    input:
        model=lambda wc: model_file(wc.run),
        images=lambda wc: images_zarr(wc.volume),
        tiles=lambda wc: tile_calibration(wc.run) or [],
    output:
        temp(touch(results("{run}/{volume}/predict_shards/{shard}.done"))),
    log:
        results("logs/predict/{run}/{volume}_shard{shard}.log"),
    benchmark:
        results("benchmarks/predict/{run}/{volume}_shard{shard}.tsv")
    conda:
        ENV
    threads: setting("predict", "threads")
    resources:
        gpu=setting("predict", "gpus"),
        mem_mb=setting("predict", "mem_mb"),
        runtime=setting("predict", "runtime"),
    params:
        out=lambda wc: results(f"{wc.run}/{wc.volume}/probabilities.ome.zarr"),
        settings=predict_settings,
        fold=predict_fold,
        shard=lambda wc: f"{wc.shard}/{shards(wc)}",
        code=stage_code("predict"),
        job=predict_job,
    shell:
        "python -m unetflow predict {input.model:q} {input.images:q} --out {params.out:q} --settings {params.settings:q} "
        "{params.fold:q} --threads {threads} {params.job.words:q} --shard {params.shard:q} > {log:q} 2>&1"


rule predict:
    """Overlap-tile inference over a volume with dask, block by block, into class probabilities. Resumable: a
    killed job re-run computes only the blocks not yet recorded in the partial output (of the same fingerprint).
    With `predict.shards` > 1 the shard jobs compute and this job gathers: it checks every block and finishes.
    """
    input:
        model=lambda wc: model_file(wc.run),
        images=lambda wc: images_zarr(wc.volume),
        tiles=lambda wc: tile_calibration(wc.run) or [],
        shards=lambda wc: (
            expand(
                results(f"{wc.run}/{wc.volume}/predict_shards/{{shard}}.done"),
                shard=range(shards(wc)),
            )
            if shards(wc) > 1
            else []
        ),
    output:
        directory(results("{run}/{volume}/probabilities.ome.zarr")),
    log:
        results("logs/predict/{run}/{volume}.log"),
    benchmark:
        results("benchmarks/predict/{run}/{volume}.tsv")
    conda:
        ENV
    threads: lambda wc: 1 if shards(wc) > 1 else experiment_of(wc.run)["predict"]["threads"]
    resources:
        gpu=lambda wc: 0 if shards(wc) > 1 else experiment_of(wc.run)["predict"]["gpus"],
        mem_mb=lambda wc: (
            1000 if shards(wc) > 1 else experiment_of(wc.run)["predict"]["mem_mb"]
        ),
        runtime=lambda wc: (
            10 if shards(wc) > 1 else experiment_of(wc.run)["predict"]["runtime"]
        ),
    params:
        settings=predict_settings,
        fold=predict_fold,
        mode=lambda wc: ["--gather"] if shards(wc) > 1 else [],
        code=stage_code("predict"),
        job=predict_job,
    shell:
        "python -m unetflow predict {input.model:q} {input.images:q} --out {output:q} --settings {params.settings:q} "
        "{params.fold:q} --threads {threads} {params.job.words:q} {params.mode:q} > {log:q} 2>&1"
