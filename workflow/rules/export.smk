rule export:
    """A trained model as a bioimage.io model package (spec 0.5): rdf.yaml, state-dict and TorchScript weights, a
    test tile cut from the run's first validation (else training) images and its output, a cover and a README.
    """
    input:
        model=results("models/{run}/model.pt"),
        images=export_images,
    output:
        results("models/{run}/bioimageio.zip"),
    log:
        results("logs/export/{run}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=stage_code("export"),
    shell:
        "python -m unetflow export {input.model:q} {input.images:q} --out {output:q} --name {wildcards.run:q} "
        "> {log:q} 2>&1"
