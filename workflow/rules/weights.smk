rule weights_label:
    """One of the jobs labelling the cells of a large label volume, unit by unit, for its weight map."""
    input:
        results("data/{dataset}/labels.ome.zarr"),
    output:
        temp(touch(results("data/{dataset}/weights_shards/{wkey}-label{shard}.done"))),
    log:
        results("logs/weights/{dataset}-{wkey}_label{shard}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        out=lambda wc: results(f"data/{wc.dataset}/weights-{wc.wkey}.ome.zarr"),
        settings=lambda wc: as_json(WEIGHT_SETTINGS[wc.wkey]),
        shard=lambda wc: f"{wc.shard}/{weights_jobs(wc)}",
        code=stage_code("weights"),
    shell:
        "python -m unetflow weights {input:q} --out {params.out:q} --settings {params.settings:q} --phase label "
        "--shard {params.shard:q} > {log:q} 2>&1"


rule weights_merge:
    """Join the cells across units and count the classes of a large label volume (one job)."""
    input:
        labels=results("data/{dataset}/labels.ome.zarr"),
        labelled=weights_steps("label"),
    output:
        temp(touch(results("data/{dataset}/weights_shards/{wkey}-merged.done"))),
    log:
        results("logs/weights/{dataset}-{wkey}_merge.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        out=lambda wc: results(f"data/{wc.dataset}/weights-{wc.wkey}.ome.zarr"),
        settings=lambda wc: as_json(WEIGHT_SETTINGS[wc.wkey]),
        code=stage_code("weights"),
    shell:
        "python -m unetflow weights {input.labels:q} --out {params.out:q} --settings {params.settings:q} --phase merge "
        "> {log:q} 2>&1"


rule weights_compute:
    """One of the jobs computing a large weight map, unit by unit with its halo."""
    input:
        labels=results("data/{dataset}/labels.ome.zarr"),
        merged=results("data/{dataset}/weights_shards/{wkey}-merged.done"),
    output:
        temp(touch(results("data/{dataset}/weights_shards/{wkey}-compute{shard}.done"))),
    log:
        results("logs/weights/{dataset}-{wkey}_compute{shard}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        out=lambda wc: results(f"data/{wc.dataset}/weights-{wc.wkey}.ome.zarr"),
        settings=lambda wc: as_json(WEIGHT_SETTINGS[wc.wkey]),
        shard=lambda wc: f"{wc.shard}/{weights_jobs(wc)}",
        code=stage_code("weights"),
    shell:
        "python -m unetflow weights {input.labels:q} --out {params.out:q} --settings {params.settings:q} --phase compute "
        "--shard {params.shard:q} > {log:q} 2>&1"


rule weights:
    """The paper's weight map w(x) of a labelled dataset, precomputed once before training; one store per
    weight-map settings (the key in its name), shared by every experiment with those settings. A large label
    volume is split into label, merge and compute jobs, and this job gathers.
    """
    input:
        labels=results("data/{dataset}/labels.ome.zarr"),
        computed=weights_steps("compute"),
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
        mem_mb=lambda wc: 1000 if weights_jobs(wc) > 1 else 8000,
        runtime=120,
    params:
        settings=lambda wc: as_json(WEIGHT_SETTINGS[wc.wkey]),
        mode=lambda wc: ["--gather"] if weights_jobs(wc) > 1 else [],
        code=stage_code("weights"),
    shell:
        "python -m unetflow weights {input.labels:q} --out {output:q} --settings {params.settings:q} {params.mode:q} "
        "> {log:q} 2>&1"


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
        "python -m unetflow figure-weights {input.images:q} {input.labels:q} {input.weights:q} --out {output:q} "
        "--slice 0 > {log:q} 2>&1"
