rule tune_prompt:
    """Prompt tuning of one seed: only the soft prompt trains, the model stays frozen."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        text=TEXT_TICKET,
    output:
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        curve=out("{model}/prompts/{task}/seed{seed}/curve.parquet"),
        metrics=out("{model}/prompts/{task}/seed{seed}/metrics.json"),
    log:
        out("logs/{model}/tune_prompt/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/tune_prompt/{task}/seed{seed}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(120, text=True),
    params:
        **TASK,
        **TUNING,
        # Not an output: Snakemake deletes the outputs of a killed job, the checkpoint must survive it.
        checkpoint=out("{model}/checkpoints/{task}/seed{seed}.pt"),
    script:
        "../scripts/tune_prompt.py"
