rule segment_label:
    """One of the labelling jobs of a volume split into jobs: label each of its units (files of the
    probabilities) on its own."""
    input:
        results("{run}/{volume}/probabilities.ome.zarr"),
    output:
        temp(touch(results("{run}/{volume}/segment_shards/label{shard}.done"))),
    log:
        results("logs/segment/{run}/{volume}_label{shard}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=setting("segment", "mem_mb"),
        runtime=setting("segment", "runtime"),
    params:
        out=lambda wc: results(f"{wc.run}/{wc.volume}/segmentation.ome.zarr"),
        settings=section("segment", "segment"),
        shard=lambda wc: f"{wc.shard}/{segment_jobs(wc)}",
        code=stage_code("segment"),
    shell:
        "python -m unetflow segment {input:q} --out {params.out:q} --settings {params.settings:q} --phase label "
        "--shard {params.shard:q} > {log:q} 2>&1"


rule segment_merge:
    """Join the cells that cross the units' faces and number every cell of the volume (one job)."""
    input:
        probabilities=results("{run}/{volume}/probabilities.ome.zarr"),
        labelled=segment_steps("label"),
    output:
        temp(touch(results("{run}/{volume}/segment_shards/merged.done"))),
    log:
        results("logs/segment/{run}/{volume}_merge.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=setting("segment", "mem_mb"),
        runtime=setting("segment", "runtime"),
    params:
        out=lambda wc: results(f"{wc.run}/{wc.volume}/segmentation.ome.zarr"),
        settings=section("segment", "segment"),
        code=stage_code("segment"),
    shell:
        "python -m unetflow segment {input.probabilities:q} --out {params.out:q} --settings {params.settings:q} "
        "--phase merge > {log:q} 2>&1"


rule segment_relabel:
    """One of the relabelling jobs: write the final ids of its units."""
    input:
        probabilities=results("{run}/{volume}/probabilities.ome.zarr"),
        merged=results("{run}/{volume}/segment_shards/merged.done"),
    output:
        temp(touch(results("{run}/{volume}/segment_shards/relabel{shard}.done"))),
    log:
        results("logs/segment/{run}/{volume}_relabel{shard}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=setting("segment", "mem_mb"),
        runtime=setting("segment", "runtime"),
    params:
        out=lambda wc: results(f"{wc.run}/{wc.volume}/segmentation.ome.zarr"),
        settings=section("segment", "segment"),
        shard=lambda wc: f"{wc.shard}/{segment_jobs(wc)}",
        code=stage_code("segment"),
    shell:
        "python -m unetflow segment {input.probabilities:q} --out {params.out:q} --settings {params.settings:q} "
        "--phase relabel --shard {params.shard:q} > {log:q} 2>&1"


rule segment:
    """Threshold the cell probability and label connected components (instance labels), unit by unit. Resumable;
    with `segment.shards` > 1 the label, merge and relabel jobs compute and this job gathers.
    """
    input:
        probabilities=results("{run}/{volume}/probabilities.ome.zarr"),
        relabelled=segment_steps("relabel"),
    output:
        directory(results("{run}/{volume}/segmentation.ome.zarr")),
    log:
        results("logs/segment/{run}/{volume}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc: (
            1000
            if segment_jobs(wc) > 1
            else experiment_of(wc.run)["segment"]["mem_mb"]
        ),
        runtime=setting("segment", "runtime"),
    params:
        settings=section("segment", "segment"),
        mode=lambda wc: ["--gather"] if segment_jobs(wc) > 1 else [],
        code=stage_code("segment"),
    shell:
        "python -m unetflow segment {input.probabilities:q} --out {output:q} --settings {params.settings:q} "
        "{params.mode:q} > {log:q} 2>&1"
