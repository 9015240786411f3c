rule dump_activations:
    """Every neuron at every prompt position: train baseline, dev and test activations, to Parquet."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        text=TEXT_FILE,
    output:
        directory(out("{model}/activations/{task}/seed{seed}")),
    params:
        **TASK_PARAMS,
        n_tokens=config["prompt"]["n_tokens"],
        **DUMP_PARAMS,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/dump_activations/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/dump_activations/{task}/seed{seed}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=text_mem_mb,
        runtime=model_runtime(60),
    script:
        "../scripts/dump_activations.py"
