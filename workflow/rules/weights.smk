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
        dims=W["dims"],
        connectivity=f"--connectivity {W['connectivity']}" if W["connectivity"] else "",
    shell:
        "python -m unetflow weights {input} {output} --w0 {params.w0} --sigma {params.sigma} "
        "--balance {params.balance} --dims {params.dims} {params.connectivity} > {log} 2>&1"
