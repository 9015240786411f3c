rule perturbation_sweep:
    """One evaluation task and seed: accuracy with the top-r% neurons of every source order perturbed."""
    input:
        model=out("{model}/model"),
        test=out("data/{task}/test.parquet"),
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        run=out("{model}/activations/{task}/seed{seed}"),
        rankings=expand(out("{{model}}/ranking/{source}/ranking.parquet"), source=TASKS),
        selectivity=out("{model}/ranking/{task}/selectivity.parquet"),
        text=TEXT_TICKET,
    output:
        out("{model}/perturbation/{task}/seed{seed}.parquet"),
    log:
        out("logs/{model}/perturbation_sweep/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/perturbation_sweep/{task}/seed{seed}.tsv")
    # A task that is not pruned has no long reader of its text store after its sweep: its store is released first.
    priority: lambda w: PRIORITY["LONGEST_PATH"] + (w.task not in PRUNING_TASKS)
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60, text=True),
    params:
        **TASK,
        **SWEEP,
        sources=TASKS,
    script:
        "../scripts/perturbation_sweep.py"


rule neuronal_importance:
    """Area between the random-order and source-order curves, for every (source, evaluation) pair (Fig. 6)."""
    input:
        expand(out("{{model}}/perturbation/{task}/seed{seed}.parquet"), task=TASKS, seed=SWEEP_SEEDS),
    output:
        out("{model}/tables/importance.parquet"),
    log:
        out("logs/{model}/neuronal_importance.log"),
    benchmark:
        out("benchmarks/{model}/neuronal_importance.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/neuronal_importance.py"


rule perturbation_table:
    """The sweeps in numbers: accuracy over seeds and its drop per task, mode, rate and order, beside random."""
    input:
        expand(out("{{model}}/perturbation/{task}/seed{seed}.parquet"), task=TASKS, seed=SWEEP_SEEDS),
    output:
        **results_table("perturbation", "perturbation_table", "Perturbation", "perturbation table"),
    log:
        out("logs/{model}/perturbation_table.log"),
    benchmark:
        out("benchmarks/{model}/perturbation_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/perturbation_table.py"
