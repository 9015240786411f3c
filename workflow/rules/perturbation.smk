rule perturbation_sweep:
    """One evaluation task and seed: accuracy with the top-r% neurons of every source order perturbed."""
    input:
        model=out("{model}/model"),
        test=out("data/{task}/test.parquet"),
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        run=out("{model}/activations/{task}/seed{seed}"),
        rankings=expand(out("{{model}}/ranking/{source}/ranking.parquet"), source=TASKS),
        selectivity=out("{model}/ranking/{task}/selectivity.parquet"),
        text=TEXT_FILE,
    output:
        out("{model}/perturbation/{task}/seed{seed}.parquet"),
    params:
        **TASK_PARAMS,
        sources=TASKS,
        n_tokens=config["prompt"]["n_tokens"],
        precision=config["prompt"]["precision"],
        batch_size=config["prompt"]["eval_batch_size"],
        max_field_tokens=config["data"]["max_field_tokens"],
        rates=config["perturbation"]["rates"],
        modes=config["perturbation"]["modes"],
        sigma=config["perturbation"]["sigma"],
        max_examples=config["perturbation"]["max_examples"],
        positions=config["perturbation"]["positions"],
        device=config["device"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/perturbation_sweep/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/perturbation_sweep/{task}/seed{seed}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=text_mem_mb,
        runtime=model_runtime(60),
    script:
        "../scripts/perturbation_sweep.py"


rule neuronal_importance:
    """Area between the random-order and source-order curves, for every (source, evaluation) pair; the sweeps' table."""
    input:
        expand(out("{{model}}/perturbation/{task}/seed{seed}.parquet"), task=TASKS, seed=SEEDS),
    output:
        table=out("{model}/tables/importance.parquet"),
        parquet=out("{model}/tables/perturbation.parquet"),
        markdown=out("{model}/tables/perturbation.md"),
        html=report(out("{model}/tables/perturbation.html"), caption="../report/perturbation_table.rst",
                    category="Perturbation", subcategory="all tasks",
                    labels={"task": "all", "figure": "perturbation table"}),
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/neuronal_importance.log"),
    benchmark:
        out("benchmarks/{model}/neuronal_importance.tsv")
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/neuronal_importance.py"
