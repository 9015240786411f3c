rule split_data:
    """Train/dev/test of one task: the hub's evaluation split is test, train is cut 80/20."""

    # Hub data has no files here: its dataset, subset and revision are params (TASK). Pin tasks.<t>.revision:
    # the hub's latest revision cannot be read offline, so an unpinned upstream change reruns nothing.
    input:
        mirror_inputs,
    output:
        train=out("data/{task}/train.parquet"),
        dev=out("data/{task}/dev.parquet"),
        test=out("data/{task}/test.parquet"),
    log:
        out("logs/data/{task}.log"),
    benchmark:
        out("benchmarks/data/{task}.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        **TASK,
        **SPLITTING,
    script:
        "../scripts/split_data.py"
