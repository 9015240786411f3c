rule dump_activations:
    """Every neuron at every prompt position: train baseline, dev and test activations, to Parquet."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        text=TEXT_TICKET,
    output:
        directory(out("{model}/activations/{task}/seed{seed}")),
    log:
        out("logs/{model}/dump_activations/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/dump_activations/{task}/seed{seed}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60, text=True),
    params:
        **TASK,
        **DUMP,
    script:
        "../scripts/dump_activations.py"
