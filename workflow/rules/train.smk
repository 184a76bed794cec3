rule train:
    """Train a run's U-Net (a GPU job on a cluster); resumes from its last checkpoint when re-run after a kill,
    and only from a checkpoint of the same fingerprint."""
    input:
        unpack(train_inputs),
    output:
        model=results("models/{run}/model.pt"),
        log_csv=results("models/{run}/train_log.csv"),
    log:
        results("logs/train/{run}.log"),
    benchmark:
        results("benchmarks/train/{run}.tsv")
    conda:
        ENV
    threads: setting("train", "threads")
    resources:
        gpu=setting("train", "gpus"),
        mem_mb=setting("train", "mem_mb"),
        runtime=setting("train", "runtime"),
    params:
        experiment=train_experiment,
        code=stage_code("train"),
        out=lambda wildcards, output: os.path.dirname(output.model),
        job=lambda wc: Scheduling(
            device=experiment_of(wc.run)["train"]["device"],
            workers=experiment_of(wc.run)["train"]["workers"],
            checkpoint_every=experiment_of(wc.run)["train"]["checkpoint_every"],
        ),
    shell:
        "python -m unetflow train --experiment {params.experiment:q} --images {input.images:q} "
        "--labels {input.labels:q} --weights {input.weights:q} --val-images {input.val_images:q} "
        "--val-labels {input.val_labels:q} --out {params.out:q} --threads {threads} {params.job.words:q} > {log:q} 2>&1"
