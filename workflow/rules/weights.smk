rule weights:
    """The paper's weight map w(x) of a labelled dataset, precomputed once before training; one store per
    weight-map settings (the key in its name), shared by every experiment with those settings.
    """
    input:
        results("data/{dataset}/labels.ome.zarr"),
    output:
        directory(results("data/{dataset}/weights-{wkey}.ome.zarr")),
    log:
        results("logs/weights/{dataset}-{wkey}.log"),
    benchmark:
        results("benchmarks/weights/{dataset}-{wkey}.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda wc: as_json(WEIGHT_SETTINGS[wc.wkey]),
        code=stage_code("weights"),
    shell:
        "python -m unetflow weights {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule weights_figure:
    """The paper's Fig. 3 for a labelled dataset: image, labels and w(x) of its first slice."""
    input:
        images=results("data/{dataset}/images.ome.zarr"),
        labels=results("data/{dataset}/labels.ome.zarr"),
        weights=results("data/{dataset}/weights-{wkey}.ome.zarr"),
    output:
        report(
            results("report/weights/{dataset}-{wkey}.png"),
            caption="../report/weights.rst",
            category="Weight maps",
        ),
    log:
        results("logs/weights_figure/{dataset}-{wkey}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_code("figures"),
    shell:
        "python -m unetflow figure-weights {input.images:q} {input.labels:q} {input.weights:q} {output:q} "
        "--slice 0 > {log:q} 2>&1"
