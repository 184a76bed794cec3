SYNTH = config["synthetic"]


rule synthesize:
    """The embedded default's data: deterministic synthetic EM stacks as TIFF."""
    output:
        train_images=results("synthetic/train-images.tif"),
        train_labels=results("synthetic/train-labels.tif"),
        validation_images=results("synthetic/validation-images.tif"),
        validation_labels=results("synthetic/validation-labels.tif"),
        volume_images=results("synthetic/volume-images.tif"),
    log:
        results("logs/synthesize.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        seed=SYNTH["seed"],
        train=SYNTH["train"],
        validation=SYNTH["validation"],
        volume=SYNTH["volume"],
        out=lambda wildcards, output: os.path.dirname(output.train_images),
        code=stage_code("synthetic"),
    shell:
        "python -m unetflow synth --out {params.out:q} --seed {params.seed:q} --train {params.train:q} "
        "--validation {params.validation:q} --volume {params.volume:q} > {log:q} 2>&1"
