W = config["weights"]


rule weights:
    """The paper's weight map w(x) of a labelled dataset, precomputed once before training."""
    input:
        results("data/{dataset}/labels.ome.zarr"),
    output:
        directory(results("data/{dataset}/weights.ome.zarr")),
    log:
        results("logs/weights/{dataset}.log"),
    benchmark:
        results("benchmarks/weights/{dataset}.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        w0=W["w0"],
        sigma=W["sigma"],
        balance=W["balance"],
        dims=W["dims"] or config["model"]["dims"],
        connectivity=f"--connectivity {W['connectivity']}" if W["connectivity"] else "",
    shell:
        "python -m unetflow weights {input} {output} --w0 {params.w0} --sigma {params.sigma} "
        "--balance {params.balance} --dims {params.dims} {params.connectivity} > {log} 2>&1"


rule weights_figure:
    """The paper's Fig. 3 for a labelled dataset: image, labels and w(x) of its first slice."""
    input:
        images=results("data/{dataset}/images.ome.zarr"),
        labels=results("data/{dataset}/labels.ome.zarr"),
        weights=results("data/{dataset}/weights.ome.zarr"),
    output:
        report(
            results("report/weights_{dataset}.png"),
            caption="../report/weights.rst",
            category="Weight maps",
        ),
    log:
        results("logs/weights_figure/{dataset}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m unetflow figure-weights {input.images} {input.labels} {input.weights} {output} "
        "--slice 0 > {log} 2>&1"
