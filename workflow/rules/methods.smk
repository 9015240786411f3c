# Skill neurons under other tuning methods (Wang et al. §5, Fig. 7, 8): the model tuned with LoRA or BitFit in place
# of the prompt, then perturbed in the orders the prompts found.


rule tune_method:
    """The model tuned with LoRA (attention only) or BitFit (biases only) on the task; FFN weights frozen."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
    output:
        weights=out("{model}/methods/{task}/{method}/weights.safetensors"),
        curve=out("{model}/methods/{task}/{method}/curve.parquet"),
        metrics=out("{model}/methods/{task}/{method}/metrics.json"),
    log:
        out("logs/{model}/tune_method/{task}/{method}.log"),
    benchmark:
        out("benchmarks/{model}/tune_method/{task}/{method}.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60),
    params:
        **TASK,
        **PROMPTING,
        **METHOD_TUNING,
    script:
        "../scripts/tune_method.py"


rule method_sweep:
    """Accuracy of the tuned model with the top-r% neurons of each prompt-found order perturbed, and a random one."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        weights=out("{model}/methods/{task}/{method}/weights.safetensors"),
        rankings=expand(out("{{model}}/ranking/{source}/ranking.parquet"), source=TASKS),
    output:
        out("{model}/methods/{task}/{method}/sweep.parquet"),
    log:
        out("logs/{model}/method_sweep/{task}/{method}.log"),
    benchmark:
        out("benchmarks/{model}/method_sweep/{task}/{method}.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60),
    params:
        **TASK,
        **PROMPTING,
        **METHOD_TUNING,
        sources=TASKS,
        rates=config["tuning_methods"]["rates"],
        sigma=config["perturbation"]["sigma"],
        max_examples=config["tuning_methods"]["max_examples"],
    script:
        "../scripts/method_sweep.py"


rule methods_table:
    """Per tuning method: the sweeps' drops beside random and the neuronal importance of each prompt order."""
    input:
        sweeps=expand(out("{{model}}/methods/{task}/{method}/sweep.parquet"), task=METHOD_TASKS, method=METHODS),
        metrics=expand(out("{{model}}/methods/{task}/{method}/metrics.json"), task=METHOD_TASKS, method=METHODS),
    output:
        **results_table("tuning_methods", "tuning_methods", "Perturbation", "tuning methods (Fig. 7, 8)"),
        importance=out("{model}/tables/tuning_methods_importance.parquet"),
        tuned=out("{model}/tables/tuning_methods_accuracy.parquet"),
    log:
        out("logs/{model}/methods_table.log"),
    benchmark:
        out("benchmarks/{model}/methods_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/methods_table.py"
