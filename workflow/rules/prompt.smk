rule tune_prompt:
    """Prompt tuning of one seed: only the soft prompt trains, the model stays frozen."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
    output:
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        curve=out("{model}/prompts/{task}/seed{seed}/curve.parquet"),
        metrics=out("{model}/prompts/{task}/seed{seed}/metrics.json"),
    params:
        **TASK_PARAMS,
        **TUNING_PARAMS,
        # Not an output: Snakemake deletes the outputs of a killed job, the checkpoint must survive it.
        checkpoint=out("{model}/checkpoints/{task}/seed{seed}.pt"),
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/tune_prompt/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/tune_prompt/{task}/seed{seed}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=model_mem_mb,
        runtime=model_runtime(120),
    script:
        "../scripts/tune_prompt.py"
