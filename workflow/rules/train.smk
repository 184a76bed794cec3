T = config["train"]
TRAIN_SETTINGS = {
    k: v
    for k, v in T.items()
    if k not in ("device", "threads", "gpus", "mem_mb", "runtime")
}


rule train:
    """Train the U-Net (a GPU job on a cluster); resumes from its last checkpoint when re-run after a kill."""
    input:
        images=[images_zarr(d) for d in config["experiment"]["train"]],
        labels=[labels_zarr(d) for d in config["experiment"]["train"]],
        weights=[weights_zarr(d) for d in config["experiment"]["train"]],
        val_images=[images_zarr(d) for d in config["experiment"]["validation"]],
        val_labels=[labels_zarr(d) for d in config["experiment"]["validation"]],
    output:
        model=results("models/{experiment}/model.pt"),
        log_csv=results("models/{experiment}/train_log.csv"),
    log:
        results("logs/train/{experiment}.log"),
    benchmark:
        results("benchmarks/train/{experiment}.tsv")
    conda:
        ENV
    threads: T["threads"]
    resources:
        gpu=T["gpus"],
        mem_mb=T["mem_mb"],
        runtime=T["runtime"],
    params:
        model=as_json(config["model"]),
        settings=as_json(TRAIN_SETTINGS),
        device=T["device"],
        out=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "python -m unetflow train --images {input.images} --labels {input.labels} --weights {input.weights} "
        "--val-images {input.val_images} --val-labels {input.val_labels} "
        "--model '{params.model}' --settings '{params.settings}' --device {params.device} "
        "--threads {threads} --out {params.out} > {log} 2>&1"
