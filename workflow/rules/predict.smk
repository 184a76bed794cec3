SHARDS = config["predict"]["shards"]
P = config["predict"]


if SHARDS == 1:

    rule predict:
        """Overlap-tile inference over a volume with dask, block by block, into class probabilities.
        Resumable: a killed job re-run computes only the blocks not yet recorded in the partial output.
        """
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
            **predict_params(),
        shell:
            predict_command("")

else:

    rule predict_shard:
        """One of `predict.shards` cluster jobs: the i-th interleaved subset of a volume's blocks, written into
        the shared partial output."""
        input:
            model=model_file(),
            images=lambda wc: images_zarr(wc.volume),
        output:
            temp(touch(results("{experiment}/{volume}/predict_shards/{shard}.done"))),
        log:
            results("logs/predict/{experiment}_{volume}_shard{shard}.log"),
        benchmark:
            results("benchmarks/predict/{experiment}_{volume}_shard{shard}.tsv")
        conda:
            ENV
        threads: P["threads"]
        resources:
            gpu=P["gpus"],
            mem_mb=P["mem_mb"],
            runtime=P["runtime"],
        params:
            **predict_params(),
            shards=SHARDS,
        shell:
            predict_command("--shard {wildcards.shard}/{params.shards}")

    rule predict:
        """Gather: check that every block of every shard is done, then move the output into place."""
        input:
            model=model_file(),
            images=lambda wc: images_zarr(wc.volume),
            shards=expand(
                results("{{experiment}}/{{volume}}/predict_shards/{shard}.done"),
                shard=range(SHARDS),
            ),
        output:
            directory(results("{experiment}/{volume}/probabilities.ome.zarr")),
        log:
            results("logs/predict/{experiment}_{volume}_gather.log"),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            **predict_params(),
        shell:
            predict_command("--gather")
