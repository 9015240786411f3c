rule split_data:
    """Train/dev/test of one task: the hub's evaluation split is test, train is cut 80/20."""
    output:
        train=out("data/{task}/train.parquet"),
        dev=out("data/{task}/dev.parquet"),
        test=out("data/{task}/test.parquet"),
    params:
        **TASK_PARAMS,
        data_root=config["data_root"],
        dev_fraction=config["data"]["dev_fraction"],
        seed=config["data"]["split_seed"],
        max_train=config["data"]["max_train"],
        max_dev=config["data"]["max_dev"],
        max_test=config["data"]["max_test"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/data/{task}.log"),
    benchmark:
        out("benchmarks/data/{task}.tsv")
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/split_data.py"
