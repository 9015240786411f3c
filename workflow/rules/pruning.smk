# Pruning (Wang et al. §6.1, SKELETON): every pruned model starts from one seed's tuned prompt.
PRUNING_SEED = config["pruning"]["seed"] if config["pruning"]["seed"] is not None else SEEDS[0]
PRUNING_TASKS = sorted(config["pruning"]["tasks"]) if config["pruning"]["tasks"] is not None else TASKS
PRUNING_PROMPT = out(f"{{model}}/prompts/{{task}}/seed{PRUNING_SEED}/prompt.safetensors")

PROMPTING_PARAMS = dict(
    n_tokens=config["prompt"]["n_tokens"],
    precision=config["prompt"]["precision"],
    eval_batch_size=config["prompt"]["eval_batch_size"],
    max_field_tokens=config["data"]["max_field_tokens"],
    device=config["device"],
)
RETUNE_PARAMS = dict(
    lr=config["prompt"]["lr"],
    batch_size=config["prompt"]["batch_size"],
    **config["pruning"]["retune"],
)


rule neuron_attribution:
    """SKELETON's scores of every FFN neuron, |h * dP(y)/dh| (with activation and gradient alone)."""
    input:
        model=out("{model}/model"),
        train=out("data/{task}/train.parquet"),
        prompt=PRUNING_PROMPT,
    output:
        out("{model}/pruning/{task}/attribution.parquet"),
    params:
        **TASK_PARAMS,
        **PROMPTING_PARAMS,
        n_examples=config["pruning"]["skeleton"]["n_examples"],
        seed=PRUNING_SEED,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/neuron_attribution/{task}.log"),
    benchmark:
        out("benchmarks/{model}/neuron_attribution/{task}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=model_mem_mb,
        runtime=model_runtime(10),
    script:
        "../scripts/neuron_attribution.py"


rule skeleton_pruning:
    """Binary search of the global keep ratio by attribution, the prompt re-tuned at every probe."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        prompt=PRUNING_PROMPT,
        scores=out("{model}/pruning/{task}/attribution.parquet"),
    output:
        model=directory(out("{model}/pruning/{task}/skeleton/model")),
        prompt=out("{model}/pruning/{task}/skeleton/prompt.safetensors"),
        search=out("{model}/pruning/{task}/skeleton/search.parquet"),
        metrics=out("{model}/pruning/{task}/skeleton/metrics.json"),
    params:
        **TASK_PARAMS,
        **PROMPTING_PARAMS,
        **{f"retune_{key}": value for key, value in RETUNE_PARAMS.items()},
        step=config["pruning"]["skeleton"]["step"],
        margin=config["pruning"]["skeleton"]["margin"],
        seed=PRUNING_SEED,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/skeleton_pruning/{task}.log"),
    benchmark:
        out("benchmarks/{model}/skeleton_pruning/{task}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=lambda wildcards: 2 * model_mem_mb(wildcards),
        runtime=model_runtime(90),
    script:
        "../scripts/skeleton_pruning.py"


rule skill_neuron_pruning:
    """Top skill neurons kept in the top layers, the rest folded at their baseline and removed; prompt re-tuned."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        prompt=PRUNING_PROMPT,
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        run=out(f"{{model}}/activations/{{task}}/seed{PRUNING_SEED}"),
    output:
        model=directory(out("{model}/pruning/{task}/skill_neurons/model")),
        prompt=out("{model}/pruning/{task}/skill_neurons/prompt.safetensors"),
        metrics=out("{model}/pruning/{task}/skill_neurons/metrics.json"),
    params:
        **TASK_PARAMS,
        **PROMPTING_PARAMS,
        **{f"retune_{key}": value for key, value in RETUNE_PARAMS.items()},
        keep_share=config["pruning"]["skill_neurons"]["keep_share"],
        layer_share=config["pruning"]["skill_neurons"]["layer_share"],
        seed=PRUNING_SEED,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/skill_neuron_pruning/{task}.log"),
    benchmark:
        out("benchmarks/{model}/skill_neuron_pruning/{task}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=lambda wildcards: 2 * model_mem_mb(wildcards),
        runtime=model_runtime(30),
    script:
        "../scripts/skill_neuron_pruning.py"


rule selection_comparison:
    """Test accuracy at fixed keep ratios: attribution, activation, gradient, random, predictivity orders."""
    input:
        model=out("{model}/model"),
        test=out("data/{task}/test.parquet"),
        prompt=PRUNING_PROMPT,
        scores=out("{model}/pruning/{task}/attribution.parquet"),
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
    output:
        out("{model}/pruning/{task}/selection.parquet"),
    params:
        **TASK_PARAMS,
        **PROMPTING_PARAMS,
        keep_ratios=config["pruning"]["selection"]["keep_ratios"],
        seed=PRUNING_SEED,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/selection_comparison/{task}.log"),
    benchmark:
        out("benchmarks/{model}/selection_comparison/{task}.tsv")
    threads: config["model_threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=lambda wildcards: 2 * model_mem_mb(wildcards),
        runtime=model_runtime(30),
    script:
        "../scripts/selection_comparison.py"


rule speed_benchmark:
    """Dense and both pruned models side by side: forward time over batch sizes and lengths, memory."""
    input:
        dense=out("{model}/model"),
        skeleton=out("{model}/pruning/{task}/skeleton/model"),
        skill_neurons=out("{model}/pruning/{task}/skill_neurons/model"),
    output:
        out("{model}/pruning/{task}/speed.parquet"),
    params:
        batch_sizes=config["pruning"]["speed"]["batch_sizes"],
        lengths=config["pruning"]["speed"]["lengths"],
        # Two leaves, not the mapping: a mapping's key order would count as a changed parameter.
        reference_batch=config["pruning"]["speed"]["reference"]["batch"],
        reference_length=config["pruning"]["speed"]["reference"]["length"],
        dtypes=config["pruning"]["speed"]["dtypes"],
        warmup=config["pruning"]["speed"]["warmup"],
        repeats=config["pruning"]["speed"]["repeats"],
        peak_memory=config["pruning"]["speed"]["peak_memory"],
        device=config["device"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/speed_benchmark/{task}.log"),
    benchmark:
        out("benchmarks/{model}/speed_benchmark/{task}.tsv")
    # Holding this many cores keeps other jobs off them while the clock runs.
    threads: config["pruning"]["speed"]["threads"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=lambda wildcards: 3 * model_mem_mb(wildcards),
        runtime=model_runtime(30),
    script:
        "../scripts/speed_benchmark.py"


rule pruning_table:
    """Accuracy, neurons and parameters kept, speedup per task (Wang et al. Table 4, SKELETON Table 1)."""
    input:
        skeleton=expand(out("{{model}}/pruning/{task}/skeleton/metrics.json"), task=PRUNING_TASKS),
        skill_neurons=expand(out("{{model}}/pruning/{task}/skill_neurons/metrics.json"), task=PRUNING_TASKS),
        speed=expand(out("{{model}}/pruning/{task}/speed.parquet"), task=PRUNING_TASKS),
    output:
        parquet=out("{model}/tables/pruning.parquet"),
        markdown=out("{model}/tables/pruning.md"),
        html=report(out("{model}/tables/pruning.html"), caption="../report/pruning_table.rst", category="Pruning",
                    subcategory="all tasks", labels={"task": "all", "figure": "pruning table"}),
    params:
        tasks=PRUNING_TASKS,
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/pruning_table.log"),
    benchmark:
        out("benchmarks/{model}/pruning_table.tsv")
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/pruning_table.py"


rule plot_pruning:
    """Accuracy vs keep ratio per selection method, SKELETON's search, speedup vs batch size and length."""
    input:
        selection=out("{model}/pruning/{task}/selection.parquet"),
        search=out("{model}/pruning/{task}/skeleton/search.parquet"),
        speed=out("{model}/pruning/{task}/speed.parquet"),
    output:
        report(out("{model}/plots/{task}/pruning.png"), caption="../report/pruning.rst", category="Pruning",
               subcategory="{task}", labels={"task": "{task}", "figure": "pruning"}),
    params:
        style=config["plots"]["style"],
        dpi=config["plots"]["dpi"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/plots/{task}/pruning.log"),
    benchmark:
        out("benchmarks/{model}/plots/{task}/pruning.tsv")
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_pruning.py"
